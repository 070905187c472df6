// The store's public face: open a location (directory or s3://bucket/prefix), then back up, restore,
// list and check. Callers (the CLI, the functions, the job) use only this module.
import { type Backend } from './backend.js';
import { FsBackend } from './backends/fs.js';
import type { S3Options } from '../scaleway/s3-location.js';
import { type InitOptions, Repository, type StoreConfig } from './repository.js';

export { Repository, StoreExistsError, NotAStoreError, SnapshotNotFoundError } from './repository.js';
export { WrongPassphraseError, UnsupportedFormatError } from './keys.js';
export { IntegrityError, DEFAULT_KDF, type KdfParams } from './crypto.js';
export { Archiver, type BackupResult, type BackupProgress } from './archiver.js';
export { Restorer, type RestoreSink, type RestoreResult, type RestoreProgress } from './restorer.js';
export { BlobWorkers } from './workers.js';
export { checkStore, type CheckReport, type CheckProblem } from './checker.js';
export { type Snapshot, type SnapshotMeta, type SnapshotFilter, matchesFilter } from './snapshot.js';
export { type Backend, ObjectNotFoundError, ShortReadError } from './backend.js';

/** A directory, or s3://bucket/prefix (the AWS SDK is loaded only then: it is slow to load). */
export async function openBackend(location: string, s3?: S3Options): Promise<Backend> {
  if (location.startsWith('s3://')) {
    const { makeS3Client, parseS3Url, s3OptionsFromEnv } = await import('../scaleway/s3.js');
    const { S3Backend } = await import('./backends/s3.js');
    const { bucket, key } = parseS3Url(location);
    return new S3Backend(makeS3Client(s3 ?? s3OptionsFromEnv()), bucket, key);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) throw new Error(`unsupported store location: ${location}`);
  return new FsBackend(location);
}

export async function initStore(location: string, passphrase: string, opts: InitOptions & { s3?: S3Options } = {}): Promise<StoreConfig> {
  const backend = await openBackend(location, opts.s3);
  try {
    return await Repository.init(backend, passphrase, opts);
  } finally {
    await backend.close();
  }
}

export async function openStore(location: string, passphrase: string, s3?: S3Options): Promise<Repository> {
  const backend = await openBackend(location, s3);
  try {
    return await Repository.open(backend, passphrase);
  } catch (err) {
    await backend.close();
    throw err;
  }
}
