// The one retry loop: exponential backoff with full jitter. Scaleway API calls (retry.ts) and S3
// reads (s3-reader.ts) each bring their own idea of what is worth another try. No SDK import here:
// the S3 paths of the CLI load this without the Scaleway SDK.

export interface BackoffOptions {
  /** Tries, counting the first (default 6). */
  attempts?: number;
  /** First wait; doubles each time, capped at maxMs, drawn at random below that (default 250 ms). */
  baseMs?: number;
  maxMs?: number;
  /** Called before each wait, e.g. to log. */
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void;
  /** Once aborted, a failure is thrown at once. */
  signal?: AbortSignal;
}

const NETWORK_ERRORS = ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE'];

/** An HTTP 5xx or 429 (an AWS SDK error's status), or a connection that failed: worth another try. */
export function isTransient(err: unknown): boolean {
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  if (status !== undefined) return status >= 500 || status === 429;
  const name = (err as Error)?.name;
  return NETWORK_ERRORS.includes((err as NodeJS.ErrnoException)?.code ?? '') || name === 'FetchError' || name === 'TimeoutError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs fn, trying again after failures that `retryable` accepts, up to `attempts` tries. */
export async function withBackoff<T>(fn: () => Promise<T>, retryable: (err: unknown) => boolean, opts: BackoffOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 6;
  const base = opts.baseMs ?? 250;
  const max = opts.maxMs ?? 8000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || opts.signal?.aborted || !retryable(err)) throw err;
      const wait = Math.round(Math.random() * Math.min(max, base * 2 ** (attempt - 1)));
      opts.onRetry?.(err, attempt, wait);
      await sleep(wait);
    }
  }
}
