// QCOW2 -> sparse raw file. Walks the active L1/L2 tables in guest order; contiguous host runs are read with one
// large read, zero data is skipped so the output stays sparse (the output is truncated to size first, so holes read
// as zeros). Memory: one read buffer, one L2 table, one slice of the L1 table.
import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { readFully } from './io.js';
import { inflateRawSync } from 'node:zlib';
import {
  INCOMPAT_EXTENDED_L2,
  INCOMPAT_EXTERNAL_DATA,
  Qcow2FormatError,
  readQcow2Info,
  type Qcow2Header,
} from './header.js';

const RUN_LIMIT = 4 * 1024 * 1024; // max bytes per coalesced read
const L1_SLICE_ENTRIES = 64 * 1024; // L1 entries read at a time (512 KiB)


async function writeFully(fh: FileHandle, buf: Buffer, start: number, end: number, pos: number): Promise<void> {
  while (start < end) {
    const { bytesWritten } = await fh.write(buf, start, end - start, pos);
    start += bytesWritten;
    pos += bytesWritten;
  }
}

/** Why this reader cannot produce the guest content of `h`, or null. */
export function qcow2ReadProblem(h: Qcow2Header): string | null {
  if (h.encrypted) return 'encrypted QCOW2 images are not supported';
  if (h.backingFile !== null) return `QCOW2 image has a backing file (${h.backingFile}); flatten it first`;
  if (h.incompatibleFeatures & INCOMPAT_EXTERNAL_DATA) return 'QCOW2 images with an external data file are not supported';
  if (h.incompatibleFeatures & INCOMPAT_EXTENDED_L2) return 'QCOW2 images with extended L2 entries (subclusters) are not supported';
  return null;
}

/** Writes guest data to the output, skipping all-zero clusters; clips at the virtual size. */
class SparseWriter {
  private readonly zero: Buffer;
  constructor(
    private readonly out: FileHandle,
    private readonly clusterSize: number,
    private readonly virtualSize: number,
  ) {
    this.zero = Buffer.alloc(clusterSize);
  }

  /** `buf[0..len)` is guest data starting at guest offset `guest` (cluster aligned, whole clusters). */
  async write(buf: Buffer, len: number, guest: number): Promise<void> {
    const cs = this.clusterSize;
    let runStart = -1;
    for (let off = 0; off <= len; off += cs) {
      const zero = off === len || buf.subarray(off, off + cs).equals(this.zero);
      if (!zero && runStart < 0) runStart = off;
      if (zero && runStart >= 0) {
        const end = Math.min(off, this.virtualSize - guest);
        if (end > runStart) await writeFully(this.out, buf, runStart, end, guest + runStart);
        runStart = -1;
      }
    }
  }
}

/** Finds the exact length of the zstd frame at the start of `buf` (qemu pads compressed data to sectors). */
function zstdFrameLength(buf: Buffer): number {
  if (buf.length < 6 || buf.readUInt32LE(0) !== 0xfd2fb528) throw new Qcow2FormatError('bad zstd frame in compressed cluster');
  const fhd = buf[4];
  const dictIdSize = [0, 1, 2, 4][fhd & 3];
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const fcsSize = fcsFlag === 0 ? singleSegment : [1, 2, 4, 8][fcsFlag];
  let pos = 5 + (singleSegment ? 0 : 1) + dictIdSize + fcsSize;
  for (;;) {
    if (pos + 3 > buf.length) throw new Qcow2FormatError('truncated zstd frame in compressed cluster');
    const bh = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw new Qcow2FormatError('invalid zstd block in compressed cluster');
    pos += 3 + (type === 1 ? 1 : size); // RLE blocks carry one byte
    if (last) break;
  }
  if ((fhd >> 2) & 1) pos += 4; // content checksum
  if (pos > buf.length) throw new Qcow2FormatError('truncated zstd frame in compressed cluster');
  return pos;
}

// zstd-napi's one-shot decompress (a shared DCtx; frames without a content size, as QEMU writes them,
// go through its streaming path). Loaded on the first zstd cluster: most images have none.
let zstdDecompress: ((data: Uint8Array) => Buffer) | null = null;
function zstd(): (data: Uint8Array) => Buffer {
  return (zstdDecompress ??= (createRequire(import.meta.url)('zstd-napi') as typeof import('zstd-napi')).decompress);
}

function decompressCluster(h: Qcow2Header, data: Buffer): Buffer {
  let out: Buffer;
  try {
    if (h.compressionType === 'zstd') {
      out = zstd()(data.subarray(0, zstdFrameLength(data)));
    } else {
      // Raw deflate; data after the end of the stream is sector padding and is ignored by zlib.
      out = inflateRawSync(data);
    }
  } catch (err) {
    if (err instanceof Qcow2FormatError) throw err;
    throw new Qcow2FormatError(`cannot decompress ${h.compressionType} cluster: ${(err as Error).message}`);
  }
  if (out.length < h.clusterSize) throw new Qcow2FormatError('compressed cluster decompresses to less than a cluster');
  return out.subarray(0, h.clusterSize);
}

/**
 * Writes the guest content of a QCOW2 image to a raw file of exactly virtualSize bytes, sparse, constant memory.
 * Supports v2 and v3, zlib and zstd compressed clusters, zero-flag clusters, any cluster size; refuses encrypted
 * images, backing files, external data files and extended L2 entries with a Qcow2FormatError.
 */
export async function qcow2ToRawFile(qcow2Path: string, rawPath: string): Promise<{ virtualSize: number }> {
  const h = await readQcow2Info(qcow2Path);
  const problem = qcow2ReadProblem(h);
  if (problem) throw new Qcow2FormatError(problem);

  const cs = h.clusterSize;
  const cb = h.clusterBits;
  const l2Entries = cs / 8;
  const guestClusters = Math.ceil(h.virtualSize / cs);
  const l1Used = Math.ceil(guestClusters / l2Entries);
  // Compressed descriptor: host offset in bits 0..x-1, extra 512-byte sectors in bits x..61.
  const cx = 62 - (cb - 8);
  const cOffHiMask = 2 ** (cx - 32) - 1;
  const cSectorsMask = 2 ** (cb - 8) - 1;

  const src = await open(qcow2Path, 'r');
  let out: FileHandle | undefined;
  let pending: Promise<void> = Promise.resolve();
  try {
    const fileSize = (await src.stat()).size;
    out = await open(rawPath, 'w');
    await out.truncate(h.virtualSize);
    const writer = new SparseWriter(out, cs, h.virtualSize);

    // Two run buffers: the write of one run overlaps the read of the next.
    const runBufs = [Buffer.allocUnsafe(Math.max(RUN_LIMIT, cs)), Buffer.allocUnsafe(Math.max(RUN_LIMIT, cs))];
    const runCap = runBufs[0].length;
    let turn = 0;
    /** Waits for the previous write, then starts this one without waiting for it. */
    const queueWrite = async (buf: Buffer, len: number, guest: number) => {
      await pending;
      pending = writer.write(buf, len, guest);
      pending.catch(() => undefined); // surfaced by the next `await pending`
    };
    const l2 = Buffer.allocUnsafe(cs);
    const l1 = Buffer.allocUnsafe(Math.min(l1Used, L1_SLICE_ENTRIES) * 8);
    const compBuf = Buffer.allocUnsafe(cs + 1024); // compressed data never exceeds a cluster plus sector slack

    // Pending run of clusters that are contiguous in both guest and host space.
    let runGuest = 0;
    let runHost = 0;
    let runLen = 0;
    const flush = async () => {
      if (runLen === 0) return;
      // This buffer's previous write was awaited before the other buffer's write started.
      const buf = runBufs[turn++ & 1];
      const n = await readFully(src, buf, runLen, runHost);
      if (n < runLen) throw new Qcow2FormatError(`data cluster at ${runHost} lies beyond the end of the file`);
      await queueWrite(buf, runLen, runGuest);
      runLen = 0;
    };

    for (let s = 0; s < l1Used; s += L1_SLICE_ENTRIES) {
      const count = Math.min(L1_SLICE_ENTRIES, l1Used - s);
      if ((await readFully(src, l1, count * 8, h.l1TableOffset + s * 8)) < count * 8) {
        throw new Qcow2FormatError('L1 table lies beyond the end of the file');
      }
      for (let i = 0; i < count; i++) {
        const l1Index = s + i;
        const hi = l1.readUInt32BE(i * 8) & 0x00ffffff; // bits 9..55 hold the L2 table offset
        const lo = (l1.readUInt32BE(i * 8 + 4) & 0xfffffe00) >>> 0; // `>>> 0`: JS bit ops are signed 32-bit
        const l2Offset = hi * 0x1_0000_0000 + lo;
        if (l2Offset === 0) continue; // unallocated: reads as zeros
        if (l2Offset % cs !== 0) throw new Qcow2FormatError(`L2 table offset ${l2Offset} is not cluster aligned`);
        if ((await readFully(src, l2, cs, l2Offset)) < cs) throw new Qcow2FormatError('L2 table lies beyond the end of the file');

        const firstGuestCluster = l1Index * l2Entries;
        const entries = Math.min(l2Entries, guestClusters - firstGuestCluster);
        for (let j = 0; j < entries; j++) {
          const ehi = l2.readUInt32BE(j * 8);
          const elo = l2.readUInt32BE(j * 8 + 4);
          const guest = (firstGuestCluster + j) * cs;
          if (ehi & 0x40000000) {
            // Compressed cluster.
            await flush();
            const off = (ehi & cOffHiMask) * 0x1_0000_0000 + elo;
            const sectors = Math.floor(ehi / 2 ** (cx - 32)) & cSectorsMask;
            const len = Math.min((sectors + 1) * 512 - (off % 512), fileSize - off);
            if (len <= 0 || len > compBuf.length) throw new Qcow2FormatError(`bad compressed cluster descriptor at guest ${guest}`);
            await readFully(src, compBuf, len, off);
            const data = decompressCluster(h, compBuf.subarray(0, len));
            await queueWrite(data, cs, guest); // `data` is a fresh buffer
            continue;
          }
          const host = (ehi & 0x00ffffff) * 0x1_0000_0000 + ((elo & 0xfffffe00) >>> 0);
          // v3 zero flag (bit 0) or no host cluster: the guest reads zeros, which the truncated output already has.
          if ((h.version === 3 && elo & 1) || host === 0) {
            await flush();
            continue;
          }
          if (host % cs !== 0) throw new Qcow2FormatError(`data cluster offset ${host} is not cluster aligned`);
          if (runLen > 0 && runHost + runLen === host && runGuest + runLen === guest && runLen + cs <= runCap) {
            runLen += cs;
          } else {
            await flush();
            runGuest = guest;
            runHost = host;
            runLen = cs;
          }
        }
      }
    }
    await flush();
    await pending;
    await out.close();
    out = undefined;
    return { virtualSize: h.virtualSize };
  } finally {
    await pending.catch(() => undefined);
    await src.close();
    await out?.close();
  }
}
