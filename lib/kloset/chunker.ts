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

/**
 * Sees every byte of the stream, in order, in the chunker's window (the whole-image hash runs on
 * another thread this way, without a copy).
 */
export interface WindowObserver {
  /** The window, e.g. over a SharedArrayBuffer another thread can read. */
  allocate(size: number): Buffer;
  /** New bytes, in stream order: a view of the window, valid until released() resolves. */
  seen(bytes: Buffer): void;
  /** Resolves once every byte seen so far is consumed: the window is about to be overwritten. */
  released(): Promise<void>;
}

/** How much input the stream chunker gathers before cutting: amortizes copying to ~1 + max/window. */
const WINDOW = 8 * 1024 * 1024;

export class Chunker {
  private readonly gear = new Int32Array(256);
  private readonly maskS: number;
  private readonly maskL: number;
  /** The gear hash where the last scan stopped without a cut (the large-mask scan goes on from it). */
  private h = 0;

  constructor(readonly params: ChunkerParams, seed: Buffer) {
    const { min, avg, max } = params;
    if (!(min > 0 && min < avg && avg < max)) throw new Error(`bad chunker sizes ${min}/${avg}/${max}`);
    const bits = Math.round(Math.log2(avg));
    // Normalized chunking, level 2: a harder mask before the average size, an easier one after.
    this.maskS = topBits(bits + 2);
    this.maskL = topBits(bits - 2);
    for (let i = 0; i < 256; i++) {
      this.gear[i] = createHmac('sha256', seed).update(Buffer.from([i])).digest().readInt32LE(0);
    }
  }

  /** Length of the next chunk starting at `start`, given `n` available bytes (all the rest if at EOF). */
  cut(src: Uint8Array, start: number, n: number): number {
    const { min, avg, max } = this.params;
    if (n <= min) return n;
    if (n > max) n = max;
    const normalEnd = start + Math.min(avg, n);
    const i = this.scan(src, start + min, normalEnd, this.maskS, 0);
    if (i >= 0) return i - start + 1;
    const j = this.scan(src, normalEnd, start + n, this.maskL, this.h);
    return j >= 0 ? j - start + 1 : n;
  }

  /**
   * Rolls the gear hash over src[from, to) starting from `h`; returns the index of the first byte
   * after which (h & mask) === 0, or -1 (with the hash left in this.h). Unrolled by four: the
   * loop overhead is most of the cost of one byte (~1.4x faster here). Int32 arithmetic
   * throughout (the `| 0`): a hash that overflowed into a double would be several times slower.
   */
  private scan(src: Uint8Array, from: number, to: number, mask: number, h: number): number {
    const g = this.gear;
    let i = from;
    for (const end4 = to - 3; i < end4; i += 4) {
      h = ((h << 1) + g[src[i]!]!) | 0;
      if ((h & mask) === 0) return i;
      h = ((h << 1) + g[src[i + 1]!]!) | 0;
      if ((h & mask) === 0) return i + 1;
      h = ((h << 1) + g[src[i + 2]!]!) | 0;
      if ((h & mask) === 0) return i + 2;
      h = ((h << 1) + g[src[i + 3]!]!) | 0;
      if ((h & mask) === 0) return i + 3;
    }
    for (; i < to; i++) {
      h = ((h << 1) + g[src[i]!]!) | 0;
      if ((h & mask) === 0) return i;
    }
    this.h = h;
    return -1;
  }

  /**
   * Splits a stream into chunks. Yielded buffers are views into a reused window: consume or copy
   * them before pulling the next one.
   */
  async *chunks(source: AsyncIterable<Buffer | Uint8Array> | ByteReader, observer?: WindowObserver): AsyncGenerator<Buffer> {
    const max = this.params.max;
    // One window, reused: fresh multi-MiB allocations per refill cost more than the chunking itself.
    const win = observer ? observer.allocate(WINDOW + max) : Buffer.allocUnsafe(WINDOW + max);
    const reuse = async () => {
      if (observer) await observer.released();
    };
    let fill = 0;
    if (typeof source === 'function') {
      for (;;) {
        const n = await source(win, fill, win.length - fill);
        if (n > 0) observer?.seen(win.subarray(fill, fill + n));
        fill += n;
        if (n > 0 && fill < win.length) continue;
        let pos = 0;
        while (fill - pos >= max || (n === 0 && pos < fill)) {
          const len = this.cut(win, pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        if (n === 0) return;
        await reuse();
        win.copyWithin(0, pos, fill);
        fill -= pos;
      }
    }
    for await (const piece of source) {
      let off = 0;
      while (off < piece.length) {
        const n = Math.min(win.length - fill, piece.length - off);
        win.set(piece.subarray(off, off + n), fill);
        observer?.seen(win.subarray(fill, fill + n));
        fill += n;
        off += n;
        if (fill < win.length) break;
        let pos = 0;
        while (fill - pos >= max) {
          const len = this.cut(win, pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        await reuse();
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
