// Worker threads that encode and decode blobs (blobcodec.ts): zstd, AES-256-GCM and id checks run
// there, so the main thread only reads, chunks, hashes and writes, and every core is busy.
//
// Buffers move by transfer, not copy: the main thread copies a chunk once into a pooled buffer that
// the worker hands back; sealed blobs and plaintexts come back as the worker allocated them. One pool
// per process, sized to the cores; a worker keeps the process alive only while it has work.
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import { BLAKE3_MODULE, IntegrityError } from './crypto.js';
import { type CodecDeps, type SealedBlob, blobAad, decodeBlob, encodeBlob, looksIncompressible } from './blobcodec.js';

const require = createRequire(import.meta.url);
/** The zstd binding (zstd-napi: libzstd through N-API), loaded by path in the workers. */
export const ZSTD_MODULE = require.resolve('zstd-napi/binding');

interface ZstdBinding {
  CCtx: new () => CodecDeps['cctx'];
  DCtx: new () => CodecDeps['dctx'];
  compressBound(n: number): number;
}
interface Blake3Module {
  Blake3Hasher: { newKeyed(key: Buffer): { reset(): void; update(d: Uint8Array): { digestBuffer(): Buffer } } };
}

/**
 * Codec dependencies for the thread that calls this (the main thread, or a worker), from its module
 * loader. Also runs from source text in the workers: it uses only its arguments.
 */
export function loadCodecDeps(load: (path: string) => unknown, zstdPath: string, blake3Path: string): CodecDeps {
  const crypto = load('node:crypto') as typeof import('node:crypto');
  const zstd = load(zstdPath) as ZstdBinding;
  const { Blake3Hasher } = load(blake3Path) as Blake3Module;
  let hasher: ReturnType<Blake3Module['Blake3Hasher']['newKeyed']> | null = null;
  let hasherKey: Buffer | null = null;
  return {
    createCipheriv: crypto.createCipheriv,
    createDecipheriv: crypto.createDecipheriv,
    cctx: new zstd.CCtx(),
    dctx: new zstd.DCtx(),
    compressBound: zstd.compressBound,
    blobId: (idKey, data) => {
      if (!hasher || !hasherKey!.equals(idKey)) {
        hasher = Blake3Hasher.newKeyed(idKey);
        hasherKey = Buffer.from(idKey);
      }
      hasher.reset();
      return hasher.update(data).digestBuffer();
    },
    scratch: Buffer.alloc(0),
    plainScratch: Buffer.alloc(0),
  };
}

let mainDeps: CodecDeps | null = null;
/** The main thread's codec (trees, check): same code as the workers'. */
export function mainThreadCodec(): CodecDeps {
  return (mainDeps ??= loadCodecDeps(require, ZSTD_MODULE, BLAKE3_MODULE));
}

// ---- the worker side ----

interface SealRequest {
  op: 'seal';
  seq: number;
  key: Buffer;
  id: Buffer;
  type: number;
  level: number;
  /** The plaintext: a buffer moved to the worker and back, or shared memory read in place. */
  input: ArrayBuffer | SharedArrayBuffer;
  offset: number;
  length: number;
}
interface OpenRequest {
  op: 'open';
  seq: number;
  key: Buffer;
  idKey: Buffer;
  span: Uint8Array;
  /** The span's ArrayBuffer is one of the pool's (spanBuffer()): send it back with the reply. */
  pooled: boolean;
  pieces: { id: Buffer; type: number; compression: number; at: number; length: number; rawLength: number; what: string }[];
}
/** Like OpenRequest, but the worker writes each plaintext to the file at its position in the image. */
interface WriteRequest extends Omit<OpenRequest, 'op' | 'pieces'> {
  op: 'write';
  fd: number;
  pieces: (OpenRequest['pieces'][number] & { pos: number })[];
}
type Request = SealRequest | OpenRequest | WriteRequest;

/** The body of a worker thread. Runs from source text: it may use only its arguments and globals. */
function workerMain(
  deps: CodecDeps,
  port: import('node:worker_threads').MessagePort,
  encode: typeof encodeBlob,
  decode: typeof decodeBlob,
  writeSync: typeof import('node:fs').writeSync,
  writeLock: Int32Array,
): void {
  // Buffers from node:crypto are views of pooled memory when small: copy those, transfer the rest.
  const own = (b: Buffer): Buffer => (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : Buffer.from(b));
  // A span from the pool goes back with the reply.
  const replyToSpan = (m: OpenRequest | WriteRequest, reply: object, transfer: ArrayBuffer[]) => {
    const back = m.pooled ? (m.span.buffer as ArrayBuffer) : null;
    port.postMessage({ ...reply, back }, back ? [...transfer, back] : transfer);
  };
  port.on('message', (m: Request) => {
    try {
      if (m.op === 'seal') {
        const data = new Uint8Array(m.input, m.offset, m.length);
        const r = encode(deps, Buffer.from(m.key), Buffer.from(m.id), m.type, data, m.level);
        const body = own(r.body);
        const moved = m.input instanceof ArrayBuffer ? m.input : null;
        port.postMessage({ seq: m.seq, compression: r.compression, body, tag: r.tag, input: moved }, moved ? [body.buffer as ArrayBuffer, moved] : [body.buffer as ArrayBuffer]);
      } else if (m.op === 'write') {
        const span = Buffer.from(m.span.buffer, m.span.byteOffset, m.span.byteLength);
        let written = 0;
        for (const p of m.pieces) {
          const sealed = span.subarray(p.at, p.at + p.length);
          const plain = decode(deps, Buffer.from(m.key), Buffer.from(m.idKey), { ...p, id: Buffer.from(p.id) }, sealed, p.what, true);
          // One worker writes at a time: two writers of one file contend on its inode lock, and the
          // kernel makes the second spin while the first copies (19% of a 7 GB restore's CPU).
          while (Atomics.compareExchange(writeLock, 0, 0, 1) !== 0) Atomics.wait(writeLock, 0, 1);
          try {
            for (let done = 0; done < plain.length; ) done += writeSync(m.fd, plain, done, plain.length - done, p.pos + done);
          } finally {
            Atomics.store(writeLock, 0, 0);
            Atomics.notify(writeLock, 0, 1);
          }
          written += plain.length;
        }
        replyToSpan(m, { seq: m.seq, written }, []);
      } else {
        const span = Buffer.from(m.span.buffer, m.span.byteOffset, m.span.byteLength);
        const out: Buffer[] = [];
        for (const p of m.pieces) {
          const sealed = span.subarray(p.at, p.at + p.length);
          out.push(own(decode(deps, Buffer.from(m.key), Buffer.from(m.idKey), { ...p, id: Buffer.from(p.id) }, sealed, p.what)));
        }
        replyToSpan(m, { seq: m.seq, plain: out }, out.map((b) => b.buffer as ArrayBuffer));
      }
    } catch (err) {
      port.postMessage({ seq: m.seq, error: (err as Error).message });
    }
  });
}

function workerSource(): string {
  // Function declarations, as the bundler named them; `__name` is what esbuild's keepNames calls.
  const fns = [blobAad, looksIncompressible, encodeBlob, decodeBlob, loadCodecDeps, workerMain];
  return [
    'const __name = (f) => f;',
    ...fns.map((f) => f.toString()),
    `const { parentPort, workerData } = require('node:worker_threads');`,
    `const deps = ${loadCodecDeps.name}(require, workerData.zstd, workerData.blake3);`,
    `${workerMain.name}(deps, parentPort, ${encodeBlob.name}, ${decodeBlob.name}, require('node:fs').writeSync, new Int32Array(workerData.writeLock));`,
  ].join('\n');
}

// ---- the main side ----

/** Size of a pooled span buffer: a restore's ranged reads are at most 2 MiB (restorer.ts MAX_SPAN). */
const SPAN_BUFFER = 2 * 1024 * 1024;
/** Enough for the reads in flight of a restore (8) and those being decoded. */
const MAX_SPARE_SPANS = 16;

interface Pending {
  resolve: (v: never) => void;
  reject: (e: Error) => void;
  onReply: (msg: Record<string, unknown>) => unknown;
}

class BlobWorker {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  dead = false;

  constructor(source: string, writeLock: SharedArrayBuffer) {
    this.worker = new Worker(source, { eval: true, workerData: { zstd: ZSTD_MODULE, blake3: BLAKE3_MODULE, writeLock } });
    this.worker.on('message', (msg: { seq: number; error?: string }) => {
      const p = this.pending.get(msg.seq);
      if (!p) return;
      this.pending.delete(msg.seq);
      if (this.pending.size === 0) this.worker.unref();
      if (msg.error !== undefined) p.reject(new IntegrityError(msg.error));
      else p.resolve(p.onReply(msg) as never);
    });
    const fail = (err: Error) => {
      this.dead = true;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`blob worker exited (code ${code})`)));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    this.worker.unref();
  }

  send<T>(seq: number, msg: object, transfer: ArrayBuffer[], onReply: (msg: Record<string, unknown>) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (v: never) => void, reject, onReply });
      this.worker.ref();
      this.worker.postMessage(msg, transfer);
    });
  }
}

/** A decoded blob's place in a span of pack bytes. */
export interface SpanPiece {
  id: Buffer;
  type: number;
  compression: number;
  /** Offset in the span. */
  at: number;
  length: number;
  rawLength: number;
  /** Names the blob in errors. */
  what: string;
}

export class BlobWorkers {
  private static instance: BlobWorkers | null = null;
  private readonly workers: (BlobWorker | null)[];
  private readonly source = workerSource();
  /** Shared by the workers: who writes restored blobs to the file now (0 free, 1 taken). */
  private readonly writeLock = new SharedArrayBuffer(4);
  private seq = 0;
  /** Input buffers handed back by workers, for the next chunks. */
  private readonly spare: ArrayBuffer[] = [];
  /**
   * Buffers that restores read spans of packs into, handed back by the workers: fresh memory costs
   * a page fault per 4 KiB, which on some VMs (shadow paging) is most of a restore's system time.
   */
  private readonly spareSpans: ArrayBuffer[] = [];
  /** The pool's buffers out on loan (a span read into one goes back to the pool). */
  private readonly lentSpans = new WeakSet<ArrayBuffer>();

  constructor(readonly size = Math.max(1, Math.min(availableParallelism(), 8))) {
    this.workers = new Array<BlobWorker | null>(size).fill(null);
  }

  /** The process's pool, created on first use. */
  static shared(): BlobWorkers {
    return (BlobWorkers.instance ??= new BlobWorkers());
  }

  /**
   * Starts every worker now. Called before the store is opened by commands that will move data: the
   * threads boot while Argon2 derives the key, instead of after.
   */
  warm(): void {
    for (let i = 0; i < this.workers.length; i++) {
      if (!this.workers[i] || this.workers[i]!.dead) this.workers[i] = new BlobWorker(this.source, this.writeLock);
    }
  }

  /** The least busy worker; a crashed one is replaced. */
  private pick(): BlobWorker {
    this.warm();
    let best = this.workers[0]!;
    for (const w of this.workers) if (w!.pending.size < best.pending.size) best = w!;
    return best;
  }

  /**
   * Compresses and encrypts a blob on a worker. A view of shared memory (the chunker's windows) is
   * read there in place, so it must not change until the promise settles: copying every new chunk
   * cost the main thread ~0.6 s per 1.8 GB (V8 copies shared memory with relaxed atomics). Other
   * data is copied before this returns: it may be reused at once.
   */
  seal(key: Buffer, id: Buffer, type: number, data: Uint8Array, level: number): Promise<SealedBlob> {
    const shared = data.buffer instanceof SharedArrayBuffer ? data.buffer : null;
    const input = shared ?? this.copyToSpare(data);
    const seq = this.seq++;
    const msg: SealRequest = { op: 'seal', seq, key: small(key), id: small(id), type, level, input, offset: shared ? data.byteOffset : 0, length: data.length };
    return this.pick().send(seq, msg, shared ? [] : [input as ArrayBuffer], (r) => {
      const back = r.input as ArrayBuffer | null;
      if (back && this.spare.length < 8) this.spare.push(back);
      return { compression: r.compression as number, body: asBuffer(r.body as Uint8Array), tag: asBuffer(r.tag as Uint8Array) };
    });
  }

  /** `data` copied into a spare input buffer (moved to a worker, which hands it back). */
  private copyToSpare(data: Uint8Array): ArrayBuffer {
    let input = this.spare.pop();
    if (!input || input.byteLength < data.length) input = new ArrayBuffer(Math.max(data.length, 1 << 20));
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(Buffer.from(input));
    return input;
  }

  /**
   * A buffer to read a span of `length` bytes of a pack into, from the pool when it can: open() and
   * writeTo() give it back once the worker is done with it.
   */
  spanBuffer(length: number): Buffer {
    let ab = this.spareSpans.pop();
    if (!ab || ab.byteLength < length) ab = new ArrayBuffer(Math.max(length, SPAN_BUFFER));
    this.lentSpans.add(ab);
    return Buffer.from(ab, 0, length);
  }

  /** Sends a span: one of the pool's moves to the worker and comes back; others as transferable() says. */
  private sendSpan<T>(msg: Omit<OpenRequest, 'pooled'> | Omit<WriteRequest, 'pooled'>, onReply: (r: Record<string, unknown>) => T): Promise<T> {
    const ab = msg.span.buffer as ArrayBuffer;
    const pooled = this.lentSpans.delete(ab);
    const transfer = pooled ? [ab] : transferable(msg.span as Buffer);
    return this.pick().send(msg.seq, { ...msg, pooled }, transfer, (r) => {
      if (r.back && this.spareSpans.length < MAX_SPARE_SPANS) this.spareSpans.push(r.back as ArrayBuffer);
      return onReply(r);
    });
  }

  /**
   * Decrypts, decompresses and verifies the blobs of one span of a pack. Rejects with IntegrityError.
   * A span read into a spanBuffer() goes back to the pool.
   */
  open(key: Buffer, idKey: Buffer, span: Buffer, pieces: SpanPiece[]): Promise<Buffer[]> {
    const seq = this.seq++;
    const msg = { op: 'open' as const, seq, key: small(key), idKey: small(idKey), span, pieces: pieces.map((p) => ({ ...p, id: small(p.id) })) };
    return this.sendSpan(msg, (r) => (r.plain as Uint8Array[]).map(asBuffer));
  }

  /**
   * Like open, but the worker writes each blob to the file `fd` at `pos` instead of sending it back
   * (the plaintext never crosses threads). Resolves to the bytes written.
   */
  writeTo(fd: number, key: Buffer, idKey: Buffer, span: Buffer, pieces: (SpanPiece & { pos: number })[]): Promise<number> {
    const seq = this.seq++;
    const msg = { op: 'write' as const, seq, fd, key: small(key), idKey: small(idKey), span, pieces: pieces.map((p) => ({ ...p, id: small(p.id) })) };
    return this.sendSpan(msg, (r) => r.written as number);
  }
}

/**
 * A copy of a small buffer that owns its memory: posting a view clones the whole ArrayBuffer under
 * it (a tree's, or Node's 8 KiB pool slab).
 */
function small(b: Buffer): Buffer {
  return ownsWholeBuffer(b) ? b : Buffer.from(new Uint8Array(b).buffer);
}

/** The buffer is all of its (unshared) ArrayBuffer: moving or freeing that touches nothing else. */
function ownsWholeBuffer(b: Buffer): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer);
}

/** A buffer that owns all of its ArrayBuffer moves to the worker; a view into a bigger one is copied. */
function transferable(b: Buffer): ArrayBuffer[] {
  return ownsWholeBuffer(b) ? [b.buffer as ArrayBuffer] : [];
}

/**
 * Frees buffers nobody reads again now, instead of at V8's next collection, which waits until tens
 * of MiB of dead ArrayBuffers have piled up (peak RSS then depends on collection timing): moving
 * them into a message that is never received releases their memory. Only buffers that own their
 * whole ArrayBuffer are released; the caller must hold no other view of them.
 */
export function releaseNow(buffers: readonly Buffer[]): void {
  const owned = new Set<ArrayBuffer>();
  for (const b of buffers) {
    if (b.byteLength > 0 && ownsWholeBuffer(b)) owned.add(b.buffer as ArrayBuffer);
  }
  if (owned.size === 0) return;
  const { port1, port2 } = new MessageChannel();
  port1.postMessage(null, [...owned]);
  port1.close();
  port2.close();
}

/** Structured clone turns Buffers into plain Uint8Arrays: view them as Buffers again, without copying. */
function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

