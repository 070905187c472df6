// Packfiles: many encrypted blobs in one immutable object, named by the SHA-256 of its bytes.
//
//   header  "KLPK" | version u8 | 0 0 0 | salt[16]                          (24 bytes)
//   blob    AES-256-GCM(pack key, nonce = its offset, aad = id | type | compression)  (length + 16)
//   index   AES-256-GCM(pack key, nonce = ff..ff, aad = header) of N x 48-byte entries
//   footer  index offset u64 | index length u32 | "KLPF"                    (16 bytes)
//
// The pack key is HKDF(data key, salt): one key per pack, and blob offsets in a pack are distinct,
// so nonces never repeat under a key.
// The in-pack index lets a reader (check, crash recovery) rebuild what the pack holds without any
// other object; the pack name lets anyone verify the bytes without the key.
import { createHash, type Hash } from 'node:crypto';
import type { webcrypto } from 'node:crypto';
import { type StoreKeys, importGcmKey, open, openAsync, randomSalt, seal, sealAsync, IntegrityError, TAG_LENGTH } from './crypto.js';

const MAGIC = Buffer.from('KLPK');
const FOOTER_MAGIC = Buffer.from('KLPF');
export const PACK_VERSION = 1;
export const PACK_HEADER_LENGTH = 24;
export const PACK_FOOTER_LENGTH = 16;
export const PACK_ENTRY_LENGTH = 48;
const INDEX_NONCE = Buffer.alloc(12, 0xff);

export enum BlobType {
  Data = 0,
  Tree = 1,
}

export enum Compression {
  None = 0,
  Zstd = 1,
}

/** Where a blob lives inside its pack. */
export interface PackEntry {
  id: Buffer; // 32 bytes
  type: BlobType;
  compression: Compression;
  offset: number;
  length: number; // stored length, tag included
  rawLength: number; // plaintext length before compression
}

export interface FinishedPack {
  id: string; // hex SHA-256 of the bytes
  salt: Buffer;
  /** The pack's bytes, in order (not concatenated: backends that can write them as they are do). */
  parts: Buffer[];
  size: number;
  entries: PackEntry[];
}

function blobNonce(offset: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(Math.floor(offset / 2 ** 32), 4);
  n.writeUInt32BE(offset >>> 0, 8);
  return n;
}

function blobAad(id: Buffer, type: BlobType, compression: Compression): Buffer {
  const aad = Buffer.alloc(34);
  id.copy(aad, 0);
  aad[32] = type;
  aad[33] = compression;
  return aad;
}

export class PackWriter {
  private readonly header = Buffer.alloc(PACK_HEADER_LENGTH);
  private readonly key: Buffer;
  private readonly cryptoKey: Promise<webcrypto.CryptoKey>;
  readonly salt: Buffer;
  /** Sealed blobs in pack order; each is encrypted on the thread pool as soon as it is added. */
  private readonly parts: Promise<Buffer>[] = [];
  readonly entries: PackEntry[] = [];
  size = PACK_HEADER_LENGTH;

  constructor(keys: StoreKeys) {
    MAGIC.copy(this.header, 0);
    this.header.writeUInt8(PACK_VERSION, 4);
    this.salt = randomSalt();
    this.salt.copy(this.header, 8);
    this.key = keys.objectKey(this.salt, 'pack');
    this.cryptoKey = importGcmKey(this.key);
    this.parts.push(Promise.resolve(this.header));
  }

  /**
   * Appends one blob (already compressed if `compression` says so). Its place is fixed now (the
   * sealed length is the payload's plus the tag), its encryption finishes in the background.
   */
  add(id: Buffer, type: BlobType, compression: Compression, payload: Buffer, rawLength: number): void {
    const offset = this.size;
    const length = payload.length + TAG_LENGTH;
    const sealed = this.cryptoKey.then((k) => sealAsync(k, blobNonce(offset), payload, blobAad(id, type, compression)));
    sealed.catch(() => {}); // awaited in finish()
    this.entries.push({ id, type, compression, offset, length, rawLength });
    this.parts.push(sealed);
    this.size += length;
  }

  async finish(): Promise<FinishedPack> {
    const parts = await Promise.all(this.parts);
    const index = Buffer.alloc(this.entries.length * PACK_ENTRY_LENGTH);
    this.entries.forEach((e, i) => writeEntry(index, i * PACK_ENTRY_LENGTH, e));
    const sealedIndex = seal(this.key, INDEX_NONCE, index, this.header);
    const footer = Buffer.alloc(PACK_FOOTER_LENGTH);
    footer.writeBigUInt64BE(BigInt(this.size), 0);
    footer.writeUInt32BE(sealedIndex.length, 8);
    FOOTER_MAGIC.copy(footer, 12);
    parts.push(sealedIndex, footer);
    const hash: Hash = createHash('sha256');
    for (const p of parts) hash.update(p);
    const size = this.size + sealedIndex.length + footer.length;
    return { id: hash.digest('hex'), salt: this.salt, parts, size, entries: this.entries };
  }
}

export function writeEntry(buf: Buffer, at: number, e: PackEntry): void {
  e.id.copy(buf, at);
  buf[at + 32] = e.type;
  buf[at + 33] = e.compression;
  buf.writeUInt16BE(0, at + 34);
  buf.writeUInt32BE(e.offset, at + 36);
  buf.writeUInt32BE(e.length, at + 40);
  buf.writeUInt32BE(e.rawLength, at + 44);
}

export function readEntry(buf: Buffer, at: number): PackEntry {
  return {
    id: Buffer.from(buf.subarray(at, at + 32)),
    type: buf[at + 32] as BlobType,
    compression: buf[at + 33] as Compression,
    offset: buf.readUInt32BE(at + 36),
    length: buf.readUInt32BE(at + 40),
    rawLength: buf.readUInt32BE(at + 44),
  };
}

/** Reads packs: the footer and index (for check and recovery) and single blobs. */
export class PackReader {
  private readonly cryptoKeys = new Map<string, Promise<webcrypto.CryptoKey>>();

  constructor(private readonly keys: StoreKeys) {}

  /** Like openBlob, decrypting on the thread pool (restore's bulk path). */
  openBlobAsync(packSalt: Buffer, e: Pick<PackEntry, 'id' | 'type' | 'compression' | 'offset'>, sealed: Buffer, what: string): Promise<Buffer> {
    const k = packSalt.toString('hex');
    let key = this.cryptoKeys.get(k);
    if (!key) {
      key = importGcmKey(this.keys.objectKey(packSalt, 'pack'));
      this.cryptoKeys.set(k, key);
      if (this.cryptoKeys.size > 64) this.cryptoKeys.delete(this.cryptoKeys.keys().next().value!);
    }
    return key.then((ck) => openAsync(ck, blobNonce(e.offset), sealed, what, blobAad(e.id, e.type, e.compression)));
  }

  private keyFor(header: Buffer, name: string): Buffer {
    if (header.length < PACK_HEADER_LENGTH || !header.subarray(0, 4).equals(MAGIC)) {
      throw new IntegrityError(`pack ${name}: bad header`);
    }
    const v = header.readUInt8(4);
    if (v !== PACK_VERSION) throw new IntegrityError(`pack ${name}: unsupported version ${v}`);
    return this.keys.objectKey(header.subarray(8, 24), 'pack');
  }

  /** The salt in a pack's 24-byte header (validated). */
  salt(header: Buffer, name: string): Buffer {
    this.keyFor(header, name);
    return Buffer.from(header.subarray(8, 24));
  }

  /** Parses the footer (last 16 bytes) into the location of the sealed index. */
  footer(footer: Buffer, packSize: number, name: string): { indexOffset: number; indexLength: number } {
    if (footer.length !== PACK_FOOTER_LENGTH || !footer.subarray(12).equals(FOOTER_MAGIC)) {
      throw new IntegrityError(`pack ${name}: bad footer (truncated?)`);
    }
    const indexOffset = Number(footer.readBigUInt64BE(0));
    const indexLength = footer.readUInt32BE(8);
    if (indexOffset < PACK_HEADER_LENGTH || indexOffset + indexLength + PACK_FOOTER_LENGTH !== packSize) {
      throw new IntegrityError(`pack ${name}: footer does not match the pack size`);
    }
    return { indexOffset, indexLength };
  }

  /** Decrypts the in-pack index. */
  entries(header: Buffer, sealedIndex: Buffer, name: string): PackEntry[] {
    const key = this.keyFor(header, name);
    const index = open(key, INDEX_NONCE, sealedIndex, `pack ${name} index`, header.subarray(0, PACK_HEADER_LENGTH));
    if (index.length % PACK_ENTRY_LENGTH !== 0) throw new IntegrityError(`pack ${name}: bad index length`);
    const out: PackEntry[] = [];
    for (let at = 0; at < index.length; at += PACK_ENTRY_LENGTH) out.push(readEntry(index, at));
    return out;
  }

  /** Decrypts one blob of the pack whose salt is given (the salt is kept in index files). */
  openBlob(packSalt: Buffer, e: Pick<PackEntry, 'id' | 'type' | 'compression' | 'offset'>, sealed: Buffer, what: string): Buffer {
    const key = this.keys.objectKey(packSalt, 'pack');
    return open(key, blobNonce(e.offset), sealed, what, blobAad(e.id, e.type, e.compression));
  }
}

export const BLOB_OVERHEAD = TAG_LENGTH;
