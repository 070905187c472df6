// What the Block Storage and Jobs handlers share: state, faults, the S3 client, timings, and the
// background work of the server (tracked so that stop() can wait for it).
import type { S3Client } from '@aws-sdk/client-s3';
import type { Faults } from './faults.js';
import type { State } from './state.js';

/** How long each asynchronous transition takes, in milliseconds. */
export interface Timings {
  /** volume `creating` -> `available` */
  volumeCreateMs: number;
  /** snapshot `creating` -> `available` (snapshot of a volume) */
  snapshotCreateMs: number;
  /** snapshot `exporting` -> `available` (at least; the upload itself may take longer) */
  exportMs: number;
  /** imported snapshot `creating` -> `available` (at least; the conversion may take longer) */
  importMs: number;
  /** `deleting` -> gone */
  deleteMs: number;
  /** job run `queued` -> `running` */
  jobStartMs: number;
}

/** A few seconds each, so that clients must really poll. */
export const DEFAULT_TIMINGS: Timings = {
  volumeCreateMs: 2000,
  snapshotCreateMs: 3000,
  exportMs: 5000,
  importMs: 5000,
  deleteMs: 1000,
  jobStartMs: 1000,
};

/** Short timings for tests and `local --fast`. */
export const FAST_TIMINGS: Timings = {
  volumeCreateMs: 50,
  snapshotCreateMs: 50,
  exportMs: 50,
  importMs: 50,
  deleteMs: 50,
  jobStartMs: 50,
};

export class Background {
  private readonly controller = new AbortController();
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get stopped(): boolean {
    return this.controller.signal.aborted;
  }

  /** Runs `fn` in the background; errors are passed to `onError` (or ignored once stopped). */
  run(fn: (signal: AbortSignal) => Promise<void>, onError?: (err: unknown) => void): void {
    if (this.stopped) return;
    const p = fn(this.signal).catch((err) => {
      if (!this.stopped) onError?.(err);
    });
    this.tasks.add(p);
    void p.finally(() => this.tasks.delete(p));
  }

  /** Resolves after `ms` (or at fastForward()), or rejects when the server stops. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.stopped) return reject(new Error('stopped'));
      const sleeper = {
        timer: setTimeout(() => sleeper.wake(), ms),
        wake: () => {
          clearTimeout(sleeper.timer);
          this.sleepers.delete(sleeper);
          this.signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        clearTimeout(sleeper.timer);
        this.sleepers.delete(sleeper);
        reject(new Error('stopped'));
      };
      this.signal.addEventListener('abort', onAbort, { once: true });
      this.sleepers.add(sleeper);
    });
  }

  /** Ends every pending wait now: transitions waiting for their duration happen at once. */
  fastForward(): void {
    for (const s of [...this.sleepers]) s.wake();
  }

  /** Calls `fn` after `ms` unless the server stopped first. */
  later(ms: number, fn: () => void): void {
    this.run(async () => {
      await this.sleep(ms);
      fn();
    });
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await Promise.allSettled([...this.tasks]);
  }
}

export interface EmulatorContext {
  state: State;
  faults: Faults;
  s3: S3Client;
  timings: Timings;
  background: Background;
  /** Where job commands run (their working directory). */
  jobsCwd: string;
}
