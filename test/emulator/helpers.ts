// Shared set-up of the emulator tests: a whole local Scaleway with short timings, and SDK clients.
import { createClient } from '@scaleway/sdk';
import { Block, Jobs } from '@scaleway/sdk';
import { startLocalScaleway, type LocalScaleway } from '../../emulator/local.js';
import { makeS3Client } from '../../lib/scaleway/s3.js';

export const TEST_TIMINGS = {
  volumeCreateMs: 30,
  snapshotCreateMs: 30,
  exportMs: 30,
  importMs: 30,
  deleteMs: 30,
  jobStartMs: 30,
};

export async function startTestScaleway(opts: { dir?: string } = {}): Promise<LocalScaleway> {
  return startLocalScaleway({ dir: opts.dir, timings: TEST_TIMINGS });
}

export function sdkClients(local: LocalScaleway, secretKey = local.secretKey) {
  const client = createClient({
    accessKey: local.accessKey,
    secretKey,
    defaultProjectId: local.projectId,
    defaultRegion: local.region as 'fr-par',
    defaultZone: local.zone as 'fr-par-1',
    apiURL: local.apiUrl,
  });
  return {
    client,
    block: new Block.v1alpha1.API(client),
    blockV1: new Block.v1.API(client),
    jobs: new Jobs.v1alpha1.API(client),
  };
}

export function s3Client(local: LocalScaleway) {
  return makeS3Client({
    endpoint: local.s3Endpoint,
    region: local.region,
    accessKeyId: local.accessKey,
    secretAccessKey: local.secretKey,
  });
}

/** Polls `get` until `done` holds (or times out after `timeoutMs`). */
export async function waitFor<T>(get: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const GB = 1_000_000_000;
