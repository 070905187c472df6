// Raw volume -> QCOW2 v3, streamed. Layout (all cluster aligned, every cluster referenced exactly once):
//   header | refcount table | refcount blocks | L1 table | L2 tables | data clusters (guest order)
// Pass 1 reads the raw file once and records non-zero clusters in a bitmap (1 bit per 64 KiB cluster, 2 MiB for
// 1 TiB); pass 2 emits the metadata computed from the bitmap, then re-reads only the non-zero clusters.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { readFully } from './io.js';
import { Readable } from 'node:stream';
import { QCOW2_MAGIC, writeU64 } from './header.js';

const CLUSTER_BITS = 16;
const CLUSTER_SIZE = 1 << CLUSTER_BITS;
const REFCOUNT_ORDER = 4; // 16-bit refcounts, qemu's default
const REFCOUNTS_PER_BLOCK = (CLUSTER_SIZE * 8) >> REFCOUNT_ORDER; // 32768 clusters (2 GiB of image) per block
const L2_ENTRIES = CLUSTER_SIZE / 8; // 8192 clusters (512 MiB of guest) per L2 table
const HEADER_LENGTH = 112; // v3 header including the compression type byte, padded to 8
const READ_CHUNK = 4 * 1024 * 1024; // 64 clusters
const COPIED = 0x80000000; // top bit of L1/L2 entries: refcount is exactly 1
const SECTOR = 512;

/** Everything pass 2 needs, derived from pass 1. */
interface Layout {
  rawSize: number;
  virtualSize: number;
  clusters: number; // guest clusters
  nonZero: Uint8Array; // bitmap over guest clusters
  l2Used: Uint8Array; // 1 per L1 entry that needs an L2 table
  l1Size: number;
  l1Clusters: number;
  l2Count: number;
  dataCount: number;
  refcountTableClusters: number;
  refcountBlocks: number;
  totalClusters: number; // size of the image in clusters
  refcountTableOffset: number;
  refcountBlocksOffset: number;
  l1Offset: number;
  l2Offset: number;
  dataOffset: number;
}

const ceilDiv = (a: number, b: number) => Math.ceil(a / b);
const isSet = (bits: Uint8Array, i: number) => (bits[i >>> 3] & (1 << (i & 7))) !== 0;


const ZERO_CLUSTER = Buffer.alloc(CLUSTER_SIZE);

function isZero(buf: Buffer, start: number, end: number): boolean {
  return buf.subarray(start, end).equals(ZERO_CLUSTER.subarray(0, end - start));
}

async function planLayout(fh: FileHandle, rawSize: number, virtualSize: number): Promise<Layout> {
  const clusters = ceilDiv(virtualSize, CLUSTER_SIZE);
  const l1Size = Math.max(1, ceilDiv(clusters, L2_ENTRIES));
  const nonZero = new Uint8Array(ceilDiv(clusters, 8));
  const l2Used = new Uint8Array(l1Size);
  let dataCount = 0;

  const buf = Buffer.allocUnsafe(READ_CHUNK);
  for (let pos = 0; pos < rawSize; pos += READ_CHUNK) {
    const n = await readFully(fh, buf, Math.min(READ_CHUNK, rawSize - pos), pos);
    if (n === 0) break;
    for (let off = 0; off < n; off += CLUSTER_SIZE) {
      if (!isZero(buf, off, Math.min(off + CLUSTER_SIZE, n))) {
        const c = (pos + off) / CLUSTER_SIZE;
        nonZero[c >>> 3] |= 1 << (c & 7);
        l2Used[Math.floor(c / L2_ENTRIES)] = 1;
        dataCount++;
      }
    }
  }
  let l2Count = 0;
  for (const u of l2Used) l2Count += u;

  const l1Clusters = ceilDiv(l1Size * 8, CLUSTER_SIZE);
  const fixed = 1 + l1Clusters + l2Count + dataCount;
  // The refcount structures count themselves: iterate to the fixed point (converges in a step or two).
  let refcountBlocks = 0;
  let refcountTableClusters = 0;
  for (;;) {
    const total = fixed + refcountBlocks + refcountTableClusters;
    const rb = ceilDiv(total, REFCOUNTS_PER_BLOCK);
    const rt = ceilDiv(rb * 8, CLUSTER_SIZE);
    if (rb === refcountBlocks && rt === refcountTableClusters) break;
    refcountBlocks = rb;
    refcountTableClusters = rt;
  }
  const refcountTableOffset = CLUSTER_SIZE;
  const refcountBlocksOffset = refcountTableOffset + refcountTableClusters * CLUSTER_SIZE;
  const l1Offset = refcountBlocksOffset + refcountBlocks * CLUSTER_SIZE;
  const l2Offset = l1Offset + l1Clusters * CLUSTER_SIZE;
  const dataOffset = l2Offset + l2Count * CLUSTER_SIZE;
  return {
    rawSize,
    virtualSize,
    clusters,
    nonZero,
    l2Used,
    l1Size,
    l1Clusters,
    l2Count,
    dataCount,
    refcountTableClusters,
    refcountBlocks,
    totalClusters: fixed + refcountBlocks + refcountTableClusters,
    refcountTableOffset,
    refcountBlocksOffset,
    l1Offset,
    l2Offset,
    dataOffset,
  };
}

function headerCluster(L: Layout): Buffer {
  const h = Buffer.alloc(CLUSTER_SIZE); // zero padding doubles as the end-of-extensions marker
  h.writeUInt32BE(QCOW2_MAGIC, 0);
  h.writeUInt32BE(3, 4); // version
  // 8: backing_file_offset = 0, 16: backing_file_size = 0
  h.writeUInt32BE(CLUSTER_BITS, 20);
  writeU64(h, 24, L.virtualSize);
  // 32: crypt_method = 0
  h.writeUInt32BE(L.l1Size, 36);
  writeU64(h, 40, L.l1Offset);
  writeU64(h, 48, L.refcountTableOffset);
  h.writeUInt32BE(L.refcountTableClusters, 56);
  // 60: nb_snapshots = 0, 64: snapshots_offset = 0, 72..95: no feature bits
  h.writeUInt32BE(REFCOUNT_ORDER, 96);
  h.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression_type = 0 (zlib; no compressed clusters are written anyway)
  return h;
}

function* metadataClusters(L: Layout): Generator<Buffer> {
  yield headerCluster(L);

  // Refcount table: one entry per refcount block.
  for (let t = 0; t < L.refcountTableClusters; t++) {
    const c = Buffer.alloc(CLUSTER_SIZE);
    for (let i = 0; i < CLUSTER_SIZE / 8; i++) {
      const block = t * (CLUSTER_SIZE / 8) + i;
      if (block >= L.refcountBlocks) break;
      writeU64(c, i * 8, L.refcountBlocksOffset + block * CLUSTER_SIZE);
    }
    yield c;
  }

  // Refcount blocks: every cluster of the image is used once, the rest of the last block stays 0.
  for (let b = 0; b < L.refcountBlocks; b++) {
    const c = Buffer.alloc(CLUSTER_SIZE);
    const used = Math.min(REFCOUNTS_PER_BLOCK, L.totalClusters - b * REFCOUNTS_PER_BLOCK);
    for (let i = 0; i < used; i++) c.writeUInt16BE(1, i * 2);
    yield c;
  }

  // L1 table: L2 tables are laid out in L1 order.
  let l2Index = 0;
  for (let t = 0; t < L.l1Clusters; t++) {
    const c = Buffer.alloc(CLUSTER_SIZE);
    for (let i = 0; i < CLUSTER_SIZE / 8; i++) {
      const e = t * (CLUSTER_SIZE / 8) + i;
      if (e >= L.l1Size) break;
      if (L.l2Used[e]) writeU64(c, i * 8, L.l2Offset + l2Index++ * CLUSTER_SIZE, COPIED);
    }
    yield c;
  }

  // L2 tables: data clusters are laid out in guest order, so the n-th non-zero cluster lives at dataOffset + n*cs.
  let dataIndex = 0;
  for (let e = 0; e < L.l1Size; e++) {
    if (!L.l2Used[e]) continue;
    const c = Buffer.alloc(CLUSTER_SIZE);
    const first = e * L2_ENTRIES;
    const end = Math.min(first + L2_ENTRIES, L.clusters);
    for (let g = first; g < end; g++) {
      if (isSet(L.nonZero, g)) writeU64(c, (g - first) * 8, L.dataOffset + dataIndex++ * CLUSTER_SIZE, COPIED);
    }
    yield c;
  }
}

/**
 * `recycle`: alternate between two read buffers instead of allocating one per chunk. Only safe when the consumer
 * is done with a chunk before pulling the chunk after next (rawToQcow2File's write loop); a stream may hold chunks.
 */
async function* dataClusters(fh: FileHandle, L: Layout, recycle: boolean): AsyncGenerator<Buffer> {
  const maxRun = READ_CHUNK / CLUSTER_SIZE;
  const pool = recycle ? [Buffer.allocUnsafe(READ_CHUNK), Buffer.allocUnsafe(READ_CHUNK)] : [];
  let turn = 0;
  let g = 0;
  while (g < L.clusters) {
    // Skip whole zero bytes of the bitmap quickly.
    if ((g & 7) === 0 && L.nonZero[g >>> 3] === 0) {
      g += 8;
      continue;
    }
    if (!isSet(L.nonZero, g)) {
      g++;
      continue;
    }
    let end = g + 1;
    while (end < L.clusters && end - g < maxRun && isSet(L.nonZero, end)) end++;
    const len = (end - g) * CLUSTER_SIZE;
    const buf = recycle ? pool[turn++ & 1].subarray(0, len) : Buffer.allocUnsafe(len);
    const pos = g * CLUSTER_SIZE;
    const n = await readFully(fh, buf, Math.min(len, Math.max(0, L.rawSize - pos)), pos);
    if (n < len) buf.fill(0, n); // the tail of the last cluster lies past the raw file's end
    yield buf;
    g = end;
  }
}

async function* generateQcow2(rawPath: string, opts: { virtualSize?: number }, recycle = false): AsyncGenerator<Buffer> {
  const fh = await open(rawPath, 'r');
  try {
    const rawSize = (await fh.stat()).size;
    let virtualSize = opts.virtualSize ?? rawSize;
    if (virtualSize < rawSize) {
      throw new RangeError(`virtualSize ${virtualSize} is smaller than the raw file (${rawSize} bytes)`);
    }
    // qemu counts disk sizes in 512-byte sectors (it rounds raw files up too), so do the same.
    virtualSize = ceilDiv(virtualSize, SECTOR) * SECTOR;
    // The bitmap is indexed with 32-bit ops (and would be 512 MiB there): 256 TiB is far beyond Scaleway's 10 TB.
    if (virtualSize > 2 ** 32 * CLUSTER_SIZE) throw new RangeError(`virtualSize ${virtualSize} is too large`);
    const L = await planLayout(fh, rawSize, virtualSize);

    let emitted = 0;
    for (const c of metadataClusters(L)) {
      emitted += c.length;
      yield c;
    }
    if (emitted !== L.dataOffset) throw new Error(`qcow2 writer: metadata is ${emitted} bytes, planned ${L.dataOffset}`);
    if ((await fh.stat()).size !== rawSize) throw new Error(`raw file ${rawPath} changed size while being converted`);
    for await (const c of dataClusters(fh, L, recycle)) {
      emitted += c.length;
      yield c;
    }
    if (emitted !== L.totalClusters * CLUSTER_SIZE) {
      throw new Error(`qcow2 writer: wrote ${emitted} bytes, planned ${L.totalClusters * CLUSTER_SIZE}`);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Streams a raw volume file (usually sparse) as a QCOW2 v3 image: 64 KiB clusters, all-zero clusters left
 * unallocated, deterministic output for identical content, constant memory apart from a 1-bit-per-cluster bitmap.
 * The virtual size is `opts.virtualSize` (default: the raw file size; must not be smaller), rounded up to 512 bytes
 * as qemu does. Bytes past the raw file's end read as zeros.
 */
export function rawToQcow2Stream(rawPath: string, opts: { virtualSize?: number } = {}): Readable {
  return Readable.from(generateQcow2(rawPath, opts), { objectMode: false, highWaterMark: READ_CHUNK });
}

/**
 * Writes the same bytes as rawToQcow2Stream to `qcow2Path` (created or truncated). Faster than piping the stream:
 * read buffers are recycled and the write of one chunk overlaps the read of the next.
 */
export async function rawToQcow2File(rawPath: string, qcow2Path: string, opts: { virtualSize?: number } = {}): Promise<void> {
  await stat(rawPath); // fail with ENOENT before creating the output file
  const out = await open(qcow2Path, 'w');
  let pending: Promise<void> = Promise.resolve();
  try {
    let pos = 0;
    for await (const chunk of generateQcow2(rawPath, opts, true)) {
      await pending; // the previous chunk is written, so its buffer may be refilled after this one is yielded
      pending = writeAll(out, chunk, pos);
      pending.catch(() => undefined); // surfaced by the next `await pending`; avoids an unhandled rejection meanwhile
      pos += chunk.length;
    }
    await pending;
  } finally {
    await pending.catch(() => undefined);
    await out.close();
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
    done += bytesWritten;
  }
}
