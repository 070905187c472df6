// Backup: image stream -> chunks -> ids -> (new ones) compress and encrypt -> pack -> upload -> index
// -> snapshot.
//
// The main thread chunks and computes chunk ids, in order; the whole-image SHA-256 runs on a thread of
// its own (imagehash.ts); new blobs are compressed and encrypted on the worker threads (workers.ts), up
// to MAX_SEALING at once; finished packs upload MAX_UPLOADS at a time. A blob's pack is chosen when it is sent to a worker (the worker seals
// it with that pack's key); it takes its place in the pack when it comes back.
// Memory stays bounded whatever the image size: two chunk windows, a few packs, one tree in progress.
// Index files are written every INDEX_EVERY packs, and the snapshot only after all of them.
import { hostname } from 'node:os';
import { type IndexedPack } from './blobindex.js';
import { BlobType, PackWriter } from './pack.js';
import { type Repository } from './repository.js';
import { type SnapshotMeta, SNAPSHOT_VERSION, TREE_FANOUT, type TreeEntry, encodeTree } from './snapshot.js';
import { Semaphore } from './concurrency.js';
import type { ByteReader, WindowObserver } from './chunker.js';
import { BlobWorkers, releaseNow } from './workers.js';
import { TAG_LENGTH } from './crypto.js';
import type { SealedBlob } from './blobcodec.js';
import { ImageHasher } from './imagehash.js';

const MAX_SEALING = 8;
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

/** A pack being filled: blobs are assigned to it before they are sealed, and land when they are. */
interface OpenPack {
  writer: PackWriter;
  /** Upper bound of the bytes of blobs assigned but not back yet (raw length + tag). */
  reserved: number;
  inFlight: number;
  /** No more blobs are assigned to it: it is finished when the last one in flight lands. */
  closed: boolean;
}

/** Assigns blobs to packs, finishes and uploads packs, and writes index files for uploaded packs. */
class PackSink {
  private current: OpenPack | null = null;
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

  /** The pack a blob of `rawLength` bytes goes to; it stays open until the blob lands. */
  assign(rawLength: number): OpenPack {
    const bound = rawLength + TAG_LENGTH;
    let p = this.current;
    if (p && p.writer.size + p.reserved + bound > this.repo.config.packSize && p.writer.size + p.reserved > 0) {
      this.close(p);
      p = null;
    }
    p ??= this.current = { writer: new PackWriter(this.repo.keys), reserved: 0, inFlight: 0, closed: false };
    p.reserved += bound;
    p.inFlight++;
    return p;
  }

  /** A sealed blob lands in the pack it was assigned to. */
  land(p: OpenPack, id: Buffer, type: BlobType, sealed: SealedBlob | null, rawLength: number): void {
    p.reserved -= rawLength + TAG_LENGTH;
    p.inFlight--;
    if (sealed) p.writer.append(id, type, sealed, rawLength);
    if (p.closed && p.inFlight === 0) this.upload(p.writer);
  }

  /** Resolves when fewer than MAX_SEALED_BACKLOG finished packs wait for upload. */
  async room(): Promise<void> {
    while (this.uploads.size >= MAX_SEALED_BACKLOG) await new Promise<void>((r) => this.roomWaiters.push(r));
  }

  private close(p: OpenPack): void {
    p.closed = true;
    if (this.current === p) this.current = null;
    if (p.inFlight === 0) this.upload(p.writer);
  }

  private upload(w: PackWriter): void {
    if (w.entries.length === 0 || this.failure) return;
    const task = (async () => {
      const pack = w.finish();
      await this.uploadSlots.acquire();
      try {
        await this.repo.savePack(pack);
      } finally {
        this.uploadSlots.release();
      }
      releaseNow(pack.parts); // stored: its blobs' memory goes back now, not at the next GC
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

  /**
   * Finishes the last pack, waits for every upload, and indexes what was uploaded (also after a
   * failure). Every blob sent to a worker must have landed.
   */
  async finish(): Promise<void> {
    if (this.current) this.close(this.current);
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
  private readonly sha = new ImageHasher();
  private readonly pending = new Set<string>(); // ids sent to a worker or in packs not yet uploaded
  private readonly sealing = new Set<Promise<void>>();
  private readonly slots = new Semaphore(MAX_SEALING);
  private readonly workers = BlobWorkers.shared();
  private readonly sink: PackSink;
  private tree: TreeEntry[] = [];
  private readonly trees: string[] = [];
  private bytesRead = 0;
  private blobsAdded = 0;
  private chunks = 0;

  /**
   * Who reads the chunker's windows besides this thread: the image hash, and the workers, which seal
   * new chunks from them in place. A window is read into again once both are done with it (the
   * seals in flight when it is asked for are all of chunks cut from it or before).
   */
  private readonly windowUsers: WindowObserver = {
    attach: (windows) => this.sha.attach(windows),
    seen: (bytes) => this.sha.seen(bytes),
    released: async (ticket) => {
      const sealing = [...this.sealing];
      await this.sha.released(ticket);
      await Promise.allSettled(sealing);
    },
  };

  constructor(private readonly repo: Repository, private readonly opts: BackupOptions) {
    this.sink = new PackSink(repo, (p) => {
      for (const e of p.entries) this.pending.delete(e.id.toString('hex'));
    });
  }

  async consume(source: AsyncIterable<Buffer | Uint8Array> | ByteReader) {
    try {
      for await (const chunk of this.repo.chunker.chunks(source, this.windowUsers)) {
        if (this.sink.failure) break;
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
    await Promise.allSettled([...this.sealing]);
    try {
      await this.sink.finish();
    } catch (err) {
      await this.sha.close();
      throw err;
    }
    return {
      sha256: await this.sha.digest(),
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

  /** Sends a blob to a worker unless the store (or this run) already has it. `data` may be a view. */
  private async store(id: Buffer, type: BlobType, data: Buffer): Promise<void> {
    const hex = id.toString('hex');
    if (this.pending.has(hex) || this.repo.index.has(id)) return;
    this.pending.add(hex);
    this.blobsAdded++;
    await this.slots.acquire();
    await this.sink.room();
    const pack = this.sink.assign(data.length);
    const rawLength = data.length;
    let sealed: SealedBlob | null = null;
    const task = this.workers
      .seal(pack.writer.key, id, type, data, this.repo.config.compression.level)
      .then((s) => {
        sealed = s;
      })
      .catch((err: Error) => {
        this.sink.failure ??= err;
      })
      .finally(() => {
        this.sink.land(pack, id, type, sealed, rawLength);
        this.slots.release();
        this.sealing.delete(task);
      });
    this.sealing.add(task);
  }
}
