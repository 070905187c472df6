// Backup: image stream -> chunks -> ids -> (new ones) compress -> pack -> upload -> index -> snapshot.
//
// The main thread chunks, hashes the whole image and computes chunk ids, in order; compression runs on
// the thread pool for up to MAX_COMPRESSING chunks at once; sealed packs upload MAX_UPLOADS at a time.
// Memory stays bounded whatever the image size: a chunk window, a few packs, one tree in progress.
// Index files are written every INDEX_EVERY packs, and the snapshot only after all of them.
import { createHash, type Hash } from 'node:crypto';
import { hostname } from 'node:os';
import { type IndexedPack } from './blobindex.js';
import { compressBlob } from './compress.js';
import { BlobType, type Compression, PackWriter } from './pack.js';
import { type Repository } from './repository.js';
import { type SnapshotMeta, SNAPSHOT_VERSION, TREE_FANOUT, type TreeEntry, encodeTree } from './snapshot.js';
import { Semaphore } from './concurrency.js';
import type { ByteReader } from './chunker.js';

const MAX_COMPRESSING = 8;
const MAX_UPLOADS = 2;
const MAX_SEALED_BACKLOG = 2;
const INDEX_EVERY = 32;

export interface BackupProgress {
  bytesRead: number;
  bytesAdded: number;
}

export interface BackupOptions {
  meta: SnapshotMeta;
  onProgress?: (p: BackupProgress) => void;
}

export interface BackupResult {
  snapshot: string;
  imageSize: number;
  sha256: string;
  bytesRead: number;
  bytesAdded: number;
  blobsAdded: number;
  chunks: number;
  recoveredPacks: number;
  startTime: string;
  endTime: string;
}

/** Seals blobs into packs, uploads them, and writes index files for uploaded packs. */
class PackSink {
  private writer: PackWriter | null = null;
  private readonly uploadSlots = new Semaphore(MAX_UPLOADS);
  private readonly uploads = new Set<Promise<void>>();
  private uploaded: IndexedPack[] = [];
  private roomWaiters: (() => void)[] = [];
  bytesAdded = 0;
  failure: Error | null = null;

  constructor(
    private readonly repo: Repository,
    private readonly onPackStored: (p: IndexedPack) => void,
  ) {}

  add(id: Buffer, type: BlobType, compression: Compression, payload: Buffer, rawLength: number): void {
    const w = (this.writer ??= new PackWriter(this.repo.keys));
    w.add(id, type, compression, payload, rawLength);
    if (w.size >= this.repo.config.packSize) this.seal();
  }

  /** Resolves when fewer than MAX_SEALED_BACKLOG sealed packs wait for upload. */
  async room(): Promise<void> {
    while (this.uploads.size >= MAX_SEALED_BACKLOG) await new Promise<void>((r) => this.roomWaiters.push(r));
  }

  private seal(): void {
    const w = this.writer;
    this.writer = null;
    if (!w || w.entries.length === 0) return;
    const task = (async () => {
      const pack = await w.finish();
      await this.uploadSlots.acquire();
      try {
        await this.repo.savePack(pack);
      } finally {
        this.uploadSlots.release();
      }
      this.bytesAdded += pack.size;
      const indexed: IndexedPack = { id: pack.id, salt: pack.salt, size: pack.size, entries: pack.entries };
      this.repo.index.addPack(indexed);
      this.onPackStored(indexed);
      this.uploaded.push(indexed);
      if (this.uploaded.length >= INDEX_EVERY) await this.flushIndex();
    })()
      .catch((err: Error) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.uploads.delete(task);
        this.roomWaiters.splice(0).forEach((r) => r());
      });
    this.uploads.add(task);
  }

  private async flushIndex(): Promise<void> {
    const packs = this.uploaded;
    this.uploaded = [];
    if (packs.length === 0) return;
    // Not `this.bytesAdded += await ...`: that reads bytesAdded before the await and drops what
    // concurrent uploads add meanwhile.
    const size = await this.repo.saveIndex(packs);
    this.bytesAdded += size;
  }

  /** Seals the last pack, waits for every upload, and indexes what was uploaded (also after a failure). */
  async finish(): Promise<void> {
    if (!this.failure) this.seal();
    while (this.uploads.size > 0) await Promise.all([...this.uploads]);
    await this.flushIndex();
    if (this.failure) throw this.failure;
  }
}

export class Archiver {
  constructor(private readonly repo: Repository) {}

  async backup(source: AsyncIterable<Buffer | Uint8Array> | ByteReader, opts: BackupOptions): Promise<BackupResult> {
    const repo = this.repo;
    const startTime = new Date().toISOString();
    await repo.ensureIndex();
    const unlock = await repo.lock('backup');
    try {
      const { recovered } = await repo.indexOrphanPacks();
      const run = new BackupRun(repo, opts);
      const stats = await run.consume(source);
      const endTime = new Date().toISOString();
      const record = {
        version: SNAPSHOT_VERSION,
        host: hostname(),
        startTime,
        endTime,
        ...opts.meta,
        imageSize: stats.bytesRead,
        sha256: stats.sha256,
        bytesRead: stats.bytesRead,
        bytesAdded: stats.bytesAdded,
        blobsAdded: stats.blobsAdded,
        content: { trees: stats.trees, chunks: stats.chunks },
      };
      // Written last: a snapshot exists only once everything it references is stored and indexed.
      const saved = await repo.saveSnapshot(record);
      const bytesAdded = stats.bytesAdded + saved.size;
      return {
        snapshot: saved.id,
        imageSize: stats.bytesRead,
        sha256: stats.sha256,
        bytesRead: stats.bytesRead,
        bytesAdded,
        blobsAdded: stats.blobsAdded,
        chunks: stats.chunks,
        recoveredPacks: recovered,
        startTime,
        endTime,
      };
    } finally {
      await unlock().catch(() => {});
    }
  }
}

/** The state of one backup while it streams. */
class BackupRun {
  private readonly sha: Hash = createHash('sha256');
  private readonly pending = new Set<string>(); // ids sent to compression or in packs not yet uploaded
  private readonly compressing = new Set<Promise<void>>();
  private readonly slots = new Semaphore(MAX_COMPRESSING);
  private readonly sink: PackSink;
  private tree: TreeEntry[] = [];
  private readonly trees: string[] = [];
  private bytesRead = 0;
  private blobsAdded = 0;
  private chunks = 0;

  constructor(private readonly repo: Repository, private readonly opts: BackupOptions) {
    this.sink = new PackSink(repo, (p) => {
      for (const e of p.entries) this.pending.delete(e.id.toString('hex'));
    });
  }

  async consume(source: AsyncIterable<Buffer | Uint8Array> | ByteReader) {
    try {
      for await (const chunk of this.repo.chunker.chunks(source)) {
        if (this.sink.failure) break;
        this.sha.update(chunk);
        this.bytesRead += chunk.length;
        this.chunks++;
        const id = this.repo.keys.blobId(chunk);
        this.tree.push({ id, rawLength: chunk.length });
        await this.store(id, BlobType.Data, chunk);
        if (this.tree.length === TREE_FANOUT) await this.flushTree();
        this.opts.onProgress?.({ bytesRead: this.bytesRead, bytesAdded: this.sink.bytesAdded });
      }
      if (!this.sink.failure) await this.flushTree();
    } catch (err) {
      this.sink.failure ??= err as Error;
    }
    await Promise.allSettled([...this.compressing]);
    await this.sink.finish();
    return {
      sha256: this.sha.digest('hex'),
      bytesRead: this.bytesRead,
      bytesAdded: this.sink.bytesAdded,
      blobsAdded: this.blobsAdded,
      chunks: this.chunks,
      trees: this.trees,
    };
  }

  private async flushTree(): Promise<void> {
    if (this.tree.length === 0 && this.trees.length > 0) return;
    const data = encodeTree(this.tree);
    this.tree = [];
    const id = this.repo.keys.blobId(data);
    this.trees.push(id.toString('hex'));
    await this.store(id, BlobType.Tree, data);
  }

  /** Sends a blob to compression unless the store (or this run) already has it. `data` may be a view. */
  private async store(id: Buffer, type: BlobType, data: Buffer): Promise<void> {
    const hex = id.toString('hex');
    if (this.pending.has(hex) || this.repo.index.has(id)) return;
    this.pending.add(hex);
    this.blobsAdded++;
    await this.slots.acquire();
    await this.sink.room();
    const copy = Buffer.from(data); // the chunker reuses its window
    const task = compressBlob(copy, this.repo.config.compression)
      .then(({ payload, compression }) => this.sink.add(id, type, compression, payload, copy.length))
      .catch((err: Error) => {
        this.sink.failure ??= err;
      })
      .finally(() => {
        this.slots.release();
        this.compressing.delete(task);
      });
    this.compressing.add(task);
  }
}
