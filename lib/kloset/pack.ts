// Packfiles: many encrypted blobs in one immutable object, named by the BLAKE3 of its bytes.
//
//   header  "KLPK" | version u8 | 0 0 0 | salt[16]                          (24 bytes)
//   blob    sealed as blobcodec.ts says (length + 16), in the order they were sealed
//   index   AES-256-GCM(pack key, nonce = ff..ff, aad = header) of N x 48-byte entries
//   footer  index offset u64 | index length u32 | "KLPF"                    (16 bytes)
//
// The pack key is HKDF(data key, salt): one key per pack. Blob nonces are the first 12 bytes of the
// blob ids, distinct within a pack, and never all-ff like the index's (an id is a keyed hash).
// The in-pack index lets a reader (check, crash recovery) rebuild what the pack holds without any
// other object; the pack name lets anyone verify the bytes without the key.
import { type StoreKeys, contentName, open, randomSalt, seal, IntegrityError, TAG_LENGTH } from './crypto.js';
import { type CodecDeps, type SealedBlob, decodeBlob } from './blobcodec.js';

const MAGIC = Buffer.from('KLPK');
const FOOTER_MAGIC = Buffer.from('KLPF');
export const PACK_VERSION = 2;
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
  id: string; // hex BLAKE3 of the bytes
  salt: Buffer;
  /** The pack's bytes, in order (not concatenated: backends that can write them as they are do). */
  parts: Buffer[];
  size: number;
  entries: PackEntry[];
}

/** Builds one pack from blobs sealed elsewhere (on the worker threads) under its key. */
export class PackWriter {
  private readonly header = Buffer.alloc(PACK_HEADER_LENGTH);
  /** The key every blob of this pack is sealed with. */
  readonly key: Buffer;
  readonly salt: Buffer;
  private readonly parts: Buffer[] = [this.header];
  readonly entries: PackEntry[] = [];
  size = PACK_HEADER_LENGTH;

  constructor(keys: StoreKeys) {
    MAGIC.copy(this.header, 0);
    this.header.writeUInt8(PACK_VERSION, 4);
    this.salt = randomSalt();
    this.salt.copy(this.header, 8);
    this.key = keys.objectKey(this.salt, 'pack');
  }

  /** Appends one blob sealed with this pack's key. */
  append(id: Buffer, type: BlobType, sealed: SealedBlob, rawLength: number): void {
    const length = sealed.body.length + sealed.tag.length;
    this.entries.push({ id, type, compression: sealed.compression, offset: this.size, length, rawLength });
    this.parts.push(sealed.body, sealed.tag);
    this.size += length;
  }

  finish(): FinishedPack {
    const index = Buffer.alloc(this.entries.length * PACK_ENTRY_LENGTH);
    this.entries.forEach((e, i) => writeEntry(index, i * PACK_ENTRY_LENGTH, e));
    const sealedIndex = seal(this.key, INDEX_NONCE, index, this.header);
    const footer = Buffer.alloc(PACK_FOOTER_LENGTH);
    footer.writeBigUInt64BE(BigInt(this.size), 0);
    footer.writeUInt32BE(sealedIndex.length, 8);
    FOOTER_MAGIC.copy(footer, 12);
    const parts = [...this.parts, sealedIndex, footer];
    const size = this.size + sealedIndex.length + footer.length;
    return { id: contentName(parts), salt: this.salt, parts, size, entries: this.entries };
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
  private readonly packKeys = new Map<string, Buffer>();

  constructor(private readonly keys: StoreKeys) {}

  /** The key of the pack with this salt (remembered: restore asks for it once per span). */
  keyOf(packSalt: Buffer): Buffer {
    const k = packSalt.toString('hex');
    let key = this.packKeys.get(k);
    if (!key) {
      key = this.keys.objectKey(packSalt, 'pack');
      this.packKeys.set(k, key);
      if (this.packKeys.size > 256) this.packKeys.delete(this.packKeys.keys().next().value!);
    }
    return key;
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

  /** Decrypts and verifies one blob of the pack whose salt is given (the salt is kept in index files). */
  openBlob(codec: CodecDeps, packSalt: Buffer, e: Omit<PackEntry, 'offset' | 'length'>, sealed: Buffer, what: string): Buffer {
    try {
      return decodeBlob(codec, this.keyOf(packSalt), this.keys.idKey, e, sealed, what);
    } catch (err) {
      throw new IntegrityError((err as Error).message);
    }
  }
}

