// Reads one S3 object (a staging image, an s3:// backup source) with ranged GETs: up to `concurrency`
// parts of `partSize` bytes in flight, handed out in order through a ByteReader (chunker.ts).
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
import { isRetryable } from './retry.js';

const MiB = 1024 * 1024;

export interface S3ReaderOptions {
  /** Bytes per ranged GET (default 4 MiB). */
  partSize?: number;
  /** Ranged GETs in flight (default 4). */
  concurrency?: number;
  /** Tries per part, counting the first (default 6). */
  attempts?: number;
  /** First backoff between tries of a part; doubles each time, with jitter (default 500 ms). */
  backoffMs?: number;
  /** A body that delivers no byte for this long is dropped and asked again (default 60 s). */
  stallMs?: number;
  /** Called before each new try of a part, e.g. to log. */
  onRetry?: (info: { part: number; offset: number; attempt: number; error: string }) => void;
}

/** The object changed (new ETag) while it was being read. */
export class ObjectChangedError extends Error {
  constructor(what: string) {
    super(`${what} changed while it was being read (its ETag is no longer the one it had when opened)`);
    this.name = 'ObjectChangedError';
  }
}

/** A body that ended early or stalled: worth asking again for the rest. */
class BrokenBodyError extends Error {}

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
      if ((err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode === 404) {
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
        this.spare.push(this.current);
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
      const p = this.fetchPart(i, start, into);
      p.catch(() => {}); // observed when its turn comes
      this.parts.set(i, p);
    }
  }

  private get what(): string {
    return `s3://${this.bucket}/${this.key}`;
  }

  /** One part, asked again from where its body broke off, up to `attempts` tries. */
  private async fetchPart(part: number, start: number, into: Buffer): Promise<Buffer> {
    const attempts = this.opts.attempts ?? 6;
    let got = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.fetchRange(start + got, into.subarray(got), (n) => (got += n));
        return into;
      } catch (err) {
        if (this.abort.signal.aborted) throw err;
        if (!(err instanceof BrokenBodyError) && !isRetryable(err)) throw this.explain(err);
        if (attempt >= attempts) {
          throw new Error(`${this.what}: bytes ${start + got}-${start + into.length - 1} failed ${attempts} times: ${(err as Error).message}`);
        }
        this.opts.onRetry?.({ part, offset: start + got, attempt, error: (err as Error).message });
        const backoff = (this.opts.backoffMs ?? 500) * 2 ** (attempt - 1);
        await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * (backoff / 2)));
      }
    }
  }

  /** One ranged GET into `into`, reporting bytes as they land; throws BrokenBodyError if cut short. */
  private async fetchRange(offset: number, into: Buffer, landed: (n: number) => void): Promise<void> {
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    this.abort.signal.addEventListener('abort', onAbort);
    const stallMs = this.opts.stallMs ?? 60_000;
    let stalled = false;
    let timer = setTimeout(() => ((stalled = true), attempt.abort()), stallMs);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => ((stalled = true), attempt.abort()), stallMs);
    };
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key, Range: `bytes=${offset}-${offset + into.length - 1}`, IfMatch: this.etag }),
        { abortSignal: attempt.signal },
      );
      if (this.etag && out.ETag && out.ETag !== this.etag) {
        (out.Body as { destroy?: () => void } | undefined)?.destroy?.();
        throw new ObjectChangedError(this.what);
      }
      let at = 0;
      try {
        for await (const piece of out.Body as AsyncIterable<Uint8Array>) {
          alive();
          if (at + piece.length > into.length) throw new Error(`${this.what}: the server sent more than the ${into.length} bytes asked at ${offset}`);
          into.set(piece, at);
          at += piece.length;
          landed(piece.length);
        }
      } catch (err) {
        if (err instanceof Error && err.message.startsWith(this.what)) throw err;
        throw new BrokenBodyError(stalled ? `no byte for ${stallMs} ms` : `body broke off: ${(err as Error).message}`);
      }
      if (at < into.length) throw new BrokenBodyError(`body ended after ${at} of ${into.length} bytes`);
    } catch (err) {
      if (stalled && !(err instanceof BrokenBodyError)) throw new BrokenBodyError(`no answer for ${stallMs} ms`);
      throw err;
    } finally {
      clearTimeout(timer);
      this.abort.signal.removeEventListener('abort', onAbort);
    }
  }

  private explain(err: unknown): Error {
    const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
    if (status === 412) return new ObjectChangedError(this.what);
    if (status === 404) return new Error(`${this.what}: the object is gone`);
    return err as Error;
  }
}

export const openS3Object = (client: S3Client, bucket: string, key: string, opts?: S3ReaderOptions) => S3ObjectReader.open(client, bucket, key, opts);
