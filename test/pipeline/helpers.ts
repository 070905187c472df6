// Shared set-up of the pipeline tests: the whole product on the local Scaleway (functions over HTTP,
// real S3/SQS server, Block + Jobs emulator), a loop that drives a run to its end the way Scaleway's
// triggers would, and ways to see what a run left behind (staging objects, Block snapshots, job runs).
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { Block, Jobs, createClient } from '@scaleway/sdk';
import { startLocalPlatform, type LocalPlatform, type LocalPlatformOptions } from '../../emulator/platform.js';
import { buildExt4Image, type Ext4Files } from '../../emulator/seed.js';
import { openStore, type Repository } from '../../lib/kloset/store.js';
import type { RunRecord } from '../../lib/pipeline/runs.js';
import { makeS3Client } from '../../lib/scaleway/s3.js';

const execFileP = promisify(execFile);

export const FAST = { volumeCreateMs: 50, snapshotCreateMs: 50, exportMs: 50, importMs: 50, deleteMs: 50, jobStartMs: 50 };
/** A cheap KDF: tests open the store many times. */
export const TEST_KDF = { name: 'argon2id' as const, t: 1, m: 8192, p: 1 };
export const MiB = 1024 * 1024;

export async function startPlatform(opts: LocalPlatformOptions = {}): Promise<LocalPlatform> {
  return startLocalPlatform({ timings: FAST, kdf: TEST_KDF, inlineMaxBytes: 0, ...opts });
}

/** Switches between the job (0) and the inline path (large) for the next calls. */
export async function setInlineMax(plat: LocalPlatform, bytes: number, resources: Parameters<LocalPlatform['setResources']>[0]): Promise<void> {
  plat.env.KLOSET_INLINE_MAX_BYTES = String(bytes);
  await plat.setResources(resources);
}

export async function tempDir(prefix = 'scw-kloset-pipeline-'): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** An ext4 image of `sizeMiB` with `files`, and optionally a file of `randomMiB` MiB from /dev/urandom. */
export async function makeImage(path: string, sizeMiB: number, files: Ext4Files = {}, randomMiB = 0): Promise<void> {
  if (randomMiB > 0) {
    const tree = `${path}.tree`;
    await mkdir(join(tree, 'data'), { recursive: true });
    await execFileP('sh', ['-c', `head -c ${randomMiB * MiB} /dev/urandom > "${join(tree, 'data', 'random.bin')}"`]);
    try {
      await buildExt4Image(path, { sizeMiB, files, dir: tree });
    } finally {
      await rm(tree, { recursive: true, force: true });
    }
  } else {
    await buildExt4Image(path, { sizeMiB, files });
  }
}

export function s3(plat: LocalPlatform): S3Client {
  return makeS3Client({ endpoint: plat.local.s3Endpoint, region: plat.local.region, accessKeyId: plat.local.accessKey, secretAccessKey: plat.local.secretKey });
}

export function sdk(plat: LocalPlatform) {
  const client = createClient({
    accessKey: plat.local.accessKey,
    secretKey: plat.local.secretKey,
    defaultProjectId: plat.local.projectId,
    defaultRegion: plat.local.region as 'fr-par',
    defaultZone: plat.local.zone as 'fr-par-1',
    apiURL: plat.local.apiUrl,
  });
  return { block: new Block.v1alpha1.API(client), jobs: new Jobs.v1alpha1.API(client) };
}

export async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of out.Contents ?? []) keys.push(o.Key!);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Objects under kloset-staging/ in the staging bucket. */
export async function stagingObjects(plat: LocalPlatform): Promise<string[]> {
  const c = s3(plat);
  try {
    return await listKeys(c, plat.local.bucket, 'kloset-staging/');
  } finally {
    c.destroy();
  }
}

/**
 * Unfinished multipart uploads under kloset-staging/ (null if the server cannot list them). Note: the
 * local S3 (fauxqs) answers `?uploads` with a plain object listing, so locally this finds none.
 */
export async function stagingUploads(plat: LocalPlatform): Promise<string[] | null> {
  const c = s3(plat);
  try {
    const out = await c.send(new ListMultipartUploadsCommand({ Bucket: plat.local.bucket, Prefix: 'kloset-staging/' }));
    return (out.Uploads ?? []).map((u) => u.Key!);
  } catch {
    return null;
  } finally {
    c.destroy();
  }
}

/** Every object under kloset-runs/ (records, active markers, results, progress). */
export async function runObjects(plat: LocalPlatform): Promise<string[]> {
  const c = s3(plat);
  try {
    return (await listKeys(c, plat.local.bucket, 'kloset-runs/')).sort();
  } finally {
    c.destroy();
  }
}

/** Block snapshots tagged with the run id (any status), through the SDK. */
export async function taggedSnapshots(plat: LocalPlatform, runId: string, zone = plat.local.zone) {
  return (await sdk(plat).block.listSnapshots({ zone: zone as 'fr-par-1', tags: [`kloset-run=${runId}`], pageSize: 100 })).snapshots;
}

export async function allSnapshots(plat: LocalPlatform, zone = plat.local.zone) {
  return (await sdk(plat).block.listSnapshots({ zone: zone as 'fr-par-1', pageSize: 100 })).snapshots;
}

export async function allVolumes(plat: LocalPlatform, zone = plat.local.zone) {
  return (await sdk(plat).block.listVolumes({ zone: zone as 'fr-par-1', pageSize: 100 })).volumes;
}

/** Job runs of the platform's job definition started for `runId`. */
export async function jobRunsFor(plat: LocalPlatform, runId: string) {
  const out = await sdk(plat).jobs.listJobRuns({ jobDefinitionId: plat.jobDefinitionId, pageSize: 100 });
  return out.jobRuns.filter((j) => j.environmentVariables?.KLOSET_RUN_ID === runId);
}

export async function getRun(plat: LocalPlatform, runId: string): Promise<RunRecord> {
  const p = await plat.pipeline();
  const run = await p.runs(p.resources[0]!).get(runId);
  if (!run) throw new Error(`no run record ${runId}`);
  return run;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface DriveOptions {
  timeoutMs?: number;
  /** Pause between poll ticks. */
  everyMs?: number;
  /** Two concurrent poll-export ticks per step instead of one. */
  doubleTicks?: boolean;
  /** Called after each step with the run record; return true to stop early. */
  until?: (run: RunRecord) => boolean;
}

/**
 * Drives a run the way Scaleway would: poll-export's cron tick over HTTP, then every queued message
 * delivered to its function, until the run is no longer running (or `until` holds).
 */
export async function runToEnd(plat: LocalPlatform, runId: string, opts: DriveOptions = {}): Promise<RunRecord> {
  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  for (;;) {
    const ticks = opts.doubleTicks
      ? (await Promise.all([plat.functions.cronTick(new Date(), 'poll-export'), plat.functions.cronTick(new Date(), 'poll-export')])).flat()
      : await plat.functions.cronTick(new Date(), 'poll-export');
    for (const t of ticks) if (t.status !== 200) throw new Error(`poll-export answered ${t.status}: ${JSON.stringify(t.body)}`);
    await plat.functions.drainQueues();
    const run = await getRun(plat, runId);
    if (run.status !== 'running' || opts.until?.(run)) return run;
    if (Date.now() > deadline) throw new Error(`run ${runId} still running at stage ${run.stage}: ${JSON.stringify(run)}`);
    await sleep(opts.everyMs ?? 100);
  }
}

/** SHA-256 of the first `n` bytes of a file. */
export async function hashPrefix(path: string, n: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { start: 0, end: n - 1 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Whether the first `n` bytes of two files are equal (`cmp -n`). */
export async function cmpPrefix(a: string, b: string, n: number): Promise<boolean> {
  try {
    await execFileP('cmp', ['-s', '-n', String(n), a, b]);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 1) return false;
    throw err;
  }
}

export function testStore(plat: LocalPlatform): Promise<Repository> {
  return openStore(plat.storeLocation, plat.env.KLOSET_PASSPHRASE!, {
    endpoint: plat.local.s3Endpoint,
    region: 'fr-par',
    accessKeyId: plat.local.accessKey,
    secretAccessKey: plat.local.secretKey,
  });
}

export async function withStore<T>(plat: LocalPlatform, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const repo = await testStore(plat);
  try {
    return await fn(repo);
  } finally {
    await repo.backend.close();
  }
}

/**
 * Counts the Scaleway API calls the emulator receives, by SDK action name (createSnapshot,
 * exportSnapshotToObjectStorage, startJobDefinition...), and the fault answers it gave.
 */
export function spyActions(plat: LocalPlatform) {
  const faults = plat.local.emulator.faults;
  const original = faults.errorFor.bind(faults);
  const calls = new Map<string, number>();
  const faulted = new Map<number, number>();
  faults.errorFor = (method, path, action, resource) => {
    calls.set(action, (calls.get(action) ?? 0) + 1);
    const err = original(method, path, action, resource);
    if (err) faulted.set(err.status, (faulted.get(err.status) ?? 0) + 1);
    return err;
  };
  return {
    count: (action: string) => calls.get(action) ?? 0,
    faulted: (status: number) => faulted.get(status) ?? 0,
    reset: () => {
      calls.clear();
      faulted.clear();
    },
    restore: () => {
      faults.errorFor = original;
    },
  };
}

/** Asserts-friendly view of what a finished run left: staging objects, tagged snapshots, uploads. */
export async function leftovers(plat: LocalPlatform, run: RunRecord) {
  const staging = (await stagingObjects(plat)).filter((k) => k.includes(run.id));
  const uploads = (await stagingUploads(plat))?.filter((k) => k.includes(run.id)) ?? [];
  const zone = run.restore?.target.zone ?? plat.local.zone;
  const snapshots = (await taggedSnapshots(plat, run.id, zone)).map((s) => `${s.id} (${s.status})`);
  return { staging, uploads, snapshots };
}
