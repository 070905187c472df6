// Restore: snapshot -> trees -> blob locations -> ranged pack reads (in parallel) -> decoded on the
// worker threads -> the image, with its SHA-256 checked at the end.
//
// Consecutive blobs of one pack are fetched with one ranged read of up to MAX_SPAN bytes, and up to
// `concurrency` reads are in flight, so restore keeps the network busy instead of waiting on one
// round-trip per blob. Every blob is authenticated (AES-GCM, bound to its id) and hashed back to its id.
// - To a file, the workers write each blob at its place in the image: the plaintext never comes
//   back to the main thread, and the image hash reads the written prefix back on its own thread.
// - To a stream (stdout, S3), blobs come back and are written in order; the main thread hashes them.
import { createHash } from 'node:crypto';
import { type BlobLocation } from './blobindex.js';
import { IntegrityError } from './crypto.js';
import { ImageHasher } from './imagehash.js';
import { packKey, type Repository } from './repository.js';
import { type Snapshot, decodeTree } from './snapshot.js';
import { BlobWorkers, type SpanPiece } from './workers.js';

const MAX_SPAN = 2 * 1024 * 1024;
const DEFAULT_CONCURRENCY = 8;

export interface RestoreSink {
  /** Appends the buffers, in order (one ranged read's blobs: written with one call). */
  write(data: Buffer[]): Promise<void>;
  /**
   * A file descriptor open for reading and writing, when the sink is a file: blobs are then written
   * at their positions by the workers (write() is not called) and read back for the image hash.
   */
  readonly fd?: number;
}

export interface RestoreProgress {
  bytesWritten: number;
  total: number;
}

export interface RestoreResult {
  snapshot: string;
  bytesWritten: number;
  sha256: string;
}

/** One blob to restore: where it is stored and where it goes in the image. */
interface Piece {
  id: Buffer;
  loc: BlobLocation;
  pos: number;
}

export class Restorer {
  private readonly workers = BlobWorkers.shared();

  constructor(private readonly repo: Repository, private readonly concurrency = DEFAULT_CONCURRENCY) {}

  async restore(snapshotId: string, sink: RestoreSink, onProgress?: (p: RestoreProgress) => void): Promise<RestoreResult> {
    const snap = await this.repo.loadSnapshot(snapshotId);
    await this.repo.ensureIndex();
    const progress = (bytesWritten: number) => onProgress?.({ bytesWritten, total: snap.imageSize });
    const { written, digest } =
      sink.fd !== undefined ? await this.toFile(snap, sink.fd, progress) : await this.toStream(snap, sink, progress);
    if (written !== snap.imageSize || digest !== snap.sha256) {
      throw new IntegrityError(
        `restored image of snapshot ${snap.id} does not verify: ${written} bytes with SHA-256 ${digest}, expected ${snap.imageSize} bytes with ${snap.sha256}`,
      );
    }
    return { snapshot: snap.id, bytesWritten: written, sha256: digest };
  }

  /** Workers write blobs in place; the hash thread follows the contiguous written prefix. */
  private async toFile(snap: Snapshot, fd: number, progress: (n: number) => void): Promise<{ written: number; digest: string }> {
    const hasher = new ImageHasher();
    try {
      // Reads in image order; each resolves to the end of its range in the image once written.
      const inFlight: Promise<number>[] = [];
      let written = 0;
      const retireOldest = async () => {
        written = await inFlight.shift()!;
        hasher.fileUpTo(fd, written);
        progress(written);
      };
      try {
        for await (const group of this.groups(snap)) {
          const last = group[group.length - 1]!;
          const end = last.pos + last.loc.rawLength;
          const p = this.read(group).then(({ key, span, pieces }) =>
            this.workers.writeTo(fd, key, this.repo.keys.idKey, span, pieces.map((pc, i) => ({ ...pc, pos: group[i]!.pos }))).then(() => end),
          );
          p.catch(() => {}); // observed in order by retireOldest
          inFlight.push(p);
          while (inFlight.length >= this.concurrency) await retireOldest();
        }
        while (inFlight.length > 0) await retireOldest();
      } catch (err) {
        // No worker may still be writing when the caller closes (and the system reuses) the descriptor.
        await Promise.allSettled(inFlight);
        throw err;
      }
      return { written, digest: await hasher.digest() };
    } finally {
      await hasher.close();
    }
  }

  /** Blobs come back from the workers and are written in order, one write in flight. */
  private async toStream(snap: Snapshot, sink: RestoreSink, progress: (n: number) => void): Promise<{ written: number; digest: string }> {
    const sha = createHash('sha256');
    let written = 0;
    const inFlight: Promise<Buffer[]>[] = [];
    let writing: Promise<void> = Promise.resolve();
    const drainOne = async () => {
      const bufs = await inFlight.shift()!;
      for (const buf of bufs) {
        sha.update(buf);
        written += buf.length;
      }
      await writing;
      writing = sink.write(bufs);
      writing.catch(() => {}); // observed by the next await
      progress(written);
    };
    for await (const group of this.groups(snap)) {
      const p = this.read(group).then(({ key, span, pieces }) => this.workers.open(key, this.repo.keys.idKey, span, pieces));
      p.catch(() => {}); // observed when drained
      inFlight.push(p);
      while (inFlight.length >= this.concurrency) await drainOne();
    }
    while (inFlight.length > 0) await drainOne();
    await writing;
    return { written, digest: sha.digest('hex') };
  }

  /**
   * The snapshot's blobs in image order, grouped into runs that one ranged read fetches: consecutive
   * in one pack, within MAX_SPAN. A blob repeated right after itself (zeros) joins the same read.
   */
  private async *groups(snap: Snapshot): AsyncGenerator<Piece[]> {
    let group: Piece[] = [];
    let pos = 0;
    for (const treeHex of snap.content.trees) {
      const tree = decodeTree(await this.repo.readBlob(Buffer.from(treeHex, 'hex')), treeHex);
      for (const e of tree) {
        const loc = this.repo.index.get(e.id);
        if (!loc) throw new IntegrityError(`snapshot ${snap.id} needs blob ${e.id.toString('hex')}, which no index file lists`);
        const first = group[0];
        const prev = group[group.length - 1];
        const repeat = prev !== undefined && prev.loc.pack === loc.pack && prev.loc.offset === loc.offset;
        const follows =
          prev !== undefined &&
          prev.loc.pack === loc.pack &&
          loc.offset === prev.loc.offset + prev.loc.length &&
          loc.offset + loc.length - first!.loc.offset <= MAX_SPAN;
        if (prev && !repeat && !follows) {
          yield group;
          group = [];
        }
        group.push({ id: e.id, loc, pos });
        pos += loc.rawLength;
      }
    }
    if (group.length > 0) yield group;
  }

  /** Reads the span of a group, and describes its blobs for the workers. */
  private async read(group: Piece[]): Promise<{ key: Buffer; span: Buffer; pieces: SpanPiece[] }> {
    const first = group[0]!.loc;
    const length = Math.max(...group.map((p) => p.loc.offset + p.loc.length)) - first.offset;
    const span = await this.repo.backend.getRange(packKey(first.pack.id), first.offset, length, this.workers.spanBuffer(length));
    const pieces = group.map((p) => ({
      id: p.id,
      type: p.loc.type,
      compression: p.loc.compression,
      at: p.loc.offset - first.offset,
      length: p.loc.length,
      rawLength: p.loc.rawLength,
      what: `blob ${p.id.toString('hex')} in pack ${p.loc.pack.id}`,
    }));
    return { key: this.repo.packReader.keyOf(first.pack.salt), span, pieces };
  }
}
