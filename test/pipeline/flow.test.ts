// End to end through the functions' HTTP interface: a backup by the Serverless Job, a backup
// streamed by the function itself, an incremental backup that adds far fewer bytes, and a restore
// into a new volume whose content equals the source. After each run: nothing left behind.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalPlatform, LocalResource } from '../../emulator/platform.js';
import { ext4WriteFiles } from '../../emulator/seed.js';
import type { RunRecord } from '../../lib/pipeline/runs.js';
import { cmpPrefix, jobRunsFor, leftovers, makeImage, MiB, runToEnd, sdk, setInlineMax, startPlatform, tempDir, withStore } from './helpers.js';

describe('backup and restore through the functions', () => {
  let plat: LocalPlatform;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let volumeId: string;
  let resources: LocalResource[];
  let sourceSize: number;
  const done: Record<string, RunRecord> = {};

  beforeAll(async () => {
    tmp = await tempDir();
    plat = await startPlatform({ inlineMaxBytes: 0 });
    const img = join(tmp.dir, 'source.img');
    await makeImage(img, 128, {
      'etc/hostname': 'web-1\n',
      'etc/hello.txt': 'hello\n',
      'data/blob.bin': { size: 24 * MiB, seed: 'blob' },
      'data/other.bin': { size: 4 * MiB, seed: 'other' },
    });
    sourceSize = (await stat(img)).size;
    const vol = await plat.local.emulator.seedVolume({ name: 'web-data', fromFile: img });
    volumeId = vol.id;
    resources = [{ name: 'web', volumeId, environment: 'production', dataClass: 'critical' }];
    await plat.setResources(resources);
  });

  afterAll(async () => {
    await plat?.stop();
    await tmp?.remove();
  });

  async function backup(): Promise<RunRecord> {
    const r = await plat.functions.call('trigger-export', { resource: 'web' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.runId).toMatch(/^web-backup-/);
    return runToEnd(plat, r.body.runId);
  }

  async function expectSucceededBackup(run: RunRecord, by: 'job' | 'function') {
    if (process.env.DEBUG_TIMINGS) console.log(run.stages.map((s) => `${s.stage} ${Date.parse(s.endedAt!) - Date.parse(s.startedAt)}ms`).join(', '), run.result);
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(run.stage).toBe('done');
    expect(run.error).toBeUndefined();
    expect(run.leftovers).toBeUndefined();
    expect(run.shipping?.by).toBe(by);
    expect(run.result?.ok).toBe(true);
    expect(run.result?.by).toBe(by);
    expect(run.result?.storeSnapshot).toMatch(/^[0-9a-f]{64}$/);
    expect(run.result!.bytesRead).toBeGreaterThan(0);
    expect(run.result!.bytesAdded).toBeGreaterThan(0);
    // Every stage entered is timed, in order.
    expect(run.stages.map((s) => s.stage)).toEqual(['snapshotting', 'exporting', 'shipping', 'cleaning']);
    for (const s of run.stages) {
      expect(s.endedAt, s.stage).toBeDefined();
      expect(Date.parse(s.endedAt!)).toBeGreaterThanOrEqual(Date.parse(s.startedAt));
    }
    expect(run.endedAt).toBeDefined();
    // Nothing left behind: no staging object, no multipart upload, no Block snapshot tagged with the run.
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    // The store snapshot carries the resource's metadata.
    const snap = await withStore(plat, (repo) => repo.loadSnapshot(run.result!.storeSnapshot!));
    expect(snap.source.volumeId).toBe(volumeId);
    expect(snap.source.zone).toBe('fr-par-1');
    expect(snap.source.projectId).toBe(plat.local.projectId);
    expect(snap.source.name).toBe('web-data');
    expect(snap.environment).toBe('production');
    expect(snap.dataClass).toBe('critical');
    expect(snap.tags).toMatchObject({ run: run.id, resource: 'web' });
    expect(snap.bytesRead).toBe(run.result!.bytesRead);
    // The result also counts the snapshot object itself, written after its record.
    expect(snap.bytesAdded).toBeLessThanOrEqual(run.result!.bytesAdded!);
    expect(run.result!.bytesAdded! - snap.bytesAdded).toBeLessThan(64 * 1024);
  }

  it('backs up through the Serverless Job (inlineMaxBytes 0)', async () => {
    const run = await backup();
    await expectSucceededBackup(run, 'job');
    const jobRuns = await jobRunsFor(plat, run.id);
    expect(jobRuns.map((j) => j.state)).toEqual(['succeeded']);
    expect(run.shipping?.jobRunId).toBe(jobRuns[0]!.id);
    done.first = run;
  });

  it('backs up an incremental change, adding far fewer bytes (streamed by the function)', async () => {
    // The next day: a small file changes, a new one appears; the 24 MiB blob is untouched.
    await ext4WriteFiles(plat.local.emulator.volumePath(volumeId), {
      'etc/hello.txt': 'hello, day two\n',
      'var/log/app.log': { size: 512 * 1024, seed: 'day2-log' },
    });
    await setInlineMax(plat, 1024 ** 4, resources);
    const run = await backup();
    await expectSucceededBackup(run, 'function');
    expect(await jobRunsFor(plat, run.id)).toEqual([]);
    const first = done.first!.result!;
    expect(run.result!.storeSnapshot).not.toBe(first.storeSnapshot);
    expect(run.result!.bytesAdded).toBeGreaterThan(0);
    expect(run.result!.bytesAdded).toBeLessThan(first.bytesAdded! * 0.3);
    done.second = run;
  });

  it('restores the second snapshot into a new volume with the same content (job path)', async () => {
    expect(done.second, 'needs the incremental backup').toBeDefined();
    await setInlineMax(plat, 0, resources);
    const storeSnapshot = done.second!.result!.storeSnapshot!;
    const r = await plat.functions.call('restore-upload', {
      resource: 'web',
      snapshot: storeSnapshot.slice(0, 12),
      target: { volumeName: 'restored', zone: 'fr-par-1' },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.runId).toMatch(/^web-restore-/);
    const run = await runToEnd(plat, r.body.runId);
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(run.restore?.storeSnapshot).toBe(storeSnapshot);
    expect(run.stages.map((s) => s.stage)).toEqual(['uploading', 'importing', 'creating-volume', 'cleaning']);
    expect(run.shipping?.by).toBe('job');
    expect((await jobRunsFor(plat, run.id)).map((j) => j.state)).toEqual(['succeeded']);
    expect(run.volumeId).toBeDefined();
    expect(run.importedSnapshotId).toBeDefined();
    expect(run.leftovers).toBeUndefined();
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });

    const v = await sdk(plat).block.getVolume({ volumeId: run.volumeId!, zone: 'fr-par-1' });
    expect(v.name).toBe('restored');
    expect(v.status).toBe('available');
    // The imported snapshot is gone; the volume is the only thing the restore leaves.
    await expect(sdk(plat).block.getSnapshot({ snapshotId: run.importedSnapshotId!, zone: 'fr-par-1' })).rejects.toThrow();
    const restored = plat.local.emulator.volumePath(run.volumeId!);
    const source = plat.local.emulator.volumePath(volumeId);
    const volumeSize = (await stat(source)).size;
    expect(volumeSize).toBeGreaterThan(sourceSize);
    expect((await stat(restored)).size).toBeGreaterThanOrEqual(volumeSize);
    expect(await cmpPrefix(source, restored, volumeSize)).toBe(true);
  });

  it('restores the first snapshot (streamed by the function) into a volume holding the first day', async () => {
    expect(done.first, 'needs the first backup').toBeDefined();
    await setInlineMax(plat, 1024 ** 4, resources);
    const r = await plat.functions.call('restore-upload', {
      resource: 'web',
      snapshot: done.first!.result!.storeSnapshot!,
      target: { volumeName: 'day-one', perfIops: 15000, size: 2_000_000_000 },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const run = await runToEnd(plat, r.body.runId);
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(run.shipping?.by).toBe('function');
    expect(await jobRunsFor(plat, run.id)).toEqual([]);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    const v = await sdk(plat).block.getVolume({ volumeId: run.volumeId!, zone: 'fr-par-1' });
    expect(v).toMatchObject({ name: 'day-one', size: 2_000_000_000, zone: 'fr-par-1' });
    expect(v.specs?.perfIops).toBe(15000);
    // The first day's image, not today's volume.
    const restored = plat.local.emulator.volumePath(run.volumeId!);
    expect(await cmpPrefix(join(tmp.dir, 'source.img'), restored, sourceSize)).toBe(true);
    expect(await cmpPrefix(plat.local.emulator.volumePath(volumeId), restored, sourceSize)).toBe(false);
  });
});
