// Ranged S3 reads that survive broken connections: getRangeInto() (one range; the S3 store's pack
// reads use it), and S3ObjectReader, which reads one whole object (a staging image, an s3:// backup
// source) with up to `concurrency` parts of `partSize` bytes in flight, handed out in order through
// a ByteReader (chunker.ts).
//
// Why not one GET of the whole object:
// - one connection is slower than several (Object Storage serves each at a fraction of a link);
// - reading a 1 TB image takes hours, and one reset connection would fail the whole backup. Here a
//   part whose body breaks off (reset, truncated, stalled) is asked again from the byte it reached.
// Every response must carry the ETag the object had when opened (sent as If-Match and checked), so
// an object replaced during the read fails it instead of yielding a mix of two images.
// Memory: `concurrency` part buffers, reused (16 MiB by default: a CLI backup from S3 peaks at
// ~245 MiB RSS against ~210 MiB with one GET).
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { ByteReader } from '../kloset/chunker.js';
import { isTransient, withBackoff } from './backoff.js';

const MiB = 1024 * 1024;

export interface RangeReadOptions {
  /** Tries per range, counting the first (default 6). */
  attempts?: number;
  /** First backoff between tries; doubles each time, with jitter (default 500 ms; backoff.ts). */
  backoffMs?: number;
  /** A body that delivers no byte for this long is dropped and asked again (default 60 s). */
  stallMs?: number;
  /** Called before each new try, e.g. to log. */
  onRetry?: (info: { offset: number; attempt: number; error: string }) => void;
}

export interface S3ReaderOptions extends RangeReadOptions {
  /** Bytes per ranged GET (default 4 MiB). */
  partSize?: number;
  /** Ranged GETs in flight (default 4). */
  concurrency?: number;
}

/** The object changed (new ETag) while it was being read. */
export class ObjectChangedError extends Error {
  constructor(what: string) {
    super(`${what} changed while it was being read (its ETag is no longer the one it had when opened)`);
    this.name = 'ObjectChangedError';
  }
}

/** The object ends before the range asked for. */
export class ShortObjectError extends Error {
  constructor(what: string, readonly size: number, offset: number, length: number) {
    super(`${what} has ${size} bytes: it ends before the ${length} bytes asked at ${offset}`);
    this.name = 'ShortObjectError';
  }
}

/** A body that ended early or stalled: worth asking again for the rest. */
export class BrokenBodyError extends Error {}

type Status = { $metadata?: { httpStatusCode?: number } };
const statusOf = (err: unknown) => (err as Status)?.$metadata?.httpStatusCode;

/** Worth another try: a 5xx or 429, a connection that failed, a body that broke off. */
function isTransientS3Error(err: unknown): boolean {
  return err instanceof BrokenBodyError || isTransient(err);
}

/**
 * Runs `once`, again after transient failures (backoff.ts), up to `attempts` tries; when they are
 * all spent, the error says what failed, from `what()`.
 */
export async function retryTransient<T>(
  once: () => Promise<T>,
  what: () => string,
  opts: Omit<RangeReadOptions, 'onRetry'> & { signal?: AbortSignal; onRetry?: (attempt: number, error: string) => void } = {},
): Promise<T> {
  const attempts = opts.attempts ?? 6;
  try {
    return await withBackoff(once, isTransientS3Error, {
      attempts,
      baseMs: opts.backoffMs ?? 500,
      signal: opts.signal,
      onRetry: (err, attempt) => opts.onRetry?.(attempt, (err as Error).message),
    });
  } catch (err) {
    if (opts.signal?.aborted || !isTransientS3Error(err)) throw err;
    throw new Error(`${what()} failed ${attempts} times: ${(err as Error).message}`);
  }
}

/**
 * Fills `into` with the bytes of s3://bucket/key from `offset`. A body that breaks off, ends early or
 * stalls is asked again from the byte it reached. With `etag`, the object must still be that one
 * (If-Match, and checked): ObjectChangedError otherwise.
 */
export async function getRangeInto(
  client: S3Client,
  bucket: string,
  key: string,
  offset: number,
  into: Buffer,
  opts: RangeReadOptions & { etag?: string; signal?: AbortSignal } = {},
): Promise<void> {
  let got = 0;
  try {
    await retryTransient(
      () => getOnce(client, bucket, key, offset + got, into.subarray(got), opts, (n) => (got += n)),
      () => `s3://${bucket}/${key}: bytes ${offset + got}-${offset + into.length - 1}`,
      { ...opts, onRetry: (attempt, error) => opts.onRetry?.({ offset: offset + got, attempt, error }) },
    );
  } catch (err) {
    throw statusOf(err) === 412 ? new ObjectChangedError(`s3://${bucket}/${key}`) : err;
  }
}

/** One ranged GET into `into`, reporting bytes as they land; throws BrokenBodyError if cut short. */
async function getOnce(
  client: S3Client,
  bucket: string,
  key: string,
  offset: number,
  into: Buffer,
  opts: RangeReadOptions & { etag?: string; signal?: AbortSignal },
  landed: (n: number) => void,
): Promise<void> {
  const what = `s3://${bucket}/${key}`;
  const attempt = new AbortController();
  const onAbort = () => attempt.abort();
  opts.signal?.addEventListener('abort', onAbort);
  const stallMs = opts.stallMs ?? 60_000;
  let stalled = false;
  const stall = () => setTimeout(() => ((stalled = true), attempt.abort()), stallMs);
  let timer = stall();
  try {
    const out = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${offset}-${offset + into.length - 1}`, IfMatch: opts.etag }),
      { abortSignal: attempt.signal },
    );
    const body = out.Body as (AsyncIterable<Uint8Array> & { destroy?: () => void }) | undefined;
    if (opts.etag && out.ETag && out.ETag !== opts.etag) {
      body?.destroy?.();
      throw new ObjectChangedError(what);
    }
    // "bytes a-b/total": an object shorter than the range is damage, not a broken connection.
    const total = Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? NaN);
    if (total < offset + into.length) {
      body?.destroy?.();
      throw new ShortObjectError(what, total, offset, into.length);
    }
    let at = 0;
    try {
      for await (const piece of body!) {
        clearTimeout(timer);
        timer = stall();
        if (at + piece.length > into.length) throw new Error(`${what}: the server sent more than the ${into.length} bytes asked at ${offset}`);
        into.set(piece, at);
        at += piece.length;
        landed(piece.length);
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith(what)) throw err;
      throw new BrokenBodyError(stalled ? `no byte for ${stallMs} ms` : `body broke off: ${(err as Error).message}`);
    }
    if (at < into.length) throw new BrokenBodyError(`body ended after ${at} of ${into.length} bytes`);
  } catch (err) {
    if (stalled && !(err instanceof BrokenBodyError)) throw new BrokenBodyError(`no answer for ${stallMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

export class S3ObjectReader {
  private readonly partSize: number;
  private readonly concurrency: number;
  private readonly parts = new Map<number, Promise<Buffer>>();
  private readonly spare: Buffer[] = [];
  private readonly abort = new AbortController();
  private cursor = 0; // the part being handed out
  private current: Buffer | null = null;
  private used = 0; // bytes of `current` handed out

  private constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly key: string,
    readonly size: number,
    readonly etag: string | undefined,
    private readonly opts: S3ReaderOptions,
  ) {
    this.partSize = opts.partSize ?? 4 * MiB;
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
  }

  /** Opens the object (a HEAD: its size and ETag). Reading starts with the first read(). */
  static async open(client: S3Client, bucket: string, key: string, opts: S3ReaderOptions = {}): Promise<S3ObjectReader> {
    const what = `s3://${bucket}/${key}`;
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch((err: unknown) => {
      if (statusOf(err) === 404) {
        throw Object.assign(new Error(`${what}: no such object`), { code: 'ENOENT' });
      }
      throw err;
    });
    if (head.ContentLength === undefined) throw new Error(`${what}: the server sent no size`);
    return new S3ObjectReader(client, bucket, key, head.ContentLength, head.ETag, opts);
  }

  private get partCount(): number {
    return Math.ceil(this.size / this.partSize);
  }

  /** Fills buf[offset..] with the next bytes of the object; 0 at the end. */
  readonly read: ByteReader = async (buf, offset, length) => {
    let done = 0;
    while (done < length) {
      if (!this.current) {
        if (this.cursor >= this.partCount) break;
        this.fill();
        this.current = await this.parts.get(this.cursor)!;
        this.used = 0;
      }
      const n = this.current.copy(buf, offset + done, this.used, Math.min(this.current.length, this.used + length - done));
      this.used += n;
      done += n;
      if (this.used === this.current.length) {
        this.parts.delete(this.cursor);
        this.spare.push(Buffer.from(this.current.buffer, this.current.byteOffset, this.partSize)); // the whole buffer, even after a short last part
        this.current = null;
        this.cursor++;
        this.fill(); // its buffer goes straight into the next GET
      }
    }
    return done;
  };

  /** Stops the GETs in flight. */
  close(): void {
    this.abort.abort();
    for (const p of this.parts.values()) p.catch(() => {});
    this.parts.clear();
  }

  /** Starts the parts from the cursor on, up to `concurrency` of them. */
  private fill(): void {
    for (let i = this.cursor; i < Math.min(this.partCount, this.cursor + this.concurrency); i++) {
      if (this.parts.has(i)) continue;
      const start = i * this.partSize;
      const length = Math.min(this.partSize, this.size - start);
      const into = (this.spare.pop() ?? Buffer.allocUnsafeSlow(this.partSize)).subarray(0, length);
      const p = this.fetchPart(start, into);
      p.catch(() => {}); // observed when its turn comes
      this.parts.set(i, p);
    }
  }

  /** One part, with the object pinned to its ETag; a part gone wrong names what it is. */
  private async fetchPart(start: number, into: Buffer): Promise<Buffer> {
    try {
      await getRangeInto(this.client, this.bucket, this.key, start, into, { ...this.opts, etag: this.etag, signal: this.abort.signal });
    } catch (err) {
      if (statusOf(err) === 404) throw new Error(`s3://${this.bucket}/${this.key}: the object is gone`);
      throw err;
    }
    return into;
  }
}
