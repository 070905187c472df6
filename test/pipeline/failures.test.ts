// Every failure ends: an export that ends in error, a stage past its deadline while Scaleway is still
// busy; and Scaleway answering 429/503 to a share of calls does not fail a backup (backoff).
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LocalPlatform, LocalResource } from '../../emulator/platform.js';
import type { RunRecord } from '../../lib/pipeline/runs.js';
import { allVolumes, getRun, jobRunsFor, leftovers, makeImage, MiB, runToEnd, s3, sdk, setInlineMax, spyActions, startPlatform, stagingObjects, tempDir, withStore } from './helpers.js';

describe('failures end, and clean up', () => {
  let plat: LocalPlatform;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let resources: LocalResource[];
  let volumeId: string;

  beforeAll(async () => {
    tmp = await tempDir();
    plat = await startPlatform({ inlineMaxBytes: 0 });
    const img = join(tmp.dir, 'f.img');
    await makeImage(img, 64, { 'etc/hostname': 'fail\n', 'data/a.bin': { size: 6 * MiB, seed: 'fail-a' } });
    volumeId = (await plat.local.emulator.seedVolume({ name: 'fail-data', fromFile: img })).id;
    resources = [{ name: 'app', volumeId, environment: 'test', dataClass: 'internal' }];
    await plat.setResources(resources);
  });

  afterEach(async () => {
    plat.local.emulator.faults.clear();
    plat.local.emulator.faults.random = Math.random;
    plat.env.KLOSET_STAGE_DEADLINES = '{}';
    await plat.setResources(resources);
  });

  afterAll(async () => {
    await plat?.stop();
    await tmp?.remove();
  });

  async function trigger(): Promise<string> {
    const r = await plat.functions.call('trigger-export', { resource: 'app' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    return r.body.runId as string;
  }

  const storeSnapshotsOf = (runId: string) => withStore(plat, async (repo) => (await repo.listSnapshots()).filter((s) => s.tags.run === runId));

  it('an export that ends in error: the run fails with the reason and leaves nothing', async () => {
    plat.local.emulator.faults.failNextExports(1);
    const runId = await trigger();
    const run = await runToEnd(plat, runId);
    expect(run.status).toBe('failed');
    expect(run.stage).toBe('done');
    expect(run.error?.stage).toBe('exporting');
    expect(run.error?.message).toMatch(/export of Block snapshot .* ended in error/);
    expect(run.blockSnapshotId).toBeDefined();
    expect(run.leftovers).toBeUndefined();
    expect(run.shipping).toBeUndefined();
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    expect(await jobRunsFor(plat, runId)).toEqual([]);
    expect(await storeSnapshotsOf(runId)).toEqual([]);
  });

  it('an export past its stage deadline: failed naming the stage; the snapshot is removed once it is no longer busy', async () => {
    plat.env.KLOSET_STAGE_DEADLINES = JSON.stringify({ exporting: 1 });
    await plat.setResources(resources);
    plat.local.emulator.faults.slowExports(4000);
    const runId = await trigger();
    const seen: { stage: string; status: string; snapshot?: string }[] = [];
    const failedAt = await runToEnd(plat, runId, { until: (r) => r.stage === 'cleaning' });
    expect(failedAt.status).toBe('running');
    expect(failedAt.outcome).toBe('failed');
    expect(failedAt.error?.stage).toBe('exporting');
    expect(failedAt.error?.message).toMatch(/stage exporting did not finish within 1 s/);
    // Cleanup waits: the snapshot is still exporting, so it cannot be deleted yet.
    const busy = await sdk(plat).block.getSnapshot({ snapshotId: failedAt.blockSnapshotId!, zone: 'fr-par-1' });
    expect(busy.status).toBe('exporting');
    const run = await runToEnd(plat, runId, {
      until: (r) => {
        seen.push({ stage: r.stage, status: r.status });
        return false;
      },
    });
    expect(seen.some((s) => s.stage === 'cleaning' && s.status === 'running')).toBe(true);
    expect(run.status).toBe('failed');
    expect(run.error?.message).toMatch(/exporting/);
    expect(run.leftovers).toBeUndefined();
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    expect(await jobRunsFor(plat, runId)).toEqual([]);
  });

  it('Scaleway answering 429 and 503 to a share of calls: the backup still succeeds (backoff)', async () => {
    const spy = spyActions(plat);
    try {
      const faults = plat.local.emulator.faults;
      // Deterministic: of every three calls, one gets 429, one 503, one goes through.
      const cycle = [0.1, 0.9, 0.5, 0.9, 0.9];
      let i = 0;
      faults.random = () => cycle[i++ % cycle.length]!;
      faults.addErrors({ status: 429, share: 0.3 });
      faults.addErrors({ status: 503, share: 0.6 });
      // The HTTP call itself may have to back off too.
      const runId = await trigger();
      const run: RunRecord = await runToEnd(plat, runId);
      faults.clear(); // the checks below use the API too
      expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
      expect(spy.faulted(429)).toBeGreaterThan(3);
      expect(spy.faulted(503)).toBeGreaterThan(3);
      expect(run.result?.storeSnapshot).toBeDefined();
      expect((await jobRunsFor(plat, runId)).map((j) => j.state)).toEqual(['succeeded']);
      expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
      expect((await storeSnapshotsOf(runId)).map((s) => s.id)).toEqual([run.result!.storeSnapshot]);
      expect(await stagingObjects(plat)).toEqual([]);
    } finally {
      spy.restore();
    }
  });

  it('what cleanup cannot remove is recorded on the run, by kind and id', async () => {
    plat.local.emulator.faults.denyAction('deleteSnapshot');
    const runId = await trigger();
    const run = await runToEnd(plat, runId);
    plat.local.emulator.faults.clear();
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(run.leftovers).toEqual([{ kind: 'block-snapshot', id: run.blockSnapshotId, error: expect.stringMatching(/denied|permission/i) }]);
    // The rest was removed; the snapshot is still there, as recorded.
    const left = await leftovers(plat, run);
    expect(left.staging).toEqual([]);
    expect(left.snapshots).toEqual([`${run.blockSnapshotId} (available)`]);
  });

  it('a restore whose staging object is damaged before the import: failed, and nothing left (no snapshot, no volume)', async () => {
    const snap = await withStore(plat, async (repo) => (await repo.listSnapshots())[0]);
    expect(snap, 'needs a store snapshot from the tests above').toBeDefined();
    await setInlineMax(plat, 1024 ** 4, resources);
    const r = await plat.functions.call('restore-upload', { resource: 'app', snapshot: snap!.id, target: { volumeName: 'never' } });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const runId: string = r.body.runId;
    const uploaded = await getRun(plat, runId);
    expect(uploaded.stage).toBe('importing');
    // The import message is still queued: damage the uploaded image first.
    const c = s3(plat);
    try {
      await c.send(new PutObjectCommand({ Bucket: plat.local.bucket, Key: uploaded.stagingKey, Body: Buffer.alloc(1 << 20, 7) }));
    } finally {
      c.destroy();
    }
    const run = await runToEnd(plat, runId);
    expect(run.status).toBe('failed');
    expect(run.error?.stage).toBe('importing');
    expect(run.leftovers).toBeUndefined();
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    expect((await allVolumes(plat)).filter((v) => v.name === 'never')).toEqual([]);
  });
});
