// Restore: snapshot -> trees -> blob locations -> ranged pack reads (in parallel) -> decrypt ->
// decompress -> written in order, with the whole image's SHA-256 checked at the end.
//
// Consecutive blobs of one pack are fetched with one ranged read of up to MAX_SPAN bytes, and up to
// `concurrency` reads are in flight while earlier ones are written, so restore keeps the network busy
// instead of waiting on one round-trip per blob. Spans are decoded on the worker threads: every blob is
// authenticated (AES-GCM, bound to its id) and hashed back to its id.
import { createHash } from 'node:crypto';
import { type BlobLocation } from './blobindex.js';
import { IntegrityError } from './crypto.js';
import { packKey, type Repository } from './repository.js';
import { decodeTree } from './snapshot.js';
import { BlobWorkers } from './workers.js';

const MAX_SPAN = 2 * 1024 * 1024;
const DEFAULT_CONCURRENCY = 8;
/** A repeated blob (zeros, a duplicated block) is decoded once if it recurs within this many blobs. */
const RECENT_BLOBS = 16;

export interface RestoreSink {
  /** Appends the buffers, in order (one ranged read's blobs: written with one call). */
  write(data: Buffer[]): Promise<void>;
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

interface Piece {
  id: Buffer;
  hex: string;
  loc: BlobLocation;
}

export class Restorer {
  private readonly workers = BlobWorkers.shared();

  constructor(private readonly repo: Repository, private readonly concurrency = DEFAULT_CONCURRENCY) {}

  async restore(snapshotId: string, sink: RestoreSink, onProgress?: (p: RestoreProgress) => void): Promise<RestoreResult> {
    const repo = this.repo;
    const snap = await repo.loadSnapshot(snapshotId);
    await repo.ensureIndex();
    const sha = createHash('sha256');
    let written = 0;

    // Reads in flight, in image order; the oldest is written as soon as it is decoded, while the
    // next ones are read: one write in flight, overlapping reads and decoding.
    const window: Promise<Buffer[]>[] = [];
    let writing: Promise<void> = Promise.resolve();
    const submit = (p: Promise<Buffer[]>) => {
      p.catch(() => {}); // observed when drained; avoids unhandled rejections meanwhile
      window.push(p);
    };
    const drainOne = async () => {
      const bufs = await window.shift()!;
      for (const buf of bufs) {
        sha.update(buf);
        written += buf.length;
      }
      await writing;
      writing = sink.write(bufs);
      writing.catch(() => {}); // observed by the next await
      onProgress?.({ bytesWritten: written, total: snap.imageSize });
    };

    const recent = new Map<string, Promise<Buffer>>();
    const remember = (hex: string, p: Promise<Buffer>) => {
      p.catch(() => {}); // a failed read is reported through the window; this copy may never be awaited
      recent.set(hex, p);
      if (recent.size > RECENT_BLOBS) recent.delete(recent.keys().next().value!);
    };
    let group: Piece[] = [];
    const flushGroup = () => {
      if (group.length === 0) return;
      const pieces = group;
      group = [];
      const p = this.read(pieces);
      submit(p);
      pieces.forEach((pc, i) => remember(pc.hex, p.then((bufs) => bufs[i]!)));
    };

    for (const treeHex of snap.content.trees) {
      const tree = decodeTree(await repo.readBlob(Buffer.from(treeHex, 'hex')), treeHex);
      for (const e of tree) {
        const hex = e.id.toString('hex');
        const again = recent.get(hex);
        if (again) {
          flushGroup();
          submit(again.then((b) => [b]));
        } else {
          const loc = repo.index.get(e.id);
          if (!loc) throw new IntegrityError(`snapshot ${snap.id} needs blob ${hex}, which no index file lists`);
          const first = group[0];
          const prev = group[group.length - 1];
          if (
            prev &&
            (prev.loc.pack !== loc.pack ||
              loc.offset !== prev.loc.offset + prev.loc.length ||
              loc.offset + loc.length - first!.loc.offset > MAX_SPAN)
          ) {
            flushGroup();
          }
          group.push({ id: e.id, hex, loc });
        }
        while (window.length >= this.concurrency) await drainOne();
      }
    }
    flushGroup();
    while (window.length > 0) await drainOne();
    await writing;

    const digest = sha.digest('hex');
    if (written !== snap.imageSize || digest !== snap.sha256) {
      throw new IntegrityError(
        `restored image of snapshot ${snap.id} does not verify: ${written} bytes with SHA-256 ${digest}, expected ${snap.imageSize} bytes with ${snap.sha256}`,
      );
    }
    return { snapshot: snap.id, bytesWritten: written, sha256: digest };
  }

  private async read(pieces: Piece[]): Promise<Buffer[]> {
    const first = pieces[0]!.loc;
    const last = pieces[pieces.length - 1]!.loc;
    const start = first.offset;
    const span = await this.repo.backend.getRange(packKey(first.pack.id), start, last.offset + last.length - start);
    const parts = pieces.map((p) => ({
      id: p.id,
      type: p.loc.type,
      compression: p.loc.compression,
      at: p.loc.offset - start,
      length: p.loc.length,
      rawLength: p.loc.rawLength,
      what: `blob ${p.hex} in pack ${p.loc.pack.id}`,
    }));
    return this.workers.open(this.repo.packReader.keyOf(first.pack.salt), this.repo.keys.idKey, span, parts);
  }
}
