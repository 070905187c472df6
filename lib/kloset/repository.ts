// The repository: named, encrypted objects on a backend, and the store-wide blob index.
// Object layout (see docs/FORMAT.md):
//   config               envelope(Config): format version, store id, chunker and compression settings
//   keys/<blake3>        key files (plaintext JSON, wrapped master key)
//   packs/<xx>/<blake3>  packfiles, named by the BLAKE3 of their bytes
//   index/<blake3>       index files: which blobs each pack holds
//   snapshots/<blake3>   snapshot records, written last
//   locks/<random>       who is writing (for a future prune); removed when done
import { randomBytes, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Backend } from './backend.js';
import { ObjectNotFoundError } from './backend.js';
import { BlobIndex, type IndexedPack, decodeIndexFile, encodeIndexFile } from './blobindex.js';
import { type ChunkerParams, DEFAULT_CHUNKER, Chunker } from './chunker.js';
import { type CompressionConfig, DEFAULT_COMPRESSION } from './blobcodec.js';
import { DEFAULT_KDF, IntegrityError, type KdfParams, StoreKeys, contentName } from './crypto.js';
import { mainThreadCodec } from './workers.js';
import { ObjectType, openObject, sealObject } from './envelope.js';
import { unlockStore, writeKeyFile } from './keys.js';
import { type FinishedPack, PACK_FOOTER_LENGTH, PACK_HEADER_LENGTH, PackReader } from './pack.js';
import { SNAPSHOT_VERSION, type Snapshot, type SnapshotRecord } from './snapshot.js';
import { mapLimit } from './concurrency.js';

/** 2: BLAKE3 ids and names, blob nonces from ids (1 was HMAC-SHA-256 ids, SHA-256 names). */
export const STORE_VERSION = 2;
/** Packs are sealed once they pass this size: big enough for few objects, small enough to buffer. */
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;

export interface StoreConfig {
  version: number;
  id: string;
  created: string;
  chunker: ChunkerParams;
  compression: CompressionConfig;
  packSize: number;
}

export interface InitOptions {
  kdf?: KdfParams;
  chunker?: ChunkerParams;
  compression?: CompressionConfig;
  packSize?: number;
}

export class StoreExistsError extends Error {
  constructor(location: string) {
    super(`a Kloset store already exists at ${location}`);
    this.name = 'StoreExistsError';
  }
}

export class NotAStoreError extends Error {
  constructor(location: string) {
    super(`no Kloset store at ${location} (run "store init" first)`);
    this.name = 'NotAStoreError';
  }
}

export const packKey = (id: string) => `packs/${id.slice(0, 2)}/${id}`;

export class Repository {
  readonly index = new BlobIndex();
  readonly packReader: PackReader;
  readonly chunker: Chunker;
  private indexLoaded = false;

  private constructor(
    readonly backend: Backend,
    readonly keys: StoreKeys,
    readonly config: StoreConfig,
    readonly keyId: string,
  ) {
    this.packReader = new PackReader(keys);
    this.chunker = new Chunker(config.chunker, keys.chunkerSeed);
  }

  static async init(backend: Backend, passphrase: string, opts: InitOptions = {}): Promise<StoreConfig> {
    if (await backend.stat('config')) throw new StoreExistsError(backend.location);
    const keys = StoreKeys.generate();
    const config: StoreConfig = {
      version: STORE_VERSION,
      id: randomUUID(),
      created: new Date().toISOString(),
      chunker: opts.chunker ?? DEFAULT_CHUNKER,
      compression: opts.compression ?? DEFAULT_COMPRESSION,
      packSize: opts.packSize ?? DEFAULT_PACK_SIZE,
    };
    // The key file first: a config without a key would be an unopenable store.
    await writeKeyFile(backend, keys, passphrase, opts.kdf ?? DEFAULT_KDF);
    await backend.put('config', sealObject(keys, ObjectType.Config, Buffer.from(JSON.stringify(config))));
    return config;
  }

  /** Opens a store: checks the passphrase and reads the config. Reads no data and writes nothing. */
  static async open(backend: Backend, passphrase: string): Promise<Repository> {
    const raw = await backend.get('config').catch((err) => {
      if (err instanceof ObjectNotFoundError) throw new NotAStoreError(backend.location);
      throw err;
    });
    const { keys, keyId } = await unlockStore(backend, passphrase);
    const config = JSON.parse(openObject(keys, ObjectType.Config, raw, 'config').toString('utf8')) as StoreConfig;
    if (config.version !== STORE_VERSION) {
      throw new Error(`unsupported store version ${config.version} (this build reads version ${STORE_VERSION}; version 1 stores came from development builds before 2026-11-27)`);
    }
    return new Repository(backend, keys, config, keyId);
  }

  /** Adds a key file for a new passphrase and removes the one that opened this store. */
  async changePassphrase(newPassphrase: string, kdf: KdfParams = DEFAULT_KDF): Promise<void> {
    await writeKeyFile(this.backend, this.keys, newPassphrase, kdf);
    await this.backend.delete(`keys/${this.keyId}`);
  }

  // ---- index ----

  /** Loads every index file into memory. Damaged ones are reported through onError (check) or thrown. */
  async loadIndex(onError?: (key: string, err: Error) => void): Promise<string[]> {
    const keys: string[] = [];
    for await (const o of this.backend.list('index/')) keys.push(o.key);
    await mapLimit(keys, 8, async (key) => {
      try {
        for (const p of (await this.readIndexFile(key)).packs) this.index.addPack(p);
      } catch (err) {
        if (!onError) throw err;
        onError(key, err as Error);
      }
    });
    this.indexLoaded = true;
    return keys;
  }

  async readIndexFile(key: string): Promise<{ packs: IndexedPack[]; superseded: string[] }> {
    const data = await this.backend.get(key);
    if (contentName(data) !== key.slice('index/'.length)) throw new IntegrityError(`${key} does not match its name`);
    return decodeIndexFile(openObject(this.keys, ObjectType.Index, data, key));
  }

  async ensureIndex(): Promise<void> {
    if (!this.indexLoaded) await this.loadIndex();
  }

  async saveIndex(packs: IndexedPack[]): Promise<number> {
    const data = sealObject(this.keys, ObjectType.Index, encodeIndexFile(packs));
    await this.backend.put(`index/${contentName(data)}`, data);
    return data.length;
  }

  /** Packs present in the backend, with their sizes. */
  async listPacks(): Promise<Map<string, number>> {
    const packs = new Map<string, number>();
    for await (const o of this.backend.list('packs/')) packs.set(o.key.slice(o.key.lastIndexOf('/') + 1), o.size);
    return packs;
  }

  /** Reads a pack's own index from its footer (3 small reads, not the whole pack). */
  async readPackIndex(id: string, size: number): Promise<IndexedPack> {
    const key = packKey(id);
    if (size < PACK_HEADER_LENGTH + PACK_FOOTER_LENGTH) throw new IntegrityError(`pack ${id} is truncated`);
    const [header, footer] = await Promise.all([
      this.backend.getRange(key, 0, PACK_HEADER_LENGTH),
      this.backend.getRange(key, size - PACK_FOOTER_LENGTH, PACK_FOOTER_LENGTH),
    ]);
    const { indexOffset, indexLength } = this.packReader.footer(footer, size, id);
    const sealed = await this.backend.getRange(key, indexOffset, indexLength);
    return { id, salt: this.packReader.salt(header, id), size, entries: this.packReader.entries(header, sealed, id) };
  }

  /**
   * Packs that no index file lists were left by an interrupted backup (or are being written by a
   * concurrent one). Indexing them lets this backup reuse their blobs instead of uploading them again.
   */
  async indexOrphanPacks(): Promise<{ recovered: number; skipped: string[] }> {
    await this.ensureIndex();
    const orphans = [...(await this.listPacks())].filter(([id]) => !this.index.hasPack(id));
    const recovered: IndexedPack[] = [];
    const skipped: string[] = [];
    await mapLimit(orphans, 8, async ([id, size]) => {
      try {
        recovered.push(await this.readPackIndex(id, size));
      } catch {
        skipped.push(id); // damaged: check reports it; never reference it
      }
    });
    if (recovered.length > 0) {
      for (const p of recovered) this.index.addPack(p);
      await this.saveIndex(recovered);
    }
    return { recovered: recovered.length, skipped };
  }

  // ---- packs and blobs ----

  async savePack(pack: FinishedPack): Promise<void> {
    await this.backend.put(packKey(pack.id), pack.parts);
  }

  /** Reads one blob's plaintext (used for trees; restore reads ranges of many blobs instead). */
  async readBlob(id: Buffer): Promise<Buffer> {
    await this.ensureIndex();
    const loc = this.index.get(id);
    if (!loc) throw new IntegrityError(`blob ${id.toString('hex')} is not in the index`);
    const sealed = await this.backend.getRange(packKey(loc.pack.id), loc.offset, loc.length);
    const what = `blob ${id.toString('hex')} in pack ${loc.pack.id}`;
    return this.packReader.openBlob(mainThreadCodec(), loc.pack.salt, { id, ...loc }, sealed, what);
  }

  // ---- snapshots ----

  async saveSnapshot(record: SnapshotRecord): Promise<{ id: string; size: number }> {
    const data = sealObject(this.keys, ObjectType.Snapshot, Buffer.from(JSON.stringify(record)));
    const id = contentName(data);
    await this.backend.put(`snapshots/${id}`, data);
    return { id, size: data.length };
  }

  async listSnapshotIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.backend.list('snapshots/')) ids.push(o.key.slice('snapshots/'.length));
    return ids;
  }

  async loadSnapshot(id: string): Promise<Snapshot> {
    const key = `snapshots/${id}`;
    const data = await this.backend.get(key);
    if (contentName(data) !== id) throw new IntegrityError(`${key} does not match its name`);
    const rec = JSON.parse(openObject(this.keys, ObjectType.Snapshot, data, key).toString('utf8')) as SnapshotRecord;
    if (rec.version !== SNAPSHOT_VERSION) throw new Error(`${key}: unsupported snapshot version ${rec.version}`);
    return { id, ...rec };
  }

  async listSnapshots(): Promise<Snapshot[]> {
    const ids = await this.listSnapshotIds();
    const snaps = await mapLimit(ids, 8, (id) => this.loadSnapshot(id));
    return snaps.sort((a, b) => a.startTime.localeCompare(b.startTime));
  }

  /** Accepts a full id or a unique prefix of one. */
  async resolveSnapshotId(prefix: string): Promise<string> {
    const p = prefix.toLowerCase();
    if (!/^[0-9a-f]{1,64}$/.test(p)) throw new SnapshotNotFoundError(`"${prefix}" is not a snapshot id`);
    const matches = (await this.listSnapshotIds()).filter((id) => id.startsWith(p));
    if (matches.length === 0) throw new SnapshotNotFoundError(`no snapshot matches "${prefix}"`);
    if (matches.length > 1) throw new SnapshotNotFoundError(`"${prefix}" matches ${matches.length} snapshots: give more characters`);
    return matches[0]!;
  }

  // ---- locks ----

  /**
   * Records that a backup is writing. Backups never conflict with each other; the lock is for a future
   * prune, which must not delete packs that a running backup has uploaded but not yet indexed.
   */
  async lock(kind: 'backup'): Promise<() => Promise<void>> {
    const key = `locks/${randomBytes(16).toString('hex')}`;
    const body = () => Buffer.from(JSON.stringify({ kind, host: hostname(), pid: process.pid, time: new Date().toISOString() }));
    await this.backend.put(key, body());
    const refresh = setInterval(() => void this.backend.put(key, body()).catch(() => {}), 5 * 60_000);
    refresh.unref();
    return async () => {
      clearInterval(refresh);
      await this.backend.delete(key);
    };
  }
}

export class SnapshotNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotNotFoundError';
  }
}
