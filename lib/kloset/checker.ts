// check: every index file decrypts and matches its name; every indexed pack exists, has the indexed
// size, and its own (encrypted) index agrees with the index files; every snapshot decrypts and every
// blob its trees need is indexed. With readData, every pack is read whole: its BLAKE3 must match its
// name and every blob must decrypt, decompress and hash back to its id.
import { type IndexedPack } from './blobindex.js';
import { mainThreadCodec } from './workers.js';
import { IntegrityError, contentName } from './crypto.js';
import { type PackEntry, PACK_FOOTER_LENGTH, PACK_HEADER_LENGTH } from './pack.js';
import { packKey, type Repository } from './repository.js';
import { decodeTree } from './snapshot.js';
import { mapLimit } from './concurrency.js';

export interface CheckProblem {
  /** The damaged or missing object, e.g. "packs/ab/ab12..." or "snapshots/...". */
  object: string;
  message: string;
}

export interface CheckReport {
  errors: CheckProblem[];
  warnings: CheckProblem[];
  indexFiles: number;
  packs: number;
  blobs: number;
  snapshots: number;
  bytesRead: number;
}

export interface CheckOptions {
  readData?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export async function checkStore(repo: Repository, opts: CheckOptions = {}): Promise<CheckReport> {
  const report: CheckReport = { errors: [], warnings: [], indexFiles: 0, packs: 0, blobs: 0, snapshots: 0, bytesRead: 0 };
  const error = (object: string, message: string) => report.errors.push({ object, message });

  // 1. Index files, and what they say each pack holds.
  const indexed = new Map<string, IndexedPack>();
  const indexKeys: string[] = [];
  for await (const o of repo.backend.list('index/')) indexKeys.push(o.key);
  await mapLimit(indexKeys, 8, async (key) => {
    try {
      for (const p of (await repo.readIndexFile(key)).packs) {
        repo.index.addPack(p);
        if (!indexed.has(p.id)) indexed.set(p.id, p);
      }
    } catch (err) {
      error(key, (err as Error).message);
    }
  });
  report.indexFiles = indexKeys.length;

  // 2. Packs: present, right size, own index agrees; with readData, every byte.
  const present = await repo.listPacks();
  for (const id of present.keys()) {
    if (!indexed.has(id)) {
      report.warnings.push({ object: packKey(id), message: 'not in any index (left by an interrupted backup; the next backup reuses it)' });
    }
  }
  const packs = [...indexed.values()];
  let done = 0;
  await mapLimit(packs, opts.readData ? 2 : 8, async (p) => {
    const key = packKey(p.id);
    const size = present.get(p.id);
    try {
      if (size === undefined) throw new Error('missing (listed by an index file)');
      if (size !== p.size) throw new Error(`is ${size} bytes, the index says ${p.size} (truncated or altered)`);
      const problems = opts.readData ? await verifyPackData(repo, p) : await verifyPackStructure(repo, p);
      for (const m of problems) error(key, m);
      report.blobs += p.entries.length;
      report.bytesRead += opts.readData ? p.size : 0;
    } catch (err) {
      error(key, `pack ${(err as Error).message}`);
    }
    opts.onProgress?.(++done, packs.length);
  });
  report.packs = packs.length;

  // 3. Snapshots and the blobs they need.
  const snapshotIds = await repo.listSnapshotIds();
  for (const id of snapshotIds) {
    const key = `snapshots/${id}`;
    try {
      const snap = await repo.loadSnapshot(id);
      let missing = 0;
      let firstMissing = '';
      for (const treeHex of snap.content.trees) {
        const treeId = Buffer.from(treeHex, 'hex');
        if (!repo.index.has(treeId)) {
          missing++;
          firstMissing ||= treeHex;
          continue;
        }
        const tree = decodeTree(await repo.readBlob(treeId), treeHex);
        for (const e of tree) {
          if (!repo.index.has(e.id)) {
            missing++;
            firstMissing ||= e.id.toString('hex');
          }
        }
      }
      if (missing > 0) error(key, `needs ${missing} blob(s) that no index lists, e.g. ${firstMissing}`);
    } catch (err) {
      error(key, (err as Error).message);
    }
  }
  report.snapshots = snapshotIds.length;

  for await (const o of repo.backend.list('locks/')) {
    report.warnings.push({ object: o.key, message: 'a writer holds or left this lock (a running or killed backup)' });
  }
  return report;
}

function sameEntries(a: PackEntry[], b: PackEntry[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((e, i) => {
    const f = b[i]!;
    return e.id.equals(f.id) && e.offset === f.offset && e.length === f.length && e.rawLength === f.rawLength && e.type === f.type && e.compression === f.compression;
  });
}

async function verifyPackStructure(repo: Repository, p: IndexedPack): Promise<string[]> {
  const own = await repo.readPackIndex(p.id, p.size);
  const problems: string[] = [];
  if (!own.salt.equals(p.salt)) problems.push('header does not match the index files');
  if (!sameEntries(own.entries, p.entries)) problems.push('its own index does not match the index files');
  return problems;
}

async function verifyPackData(repo: Repository, p: IndexedPack): Promise<string[]> {
  const data = await repo.backend.get(packKey(p.id));
  const problems: string[] = [];
  if (contentName(data) !== p.id) problems.push('content does not match its name (BLAKE3)');
  const reader = repo.packReader;
  try {
    const header = data.subarray(0, PACK_HEADER_LENGTH);
    const { indexOffset, indexLength } = reader.footer(data.subarray(data.length - PACK_FOOTER_LENGTH), data.length, p.id);
    const own = reader.entries(header, data.subarray(indexOffset, indexOffset + indexLength), p.id);
    if (!sameEntries(own, p.entries)) problems.push('its own index does not match the index files');
  } catch (err) {
    problems.push((err as Error).message);
  }
  for (const e of p.entries) {
    const hex = e.id.toString('hex');
    try {
      if (e.offset + e.length > data.length) throw new IntegrityError(`blob ${hex} lies past the end of the pack`);
      const sealed = data.subarray(e.offset, e.offset + e.length);
      reader.openBlob(mainThreadCodec(), p.salt, e, sealed, `blob ${hex}`);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  return problems;
}
