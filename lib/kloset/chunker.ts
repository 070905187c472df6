// Content-defined chunking (FastCDC with normalized chunking). A boundary depends only on the bytes
// just before it, so an insertion or a shifted region changes the chunks around it and no others.
// The gear table is derived from the store's key: chunk sizes do not fingerprint content across stores.
import { createHmac } from 'node:crypto';
import { GEAR_SCAN_WASM } from './gearscan.wasm.js';

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
  /** The window, over a SharedArrayBuffer that another thread can read; given once, before any seen(). */
  attach(window: Buffer): void;
  /** New bytes, in stream order: a view of the window, valid until released() resolves. */
  seen(bytes: Buffer): void;
  /** Resolves once every byte seen so far is consumed: the window is about to be overwritten. */
  released(): Promise<void>;
}

/** How much input the stream chunker gathers before cutting: amortizes copying to ~1 + max/window. */
const WINDOW = 8 * 1024 * 1024;

/** Where the window starts in the scanner's memory: after the gear table (256 int32). */
const GEAR_BYTES = 1024;
const WASM_PAGE = 64 * 1024;

interface GearScanExports {
  scan(p: number, to: number, mask: number, h: number): number;
  lastHash(): number;
}

let gearScanModule: WebAssembly.Module | null = null;

export class Chunker {
  private readonly gear = new Int32Array(256);
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
      this.gear[i] = createHmac('sha256', seed).update(Buffer.from([i])).digest().readInt32LE(0);
    }
  }

  /**
   * A window of `size` bytes in a fresh WebAssembly memory (shared, so the image-hash thread reads
   * it in place), with the gear table before it, and the cutter that scans it. One per stream, so
   * that streams chunked at the same time do not share state.
   */
  private scanner(size: number): { win: Buffer; cut: (start: number, n: number) => number } {
    gearScanModule ??= new WebAssembly.Module(Buffer.from(GEAR_SCAN_WASM, 'base64'));
    const pages = Math.ceil((GEAR_BYTES + size) / WASM_PAGE);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    new Int32Array(memory.buffer, 0, 256).set(this.gear);
    const wasm = new WebAssembly.Instance(gearScanModule, { env: { memory } }).exports as unknown as GearScanExports;
    const { min, avg, max } = this.params;
    const { maskS, maskL } = this;
    // Length of the next chunk at window offset `start`, given `n` available bytes (all the rest at EOF).
    const cut = (start: number, n: number): number => {
      if (n <= min) return n;
      if (n > max) n = max;
      const at = GEAR_BYTES + start;
      const normalEnd = at + Math.min(avg, n);
      const i = wasm.scan(at + min, normalEnd, maskS, 0);
      if (i >= 0) return i - at + 1;
      const j = wasm.scan(normalEnd, at + n, maskL, wasm.lastHash());
      return j >= 0 ? j - at + 1 : n;
    };
    return { win: Buffer.from(memory.buffer, GEAR_BYTES, size), cut };
  }

  /**
   * Splits a stream into chunks. Yielded buffers are views into a reused window: consume or copy
   * them before pulling the next one.
   */
  async *chunks(source: AsyncIterable<Buffer | Uint8Array> | ByteReader, observer?: WindowObserver): AsyncGenerator<Buffer> {
    const max = this.params.max;
    // One window, reused: fresh multi-MiB allocations per refill cost more than the chunking itself.
    const { win, cut } = this.scanner(WINDOW + max);
    observer?.attach(win);
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
          const len = cut(pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        if (n === 0) return;
        await reuse();
        win.copy(win, 0, pos, fill); // memmove: copyWithin on shared memory is ~4x slower
        fill -= pos;
      }
    }
    for await (const piece of source) {
      let off = 0;
      while (off < piece.length) {
        const n = Math.min(win.length - fill, piece.length - off);
        Buffer.from(piece.buffer, piece.byteOffset + off, n).copy(win, fill);
        observer?.seen(win.subarray(fill, fill + n));
        fill += n;
        off += n;
        if (fill < win.length) break;
        let pos = 0;
        while (fill - pos >= max) {
          const len = cut(pos, fill - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        await reuse();
        win.copy(win, 0, pos, fill); // memmove: copyWithin on shared memory is ~4x slower
        fill -= pos;
      }
    }
    let pos = 0;
    while (pos < fill) {
      const len = cut(pos, fill - pos);
      yield win.subarray(pos, pos + len);
      pos += len;
    }
  }
}

function topBits(n: number): number {
  return n >= 32 ? -1 : (~0 << (32 - n)) | 0;
}
