// `scw-kloset backup / restore / runs` from the command line against a bare local Scaleway: no
// functions, no queues, no job definition. The CLI drives its runs itself to the end.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalScaleway, type LocalScaleway } from '../../emulator/local.js';
import { buildExt4Image } from '../../emulator/seed.js';
import { initStore, openStore } from '../../lib/kloset/store.js';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

const run = promisify(execFile);
const BIN = path.resolve('bin/scw-kloset.js');

async function hashPrefix(file: string, length: number): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file, { start: 0, end: length - 1 })) h.update(c as Buffer);
  return h.digest('hex');
}

describe('scw-kloset backup / restore / runs', () => {
  let local: LocalScaleway;
  let work: string;
  let env: NodeJS.ProcessEnv;
  let volumeId: string;
  let volumeSize: number;
  const cli = (args: string[]) => run(process.execPath, [BIN, ...args], { env, maxBuffer: 64 << 20 });

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'kloset-cli-'));
    local = await startLocalScaleway({ timings: { volumeCreateMs: 30, snapshotCreateMs: 30, exportMs: 30, importMs: 30, deleteMs: 30, jobStartMs: 30 }, buckets: ['staging', 'store'] });
    const img = path.join(work, 'vol.img');
    await buildExt4Image(img, { sizeMiB: 64, files: { 'etc/hostname': 'cli-test\n', 'data/a.bin': { size: 6 << 20, seed: 'cli' } } });
    const vol = await local.emulator.seedVolume({ name: 'cli-data', fromFile: img });
    volumeId = vol.id;
    volumeSize = vol.size;
    const s3 = { endpoint: local.s3Endpoint, region: local.region, accessKeyId: local.accessKey, secretAccessKey: local.secretKey };
    await initStore('s3://store/kloset', 'cli-pass', { kdf: { name: 'argon2id', t: 1, m: 8192, p: 1 }, s3 });
    const resources = [{
      name: 'cli', accessKey: local.accessKey, endpoint: vol.id, bucket: 'staging', projectId: local.projectId,
      zone: local.zone, environment: 'staging', store: 's3://store/kloset',
    }];
    await writeFile(path.join(work, 'resources.json'), JSON.stringify(resources));
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      KLOSET_RESOURCES_FILE: path.join(work, 'resources.json'),
      KLOSET_API_URL: local.apiUrl,
      KLOSET_S3_ENDPOINT: local.s3Endpoint,
      KLOSET_SECRET_KEY: local.secretKey,
      KLOSET_PASSPHRASE: 'cli-pass',
    };
  });

  afterAll(async () => {
    await local?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('backs up, restores into a new volume with the same content, and lists the runs', async () => {
    const b = await cli(['backup', '--resource', 'cli', '--json']);
    const backup = JSON.parse(b.stdout);
    expect(backup.status).toBe('succeeded');
    expect(backup.result.bytesRead).toBeGreaterThan(0);

    // The store has the snapshot, with the resource's metadata.
    const repo = await openStore('s3://store/kloset', 'cli-pass', { endpoint: local.s3Endpoint, region: local.region, accessKeyId: local.accessKey, secretAccessKey: local.secretKey });
    const snap = await repo.loadSnapshot(backup.result.storeSnapshot);
    expect(snap.source.volumeId).toBe(volumeId);
    expect(snap.environment).toBe('staging');
    await repo.backend.close();

    const r = await cli(['restore', '--resource', 'cli', '--snapshot', backup.result.storeSnapshot.slice(0, 10), '--volume-name', 'cli-restored', '--json']);
    const restore = JSON.parse(r.stdout);
    expect(restore.status).toBe('succeeded');
    const [a, c] = await Promise.all([hashPrefix(local.emulator.volumePath(volumeId), volumeSize), hashPrefix(local.emulator.volumePath(restore.volumeId), volumeSize)]);
    expect(c).toBe(a);

    const list = JSON.parse((await cli(['runs', '--json'])).stdout) as { id: string; status: string }[];
    expect(list.map((x) => x.id).sort()).toEqual([backup.id, restore.id].sort());
    const shown = await cli(['runs', 'show', restore.id]);
    expect(shown.stdout).toContain(`new volume ${restore.volumeId}`);
  });

  it('refuses an unknown resource and a bad restore target with a clear message', async () => {
    await expect(cli(['backup', '--resource', 'nope'])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('unknown resource "nope"') });
    await expect(cli(['restore', '--resource', 'cli', '--snapshot', 'abcd', '--volume-name', 'x', '--iops', '7'])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('target.perfIops'),
    });
  });
});
