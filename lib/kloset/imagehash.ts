// The whole image's SHA-256, computed on a thread of its own: at ~1.5 GiB/s it would otherwise take a
// quarter of the main thread's time on a backup. The chunker's window is a SharedArrayBuffer that
// this thread reads in place (no copy); the chunker waits for it before overwriting the window, which
// it rarely has to (hashing is faster than chunking and id hashing together).
import { Worker } from 'node:worker_threads';
import type { WindowObserver } from './chunker.js';

function hasherMain(port: import('node:worker_threads').MessagePort, createHash: typeof import('node:crypto').createHash): void {
  let sha = createHash('sha256');
  let shared: SharedArrayBuffer | null = null;
  port.on('message', (m: { window?: SharedArrayBuffer; start?: number; end?: number; digest?: boolean }) => {
    if (m.window) {
      shared = m.window;
      sha = createHash('sha256');
    } else if (m.digest) {
      port.postMessage({ digest: sha.digest('hex') });
    } else {
      sha.update(new Uint8Array(shared!, m.start!, m.end! - m.start!));
      port.postMessage({ done: m.end });
    }
  });
}

const SOURCE = [
  hasherMain.toString(),
  `${hasherMain.name}(require('node:worker_threads').parentPort, require('node:crypto').createHash);`,
].join('\n');

/** SHA-256 of everything the chunker sees, on a worker thread. One per backup. */
export class ImageHasher implements WindowObserver {
  private readonly worker = new Worker(SOURCE, { eval: true });
  private window: Buffer | null = null;
  private posted = 0;
  private acked = 0;
  private waiters: (() => void)[] = [];
  private digestWaiter: ((hex: string) => void) | null = null;
  private failure: Error | null = null;

  constructor() {
    this.worker.on('message', (m: { done?: number; digest?: string }) => {
      if (m.digest !== undefined) {
        this.digestWaiter?.(m.digest);
        return;
      }
      this.acked++;
      if (this.acked === this.posted) this.waiters.splice(0).forEach((w) => w());
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`image hasher exited (code ${code})`)));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.waiters.splice(0).forEach((w) => w());
    this.digestWaiter?.('');
  }

  allocate(size: number): Buffer {
    const sab = new SharedArrayBuffer(size);
    this.window = Buffer.from(sab);
    this.worker.postMessage({ window: sab });
    return this.window;
  }

  seen(bytes: Buffer): void {
    if (bytes.buffer !== this.window?.buffer) throw new Error('ImageHasher: bytes outside its window');
    this.posted++;
    this.worker.postMessage({ start: bytes.byteOffset, end: bytes.byteOffset + bytes.length });
  }

  async released(): Promise<void> {
    while (this.acked < this.posted && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  /** The hex digest of everything seen; stops the thread. */
  async digest(): Promise<string> {
    await this.released();
    const hex = await new Promise<string>((resolve) => {
      this.digestWaiter = resolve;
      this.worker.postMessage({ digest: true });
    });
    if (this.failure) throw this.failure;
    await this.close();
    return hex;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
