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
 * Sees every byte of the stream, in order, in the chunker's windows (the whole-image hash runs on
 * another thread this way, without a copy).
 */
export interface WindowObserver {
  /** The windows, over a SharedArrayBuffer that another thread can read; given once, before any seen(). */
  attach(windows: Buffer): void;
  /** New bytes, in stream order: a view of the windows. Returns a ticket for released(): 1, 2, 3... */
  seen(bytes: Buffer): number;
  /** Resolves once the bytes of seen() calls up to `ticket` (all of them, without one) are consumed. */
  released(ticket?: number): Promise<void>;
}

/**
 * How much input one read gathers before cutting: amortizes copying to ~1 + max/window. There are
 * two windows, so that the next read runs while this one is cut and hashed.
 */
const WINDOW = 4 * 1024 * 1024;
/** Bytes seen() at a time at most: the image hash starts on a window before a slow source filled it. */
const SEEN_STEP = 1024 * 1024;

/** Where the windows start in the scanner's memory: after the gear table (256 int32). */
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
   * `size` bytes of windows in a fresh WebAssembly memory (shared, so the image-hash thread reads
   * them in place), with the gear table before them, and the cutter that scans them. One per stream, so
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
   * Splits a stream into chunks. Yielded buffers are views into reused windows: each stays
   * unchanged until the observer's released(), called after it was yielded, resolves (without an
   * observer, until the next pull). So the observer gates every reader of the windows: the bytes it
   * saw, and the chunks the caller still reads.
   *
   * Two windows take turns: while the chunks of one are cut (and their ids computed by the caller)
   * and the observer hashes it, the next read fills the other. Each window has `max` bytes of room
   * before its read area, where the uncut end of the previous window is copied, so that every chunk
   * is one contiguous view.
   */
  async *chunks(source: AsyncIterable<Buffer | Uint8Array> | ByteReader, observer?: WindowObserver): AsyncGenerator<Buffer> {
    const max = this.params.max;
    const half = max + WINDOW;
    const { win, cut } = this.scanner(2 * half);
    observer?.attach(win);
    // Opened last: nothing above may throw and leave a stream open.
    const { read, close } = typeof source === 'function' ? { read: source, close: async () => {} } : readerOf(source);
    const readStart = [max, half + max];
    const tickets = [0, 0];
    // Set when the caller stops early (or fails): the read under way ends, no other starts.
    let stopped = false;

    /** Fills window `w`'s read area (to its end, or to the end of the stream). */
    const fill = async (w: number): Promise<{ end: number; eof: boolean }> => {
      const limit = readStart[w]! + WINDOW;
      let end = readStart[w]!;
      let unseen = end;
      let n = -1;
      const see = () => {
        if (observer && end > unseen) tickets[w] = observer.seen(win.subarray(unseen, end));
        unseen = end;
      };
      while (!stopped && n !== 0 && end < limit) {
        n = await read(win, end, limit - end);
        end += n;
        if (end - unseen >= SEEN_STEP) see();
      }
      if (!stopped) see();
      return { end, eof: n === 0 || stopped };
    };
    // A window is read into again only once the observer released it: the bytes it saw there, and
    // the chunks cut from it that the caller may still read.
    const refill = (w: number) => (observer ? observer.released(tickets[w]) : Promise.resolve()).then(() => fill(w));

    let w = 0;
    let next = fill(0);
    // The uncut end of the previous window, copied in front of this one's bytes once it is filled:
    // only then are the users of this window's previous chunks (its carry area too) done.
    let tail = { pos: 0, end: 0 };
    try {
      for (;;) {
        const { end, eof } = await next;
        const start = readStart[w]! - (tail.end - tail.pos);
        win.copy(win, start, tail.pos, tail.end); // Buffer.copy: copyWithin on shared memory is ~4x slower
        if (!eof) {
          next = refill(1 - w); // after the copy: the tail is read out of that window before it is reused
          next.catch(() => {}); // awaited on the next turn, or in finally
        }
        let pos = start;
        while (end - pos >= max || (eof && pos < end)) {
          const len = cut(pos, end - pos);
          yield win.subarray(pos, pos + len);
          pos += len;
        }
        if (eof) return;
        tail = { pos, end };
        w = 1 - w;
      }
    } finally {
      // No read may still be writing into the windows (or using the source) once the caller closes it.
      stopped = true;
      await next.catch(() => {});
      await close();
    }
  }
}

/**
 * A stream as a ByteReader: each call copies from the current piece into the window (streams do not
 * read into a buffer we choose).
 */
function readerOf(source: AsyncIterable<Buffer | Uint8Array>): { read: ByteReader; close: () => Promise<void> } {
  const it = source[Symbol.asyncIterator]();
  let piece: Uint8Array = new Uint8Array(0);
  let off = 0;
  let done = false;
  return {
    read: async (buf, offset, length) => {
      while (off === piece.length) {
        if (done) return 0;
        const r = await it.next();
        if (r.done) {
          done = true;
          return 0;
        }
        piece = r.value;
        off = 0;
      }
      const n = Math.min(length, piece.length - off);
      Buffer.from(piece.buffer, piece.byteOffset + off, n).copy(buf, offset); // set() on shared memory is slow
      off += n;
      return n;
    },
    close: async () => {
      if (!done) await it.return?.();
    },
  };
}

function topBits(n: number): number {
  return n >= 32 ? -1 : (~0 << (32 - n)) | 0;
}
