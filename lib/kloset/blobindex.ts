// Where every blob lives: the store-wide index, loaded from index files into a compact open-addressing
// table (~50 bytes a blob instead of ~200 for a Map of objects), and the binary index-file format.
//
// Index file plaintext (inside an envelope of type Index):
//   u32 packCount, then per pack: id[32] | salt[16] | size u64 | u32 n | n x 48-byte pack entries
//   u32 supersededCount, then that many index-file ids[32]  (for a future prune; always 0 today)
import { type BlobType, type Compression, type PackEntry, PACK_ENTRY_LENGTH, readEntry, writeEntry } from './pack.js';

export interface PackInfo {
  id: string;
  salt: Buffer;
  size: number;
}

export interface BlobLocation {
  pack: PackInfo;
  type: BlobType;
  compression: Compression;
  offset: number;
  length: number;
  rawLength: number;
}

export interface IndexedPack extends PackInfo {
  entries: PackEntry[];
}

export class BlobIndex {
  private cap = 1 << 12;
  private count = 0;
  // Blob ids are keyed BLAKE3 outputs: their first 128 bits are uniformly random and unique in practice.
  private ids = new Uint32Array(this.cap * 4);
  private packNo = new Uint32Array(this.cap); // 0 = empty slot, else index into packs + 1
  private offsets = new Uint32Array(this.cap);
  private lengths = new Uint32Array(this.cap);
  private raws = new Uint32Array(this.cap);
  private flags = new Uint8Array(this.cap);
  private readonly packs: PackInfo[] = [];
  private readonly packNumbers = new Map<string, number>();

  get size(): number {
    return this.count;
  }

  hasPack(id: string): boolean {
    return this.packNumbers.has(id);
  }

  packList(): PackInfo[] {
    return this.packs.slice();
  }

  addPack(pack: IndexedPack): void {
    let no = this.packNumbers.get(pack.id);
    if (no === undefined) {
      this.packs.push({ id: pack.id, salt: pack.salt, size: pack.size });
      no = this.packs.length; // 1-based
      this.packNumbers.set(pack.id, no);
    }
    for (const e of pack.entries) this.insert(e, no);
  }

  has(id: Buffer): boolean {
    return this.find(id) >= 0;
  }

  get(id: Buffer): BlobLocation | undefined {
    const slot = this.find(id);
    if (slot < 0) return undefined;
    const f = this.flags[slot]!;
    return {
      pack: this.packs[this.packNo[slot]! - 1]!,
      type: (f & 0x0f) as BlobType,
      compression: (f >> 4) as Compression,
      offset: this.offsets[slot]!,
      length: this.lengths[slot]!,
      rawLength: this.raws[slot]!,
    };
  }

  private find(id: Buffer): number {
    const a = id.readUInt32LE(0), b = id.readUInt32LE(4), c = id.readUInt32LE(8), d = id.readUInt32LE(12);
    const mask = this.cap - 1;
    for (let s = a & mask; ; s = (s + 1) & mask) {
      if (this.packNo[s] === 0) return -1;
      const k = s * 4;
      if (this.ids[k] === a && this.ids[k + 1] === b && this.ids[k + 2] === c && this.ids[k + 3] === d) return s;
    }
  }

  private insert(e: PackEntry, packNo: number): void {
    if (this.find(e.id) >= 0) return; // the first copy wins; duplicates (concurrent writers) are harmless
    if ((this.count + 1) * 10 > this.cap * 7) this.grow();
    this.place(e.id.readUInt32LE(0), e.id.readUInt32LE(4), e.id.readUInt32LE(8), e.id.readUInt32LE(12),
      packNo, e.offset, e.length, e.rawLength, e.type | (e.compression << 4));
    this.count++;
  }

  private place(a: number, b: number, c: number, d: number, packNo: number, off: number, len: number, raw: number, fl: number): void {
    const mask = this.cap - 1;
    let s = a & mask;
    while (this.packNo[s] !== 0) s = (s + 1) & mask;
    const k = s * 4;
    this.ids[k] = a; this.ids[k + 1] = b; this.ids[k + 2] = c; this.ids[k + 3] = d;
    this.packNo[s] = packNo; this.offsets[s] = off; this.lengths[s] = len; this.raws[s] = raw; this.flags[s] = fl;
  }

  private grow(): void {
    const old = { cap: this.cap, ids: this.ids, packNo: this.packNo, offsets: this.offsets, lengths: this.lengths, raws: this.raws, flags: this.flags };
    this.cap *= 2;
    this.ids = new Uint32Array(this.cap * 4);
    this.packNo = new Uint32Array(this.cap);
    this.offsets = new Uint32Array(this.cap);
    this.lengths = new Uint32Array(this.cap);
    this.raws = new Uint32Array(this.cap);
    this.flags = new Uint8Array(this.cap);
    for (let s = 0; s < old.cap; s++) {
      if (old.packNo[s] === 0) continue;
      const k = s * 4;
      this.place(old.ids[k]!, old.ids[k + 1]!, old.ids[k + 2]!, old.ids[k + 3]!, old.packNo[s]!, old.offsets[s]!, old.lengths[s]!, old.raws[s]!, old.flags[s]!);
    }
  }
}

export function encodeIndexFile(packs: IndexedPack[], superseded: string[] = []): Buffer {
  let size = 4 + 4 + superseded.length * 32;
  for (const p of packs) size += 32 + 16 + 8 + 4 + p.entries.length * PACK_ENTRY_LENGTH;
  const buf = Buffer.alloc(size);
  let at = 0;
  buf.writeUInt32BE(packs.length, at); at += 4;
  for (const p of packs) {
    Buffer.from(p.id, 'hex').copy(buf, at); at += 32;
    p.salt.copy(buf, at); at += 16;
    buf.writeBigUInt64BE(BigInt(p.size), at); at += 8;
    buf.writeUInt32BE(p.entries.length, at); at += 4;
    for (const e of p.entries) { writeEntry(buf, at, e); at += PACK_ENTRY_LENGTH; }
  }
  buf.writeUInt32BE(superseded.length, at); at += 4;
  for (const s of superseded) { Buffer.from(s, 'hex').copy(buf, at); at += 32; }
  return buf;
}

export function decodeIndexFile(buf: Buffer): { packs: IndexedPack[]; superseded: string[] } {
  let at = 0;
  const need = (n: number) => {
    if (at + n > buf.length) throw new Error('index file is truncated');
  };
  need(4);
  const packCount = buf.readUInt32BE(at); at += 4;
  const packs: IndexedPack[] = [];
  for (let i = 0; i < packCount; i++) {
    need(60);
    const id = buf.subarray(at, at + 32).toString('hex'); at += 32;
    const salt = Buffer.from(buf.subarray(at, at + 16)); at += 16;
    const size = Number(buf.readBigUInt64BE(at)); at += 8;
    const n = buf.readUInt32BE(at); at += 4;
    need(n * PACK_ENTRY_LENGTH);
    const entries: PackEntry[] = [];
    for (let j = 0; j < n; j++) { entries.push(readEntry(buf, at)); at += PACK_ENTRY_LENGTH; }
    packs.push({ id, salt, size, entries });
  }
  need(4);
  const sc = buf.readUInt32BE(at); at += 4;
  need(sc * 32);
  const superseded: string[] = [];
  for (let i = 0; i < sc; i++) { superseded.push(buf.subarray(at, at + 32).toString('hex')); at += 32; }
  return { packs, superseded };
}
