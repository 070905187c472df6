// The Scaleway SDK does not retry: back off on 429 and 5xx (and network errors) ourselves.
import { Errors } from '@scaleway/sdk-client';
import { type BackoffOptions, isTransient, withBackoff } from './backoff.js';

export type RetryOptions = BackoffOptions;

export function isRetryable(err: unknown): boolean {
  if (err instanceof Errors.TooManyRequestsError) return true;
  if (err instanceof Errors.ScalewayError) return err.status >= 500 || err.status === 429;
  return isTransient(err);
}

/** Runs fn, retrying 429s, 5xx and network errors with exponential backoff and full jitter. */
export function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  return withBackoff(fn, isRetryable, opts);
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
