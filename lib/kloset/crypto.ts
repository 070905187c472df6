// Keys and authenticated encryption of the store. Everything is AES-256-GCM from node:crypto.
// Nonces never repeat under one key: every object (and every packfile) gets its own key, derived
// with HKDF from the store's data key and a random 128-bit salt; inside a packfile, blob i uses
// nonce i. The master key itself is wrapped by a key derived from the passphrase with Argon2id.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, webcrypto } from 'node:crypto';
import { argon2id } from 'hash-wasm';

export const TAG_LENGTH = 16;
export const SALT_LENGTH = 16;
export const MASTER_KEY_LENGTH = 64;

export class IntegrityError extends Error {
  constructor(what: string) {
    super(`integrity check failed: ${what}`);
    this.name = 'IntegrityError';
  }
}

/** AES-256-GCM; returns ciphertext || 16-byte tag. */
export function seal(key: Buffer, nonce: Buffer, plaintext: Buffer, aad?: Buffer): Buffer {
  return Buffer.concat(sealParts(key, nonce, plaintext, aad));
}

/** Like seal, as [ciphertext, tag]: lets a packfile collect blobs without copying them again. */
export function sealParts(key: Buffer, nonce: Buffer, plaintext: Buffer, aad?: Buffer): [Buffer, Buffer] {
  const c = createCipheriv('aes-256-gcm', key, nonce);
  if (aad) c.setAAD(aad);
  const body = c.update(plaintext);
  c.final(); // GCM is a stream mode: final() yields no bytes
  return [body, c.getAuthTag()];
}

/** Inverse of seal; throws IntegrityError (naming `what`) if anything was altered. */
export function open(key: Buffer, nonce: Buffer, sealed: Buffer, what: string, aad?: Buffer): Buffer {
  if (sealed.length < TAG_LENGTH) throw new IntegrityError(`${what} (too short)`);
  const d = createDecipheriv('aes-256-gcm', key, nonce);
  if (aad) d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH));
  try {
    const head = d.update(sealed.subarray(0, sealed.length - TAG_LENGTH));
    return Buffer.concat([head, d.final()]);
  } catch {
    throw new IntegrityError(what);
  }
}

// The same AES-256-GCM through WebCrypto, which Node runs on libuv's thread pool: bulk blob
// encryption and decryption then leave the main thread to chunking and hashing. Same bytes as seal().
const subtle = webcrypto.subtle;

export function importGcmKey(key: Buffer): Promise<webcrypto.CryptoKey> {
  return subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt', 'decrypt']);
}

export async function sealAsync(key: webcrypto.CryptoKey, nonce: Buffer, plaintext: Buffer, aad: Buffer): Promise<Buffer> {
  return Buffer.from(await subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 }, key, plaintext));
}

export async function openAsync(key: webcrypto.CryptoKey, nonce: Buffer, sealed: Buffer, what: string, aad: Buffer): Promise<Buffer> {
  if (sealed.length < TAG_LENGTH) throw new IntegrityError(`${what} (too short)`);
  try {
    return Buffer.from(await subtle.decrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 }, key, sealed));
  } catch {
    throw new IntegrityError(what);
  }
}

export function hkdf(ikm: Buffer, salt: Buffer, info: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}

export function randomSalt(): Buffer {
  return randomBytes(SALT_LENGTH);
}

/** The keys every store operation derives from the 64-byte master key. */
export class StoreKeys {
  /** Keys chunk IDs (HMAC-SHA-256): identical plaintext dedups within a store, and IDs reveal nothing outside it. */
  readonly idKey: Buffer;
  /** Parent of every per-object and per-packfile encryption key. */
  readonly dataKey: Buffer;
  /** Seeds the chunker's gear table, so chunk boundaries do not fingerprint content across stores. */
  readonly chunkerSeed: Buffer;

  constructor(readonly master: Buffer) {
    if (master.length !== MASTER_KEY_LENGTH) throw new Error('bad master key length');
    const none = Buffer.alloc(0);
    this.idKey = hkdf(master, none, 'kloset/v1/blob-id');
    this.dataKey = hkdf(master, none, 'kloset/v1/data');
    this.chunkerSeed = hkdf(master, none, 'kloset/v1/chunker');
  }

  static generate(): StoreKeys {
    return new StoreKeys(randomBytes(MASTER_KEY_LENGTH));
  }

  blobId(plaintext: Buffer): Buffer {
    return createHmac('sha256', this.idKey).update(plaintext).digest();
  }

  /** The key of one object or packfile, from its random salt. */
  objectKey(salt: Buffer, purpose: string): Buffer {
    return hkdf(this.dataKey, salt, `kloset/v1/${purpose}`);
  }
}

export interface KdfParams {
  name: 'argon2id';
  /** Iterations (time cost). */
  t: number;
  /** Memory in KiB. */
  m: number;
  /** Parallelism. */
  p: number;
}

/** RFC 9106's second recommended setting (t=3, 64 MiB), with p=1: WASM runs one lane at a time. */
export const DEFAULT_KDF: KdfParams = { name: 'argon2id', t: 3, m: 64 * 1024, p: 1 };

export async function deriveKeyFromPassphrase(passphrase: string, salt: Buffer, params: KdfParams): Promise<Buffer> {
  if (params.name !== 'argon2id') throw new Error(`unsupported KDF: ${params.name}`);
  const out = await argon2id({
    password: passphrase.normalize('NFC'),
    salt,
    iterations: params.t,
    memorySize: params.m,
    parallelism: params.p,
    hashLength: 32,
    outputType: 'binary',
  });
  return Buffer.from(out);
}
