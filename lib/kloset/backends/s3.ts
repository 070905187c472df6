// A store under s3://bucket/prefix on any S3-compatible endpoint (Scaleway Object Storage in production).
// A PUT is atomic on S3; large objects go through lib-storage's multipart upload. Reads survive
// broken connections (s3-reader.ts): the SDK retries failed requests, not bodies cut off mid-way.
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { type Backend, type ObjectInfo, ObjectNotFoundError, rangeBuffer, ShortReadError } from '../backend.js';
import { BrokenBodyError, getRangeInto, retryTransient, ShortObjectError } from '../../scaleway/s3-reader.js';

/** Above this size a PUT becomes a multipart upload (some S3-compatible servers cap single bodies). */
const MULTIPART_THRESHOLD = 8 * 1024 * 1024;

export class S3Backend implements Backend {
  readonly location: string;

  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly prefix: string,
  ) {
    this.location = `s3://${bucket}/${prefix}`;
  }

  private k(key: string): string {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  async get(key: string): Promise<Buffer> {
    // Whole objects are small (config, keys, index files, snapshots): a broken body is asked again whole.
    try {
      return await retryTransient(
        async () => {
          const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
          const bytes = await out.Body!.transformToByteArray();
          if (out.ContentLength !== undefined && bytes.length !== out.ContentLength) {
            throw new BrokenBodyError(`body ended after ${bytes.length} of ${out.ContentLength} bytes`);
          }
          return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
        },
        () => `s3://${this.bucket}/${this.k(key)}`,
        { attempts: 4 },
      );
    } catch (err) {
      throw mapNotFound(err, key);
    }
  }

  /** A ranged read into `into` when given (restores lend pooled buffers), resumed if its body breaks off. */
  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const buf = rangeBuffer(length, into);
    try {
      await getRangeInto(this.s3, this.bucket, this.k(key), offset, buf);
    } catch (err) {
      if (err instanceof ShortObjectError) throw new ShortReadError(key, offset, length, Math.max(0, err.size - offset));
      if (errorName(err) === 'InvalidRange') throw new ShortReadError(key, offset, length, 0);
      throw mapNotFound(err, key);
    }
    return buf;
  }

  async put(key: string, parts: Buffer | readonly Buffer[]): Promise<void> {
    const data = Buffer.isBuffer(parts) ? parts : Buffer.concat(parts);
    if (data.length <= MULTIPART_THRESHOLD) {
      await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.k(key), Body: data }));
      return;
    }
    await new Upload({
      client: this.s3,
      params: { Bucket: this.bucket, Key: this.k(key), Body: data },
      partSize: MULTIPART_THRESHOLD,
      queueSize: 2,
      leavePartsOnError: false,
    }).done();
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
      return { key, size: out.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    do {
      const out = await this.s3.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.k(prefix), ContinuationToken: token }),
      );
      for (const o of out.Contents ?? []) yield { key: o.Key!.slice(strip), size: o.Size ?? 0 };
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
  }

  async close(): Promise<void> {
    this.s3.destroy();
  }
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string })?.name;
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  return name === 'NoSuchKey' || name === 'NotFound' || status === 404;
}

function mapNotFound(err: unknown, key: string): unknown {
  return isNotFound(err) ? new ObjectNotFoundError(key) : err;
}
