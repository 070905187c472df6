// Where images come from and go to: a file, stdin/stdout ("-"), or an S3 object (s3://bucket/key).
// Sinks are transactional where the medium allows: a file appears under its name only once the
// restore verified; an S3 multipart upload is aborted (no parts left behind) if anything fails.
import { promises as fsp } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Writable } from 'node:stream';
import { parseS3Url, type S3Options } from '../scaleway/s3-location.js';
import type { RestoreSink } from './restorer.js';
import type { ByteReader } from './chunker.js';

const MiB = 1024 * 1024;
/** Scaleway Object Storage accepts at most 1000 parts per multipart upload. */
export const MAX_PARTS = 1000;

export interface ImageSource {
  /** The image: a stream, or for a file a reader that fills the chunker's buffer directly. */
  stream: AsyncIterable<Buffer> | ByteReader;
  /** Known size in bytes, for progress (unknown for stdin). */
  size?: number;
  close(): Promise<void>;
}

export async function openImageSource(spec: string, s3?: S3Options): Promise<ImageSource> {
  if (spec === '-') return { stream: process.stdin, close: async () => {} };
  if (spec.startsWith('s3://')) {
    const { bucket, key } = parseS3Url(spec);
    const { makeS3Client } = await import('../scaleway/s3.js');
    const { S3ObjectReader } = await import('../scaleway/s3-reader.js');
    const client = makeS3Client(s3);
    try {
      const reader = await S3ObjectReader.open(client, bucket, key);
      return { stream: reader.read, size: reader.size, close: async () => (reader.close(), client.destroy()) };
    } catch (err) {
      client.destroy();
      throw err;
    }
  }
  const st = await fsp.stat(spec).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw Object.assign(new Error(`cannot back up ${spec}: no such file`), { code: 'ENOENT' });
    throw err;
  });
  if (!st.isFile() && !st.isBlockDevice()) throw new Error(`${spec} is not a file`);
  const fh = await fsp.open(spec, 'r');
  let position = 0;
  const read: ByteReader = async (buf, offset, length) => {
    const { bytesRead } = await fh.read(buf, offset, length, position);
    position += bytesRead;
    return bytesRead;
  };
  return { stream: read, size: st.size, close: () => fh.close() };
}

export interface ImageSink extends RestoreSink {
  /** Makes the image visible under its final name. */
  commit(): Promise<void>;
  /** Removes everything written so far. */
  abort(): Promise<void>;
}

async function writeWithBackpressure(w: Writable, data: Buffer[]): Promise<void> {
  let ok = true;
  for (const d of data) ok = w.write(d);
  if (!ok) await once(w, 'drain');
}

/** S3 parts are at most 5 GiB. */
export const MAX_PART_SIZE = 5 * 1024 * MiB;

/**
 * Part size that keeps a multipart upload of `size` bytes within MAX_PARTS (whole MiB, >= 8 MiB).
 * An image too big for MAX_PARTS parts of MAX_PART_SIZE is refused before anything is uploaded.
 * lib-storage holds up to queueSize + 1 parts in memory: ~3 GiB for a 1 TiB image.
 */
export function partSizeFor(size: number): number {
  const part = Math.max(8 * MiB, Math.ceil(size / (MAX_PARTS - 1) / MiB) * MiB);
  if (part > MAX_PART_SIZE) {
    throw new Error(`an image of ${size} bytes does not fit one S3 multipart upload (at most ${MAX_PARTS} parts of 5 GiB)`);
  }
  return part;
}

export async function openImageSink(spec: string, size: number, s3?: S3Options): Promise<ImageSink> {
  if (spec === '-') {
    return {
      write: (d) => writeWithBackpressure(process.stdout, d),
      commit: async () => {},
      abort: async () => {},
    };
  }
  if (spec.startsWith('s3://')) {
    const { bucket, key } = parseS3Url(spec);
    const partSize = partSizeFor(size);
    const { makeS3Client } = await import('../scaleway/s3.js');
    const { Upload } = await import('@aws-sdk/lib-storage');
    const client = makeS3Client(s3);
    const body = new PassThrough({ highWaterMark: 4 * MiB });
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: body, ContentType: 'application/octet-stream' },
      partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    let failure: Error | null = null;
    const done = upload.done().catch((err: Error) => {
      failure = err;
      body.destroy();
    });
    return {
      async write(d) {
        if (failure) throw failure;
        await Promise.race([writeWithBackpressure(body, d), done.then(() => { if (failure) throw failure; })]);
      },
      async commit() {
        body.end();
        await done;
        client.destroy();
        if (failure) throw failure;
      },
      async abort() {
        await upload.abort().catch(() => {});
        body.destroy();
        await done;
        // The body never ended, so no object was completed: aborting the multipart upload leaves nothing.
        client.destroy();
      },
    };
  }
  const dest = path.resolve(spec);
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.partial-${randomBytes(4).toString('hex')}`);
  // Read and write: the restore's workers write blobs in place, and its hash thread reads them back.
  const fh = await fsp.open(tmp, 'wx+').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') {
      throw Object.assign(new Error(`cannot restore to ${spec}: directory ${path.dirname(dest)} does not exist`), { code: 'ENOENT' });
    }
    throw err;
  });
  let pos = 0;
  return {
    fd: fh.fd,
    async write(parts) {
      // One positioned writev per call, resumed after a short write.
      let batch = parts.filter((p) => p.length > 0);
      while (batch.length > 0) {
        let { bytesWritten } = await fh.writev(batch.slice(0, 512), pos);
        pos += bytesWritten;
        while (batch.length > 0 && bytesWritten >= batch[0]!.length) {
          bytesWritten -= batch[0]!.length;
          batch = batch.slice(1);
        }
        if (batch.length > 0 && bytesWritten > 0) batch[0] = batch[0]!.subarray(bytesWritten);
      }
    },
    async commit() {
      // No fsync of the whole image (seconds per GiB on slow disks, and neither restic nor cp does
      // it): the name appears only once the image verified; durability is the page cache's job.
      await fh.close();
      await fsp.rename(tmp, dest);
    },
    async abort() {
      await fh.close().catch(() => {});
      await fsp.rm(tmp, { force: true });
    },
  };
}
