// Key files: the 64-byte master key, wrapped by a key derived from a passphrase with Argon2id.
// Several key files may exist (one per passphrase); changing the passphrase adds a key file and
// removes the old one, and no data is rewritten. Key files are plaintext JSON so a store can be
// opened; the GCM tag over the wrapped key detects a wrong passphrase before any data is touched.
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Backend } from './backend.js';
import {
  DEFAULT_KDF,
  type KdfParams,
  SALT_LENGTH,
  StoreKeys,
  contentName,
  deriveKeyFromPassphrase,
  open,
  seal,
  IntegrityError,
} from './crypto.js';

export const KEY_FILE_VERSION = 1;

interface KeyFile {
  version: number;
  created: string;
  host: string;
  kdf: KdfParams;
  salt: string; // base64
  nonce: string; // base64
  wrappedKey: string; // base64: AES-256-GCM(master key), aad = "kloset key v1" + kdf params
}

export class WrongPassphraseError extends Error {
  constructor(location: string) {
    super(`wrong passphrase for the store at ${location} (no key file opens with it)`);
    this.name = 'WrongPassphraseError';
  }
}

export class UnsupportedFormatError extends Error {
  constructor(location: string) {
    super(`the store at ${location} has format 1 (written by a development build before 2026-11-27); this version reads format 2 only`);
    this.name = 'UnsupportedFormatError';
  }
}

function aadFor(kdf: KdfParams): Buffer {
  return Buffer.from(`kloset key v${KEY_FILE_VERSION} ${kdf.name} t=${kdf.t} m=${kdf.m} p=${kdf.p}`);
}

export async function writeKeyFile(
  backend: Backend,
  keys: StoreKeys,
  passphrase: string,
  kdf: KdfParams = DEFAULT_KDF,
): Promise<string> {
  if (!passphrase) throw new Error('the passphrase must not be empty');
  const salt = randomBytes(SALT_LENGTH);
  const nonce = randomBytes(12);
  const kek = await deriveKeyFromPassphrase(passphrase, salt, kdf);
  const file: KeyFile = {
    version: KEY_FILE_VERSION,
    created: new Date().toISOString(),
    host: hostname(),
    kdf,
    salt: salt.toString('base64'),
    nonce: nonce.toString('base64'),
    wrappedKey: seal(kek, nonce, keys.master, aadFor(kdf)).toString('base64'),
  };
  const data = Buffer.from(JSON.stringify(file, null, 2));
  const id = contentName(data);
  await backend.put(`keys/${id}`, data);
  return id;
}

/** Tries every key file with the passphrase; returns the keys and the id of the key file that opened. */
export async function unlockStore(backend: Backend, passphrase: string): Promise<{ keys: StoreKeys; keyId: string }> {
  const ids: string[] = [];
  for await (const o of backend.list('keys/')) ids.push(o.key.slice('keys/'.length));
  if (ids.length === 0) throw new Error(`no key files in ${backend.location}: not a Kloset store, or damaged`);
  const damaged: string[] = [];
  for (const id of ids) {
    const raw = await backend.get(`keys/${id}`);
    let file: KeyFile;
    try {
      // Key files are named by their BLAKE3: this also covers the fields outside the GCM tag.
      if (contentName(raw) !== id) {
        // Format 1 named objects by their SHA-256: say what the store is rather than "damaged".
        if (createHash('sha256').update(raw).digest('hex') === id) throw new UnsupportedFormatError(backend.location);
        throw new Error('does not match its name');
      }
      file = JSON.parse(raw.toString('utf8')) as KeyFile;
    } catch (err) {
      if (err instanceof UnsupportedFormatError) throw err;
      damaged.push(`keys/${id}`);
      continue; // a damaged key file: another one may still open the store
    }
    if (file.version !== KEY_FILE_VERSION || file.kdf?.name !== 'argon2id') continue;
    const kek = await deriveKeyFromPassphrase(passphrase, Buffer.from(file.salt, 'base64'), file.kdf);
    try {
      const master = open(kek, Buffer.from(file.nonce, 'base64'), Buffer.from(file.wrappedKey, 'base64'), 'key', aadFor(file.kdf));
      return { keys: new StoreKeys(master), keyId: id };
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
    }
  }
  if (damaged.length > 0) {
    throw new IntegrityError(`${damaged.join(', ')}: damaged (does not match its name), and no intact key file opens with this passphrase`);
  }
  throw new WrongPassphraseError(backend.location);
}
