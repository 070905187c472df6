// The whole image's SHA-256, computed on a thread of its own: at ~1.5 GiB/s it would otherwise take a
// quarter of the main thread's time.
// - Backup: the chunker's windows are a SharedArrayBuffer that this thread reads in place (no copy);
//   the chunker reads into a window again only once this thread is done with it.
// - Restore to a file: the workers write blobs at their positions, and this thread reads the file
//   back (from the page cache) as the written prefix grows: what is checked is what was written.
import { Worker } from 'node:worker_threads';
import type { WindowObserver } from './chunker.js';

interface HashRequest {
  window?: SharedArrayBuffer;
  fd?: number;
  start?: number;
  end?: number;
  digest?: boolean;
}

function hasherMain(
  port: import('node:worker_threads').MessagePort,
  createHash: typeof import('node:crypto').createHash,
  readSync: typeof import('node:fs').readSync,
): void {
  const sha = createHash('sha256');
  let shared: SharedArrayBuffer | null = null;
  let buf: Buffer | null = null;
  port.on('message', (m: HashRequest) => {
    try {
      if (m.window) {
        shared = m.window;
      } else if (m.digest) {
        port.postMessage({ digest: sha.digest('hex') });
      } else if (m.fd !== undefined) {
        buf ??= Buffer.allocUnsafeSlow(8 << 20);
        for (let pos = m.start!; pos < m.end!; ) {
          const n = readSync(m.fd, buf, 0, Math.min(buf.length, m.end! - pos), pos);
          if (n === 0) throw new Error(`the file ends at ${pos}, before ${m.end}`);
          sha.update(buf.subarray(0, n));
          pos += n;
        }
        port.postMessage({ done: m.end });
      } else {
        sha.update(new Uint8Array(shared!, m.start!, m.end! - m.start!));
        port.postMessage({ done: m.end });
      }
    } catch (err) {
      port.postMessage({ error: (err as Error).message });
    }
  });
}

const SOURCE = [
  hasherMain.toString(),
  `${hasherMain.name}(require('node:worker_threads').parentPort, require('node:crypto').createHash, require('node:fs').readSync);`,
].join('\n');

/** SHA-256 of an image, in order, on a worker thread. One per backup or restore. */
export class ImageHasher implements WindowObserver {
  private readonly worker = new Worker(SOURCE, { eval: true });
  private window: Buffer | null = null;
  private posted = 0;
  private fileEnd = 0;
  private acked = 0;
  private waiters: (() => void)[] = [];
  private digestWaiter: ((hex: string) => void) | null = null;
  private failure: Error | null = null;

  constructor() {
    this.worker.on('message', (m: { done?: number; digest?: string; error?: string }) => {
      if (m.error !== undefined) {
        this.fail(new Error(`image hash: ${m.error}`));
        return;
      }
      if (m.digest !== undefined) {
        this.digestWaiter?.(m.digest);
        return;
      }
      this.acked++;
      this.waiters.splice(0).forEach((w) => w());
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`image hasher exited (code ${code})`)));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.waiters.splice(0).forEach((w) => w());
    this.digestWaiter?.('');
  }

  attach(window: Buffer): void {
    if (!(window.buffer instanceof SharedArrayBuffer)) throw new Error('ImageHasher: the window must be shared memory');
    this.window = window;
    this.worker.postMessage({ window: window.buffer });
  }

  seen(bytes: Buffer): number {
    if (bytes.buffer !== this.window?.buffer) throw new Error('ImageHasher: bytes outside its window');
    this.worker.postMessage({ start: bytes.byteOffset, end: bytes.byteOffset + bytes.length });
    return ++this.posted;
  }

  /** Hashes bytes [hashed so far, end) of the file `fd` (open for reading), once written. */
  fileUpTo(fd: number, end: number): void {
    if (end <= this.fileEnd) return;
    this.posted++;
    this.worker.postMessage({ fd, start: this.fileEnd, end });
    this.fileEnd = end;
  }

  async released(ticket = this.posted): Promise<void> {
    while (this.acked < ticket && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  /** The hex digest of everything seen; stops the thread. */
  async digest(): Promise<string> {
    try {
      await this.released();
      const hex = await new Promise<string>((resolve) => {
        this.digestWaiter = resolve;
        this.worker.postMessage({ digest: true });
      });
      if (this.failure) throw this.failure;
      return hex;
    } finally {
      await this.close();
    }
  }

  private closing: Promise<number> | null = null;

  /** Stops the thread (idempotent: a second terminate() of an exited worker never settles). */
  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await (this.closing ??= this.worker.terminate());
  }
}
