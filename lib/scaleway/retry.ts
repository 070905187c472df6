// The Scaleway SDK does not retry: back off on 429 and 5xx (and network errors) ourselves.
import { Errors } from '@scaleway/sdk-client';

export interface RetryOptions {
  attempts?: number;
  baseMs?: number;
  maxMs?: number;
  /** Called before each wait, e.g. to log. */
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void;
}

export function isRetryable(err: unknown): boolean {
  if (err instanceof Errors.TooManyRequestsError) return true;
  if (err instanceof Errors.ScalewayError) return err.status >= 500 || err.status === 429;
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  if (status !== undefined) return status >= 500 || status === 429;
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'ECONNRESET' || code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'EPIPE' || (err as Error)?.name === 'FetchError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs fn, retrying retryable failures with exponential backoff and full jitter. */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 6;
  const base = opts.baseMs ?? 250;
  const max = opts.maxMs ?? 8000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || !isRetryable(err)) throw err;
      const wait = Math.round(Math.random() * Math.min(max, base * 2 ** (attempt - 1)));
      opts.onRetry?.(err, attempt, wait);
      await sleep(wait);
    }
  }
}

/**
 * Wraps an SDK API object so that every method call backs off on 429/5xx. Keeps call sites plain:
 * `block.getSnapshot({...})` instead of `withRetry(() => block.getSnapshot({...}))` everywhere.
 */
export function retrying<T extends object>(api: T, opts: RetryOptions = {}): T {
  return new Proxy(api, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => withRetry(() => (v as (...a: unknown[]) => Promise<unknown>).apply(target, args), opts);
    },
  });
}
