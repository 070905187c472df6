// Content-defined chunking (FastCDC with normalized chunking). A boundary depends only on the bytes
// just before it, so an insertion or a shifted region changes the chunks around it and no others.
// The gear table is derived from the store's key: chunk sizes do not fingerprint content across stores.
import { createHmac } from 'node:crypto';

export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

/**
 * Defaults sized for disk images: a day of scattered 4 KiB writes touches fewer 256 KiB chunks than
 * 1 MiB ones (restic's and Plakar's average), so far fewer bytes are stored again.
 */
export const DEFAULT_CHUNKER: ChunkerParams = { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 };

/**
 * Reads up to `length` bytes into `buf` at `offset`; resolves to the count, 0 at the end. A file read
 * this way lands straight in the chunker's window: no per-read buffer, no copy.
 */
export type ByteReader = (buf: Buffer, offset: number, length: number) => Promise<number>;

/** How much input the stream chunker gathers before cutting: amortizes copying to ~1 + max/window. */
const WINDOW = 8 * 1024 * 1024;

export class Chunker {
  private readonly gear = new Uint32Array(256);
  private readonly maskS: number;
  private readonly maskL: number;

  constructor(readonly params: ChunkerParams, seed: Buffer) {
    const { min, avg, max } = params;
    if (!(min > 0 && min < avg && avg < max)) throw new Error(`bad chunker sizes ${min}/${avg}/${max}`);
    const bits = Math.round(Math.log2(avg));
    // Normalized chunking, level 2: a harder mask before the average size, an easier one after.
    this.maskS = topBits(bits + 2);
    this.maskL = topBits(bits - 2);
    for (let i = 0; i < 256; i++) {
      this.gear[i] = createHmac('sha256', seed).update(Buffer.from([i])).digest().readUInt32LE(0);
    }
  }

  /** Length of the next chunk starting at `start`, given `n` available bytes (all the rest if at EOF). */
  cut(src: Uint8Array, start: number, n: number): number {
    const { min, avg, max } = this.params;
    if (n <= min) return n;
    if (n > max) n = max;
    const gear = this.gear;
    const maskS = this.maskS;
    const maskL = this.maskL;
    const normalEnd = start + Math.min(avg, n);
    const end = start + n;
    let h = 0;
    let i = start + min;
    for (; i < normalEnd; i++) {
      h = ((h << 1) + gear[src[i]!]!) | 0;
      if ((h & maskS) === 0) return i - start + 1;
    }
    for (; i < end; i++) {
      h = ((h << 1) + gear[src[i]!]!) | 0;
      if ((h & maskL) === 0) return i - start + 1;
    }
    return n;
  }

  /**
   * Splits a stream into chunks. Yielded buffers are views into a reused window: consume or copy
   * them before pulling the next one.
   */
  async *chunks(source: AsyncIterable<Buffer | Uint8Array> | ByteReader): AsyncGenerator<Buffer> {
    const max = this.params.max;
    // One window, reused: fresh multi-MiB allocations per refill cost more than the chunking itself.
    const win = Buffer.allocUnsafe(WINDOW + max);
    let fill = 0;
    if (typeof source === 'function') {
      for (;;) {
        const n = await source(win, fill, win.length - fill);
        fill += n;
        if (n > 0 && fill < win.length) continue;
        let pos = 0;
        while (fill - pos >= max || (n === 0 && pos < fill)) {
          const len = this.cut(win, pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        win.copyWithin(0, pos, fill);
        fill -= pos;
        if (n === 0) return;
      }
    }
    for await (const piece of source) {
      let off = 0;
      while (off < piece.length) {
        const n = Math.min(win.length - fill, piece.length - off);
        win.set(piece.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill < win.length) break;
        let pos = 0;
        while (fill - pos >= max) {
          const len = this.cut(win, pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        win.copyWithin(0, pos, fill);
        fill -= pos;
      }
    }
    let pos = 0;
    while (pos < fill) {
      const len = this.cut(win, pos, fill - pos);
      yield win.subarray(pos, pos + len);
      pos += len;
    }
  }
}

function topBits(n: number): number {
  return n >= 32 ? -1 : (~0 << (32 - n)) | 0;
}
