// A Serverless Job stopped while it streams an image into the store: the run fails with the job's
// end as the reason, cleanup removes the staging object and the Block snapshot, and the store still
// passes `check` (the packs it uploaded without an index are at most warnings).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalPlatform } from '../../emulator/platform.js';
import { checkStore } from '../../lib/kloset/store.js';
import { STORE_BUCKET } from '../../emulator/platform.js';
import { getRun, jobRunsFor, leftovers, listKeys, makeImage, MiB, runToEnd, s3, sdk, sleep, startPlatform, tempDir, withStore } from './helpers.js';

const execFileP = promisify(execFile);

describe('a job killed mid-stream', () => {
  let plat: LocalPlatform;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let volumeId: string;

  beforeAll(async () => {
    tmp = await tempDir();
    plat = await startPlatform({ inlineMaxBytes: 0 });
    const img = join(tmp.dir, 'big.img');
    // 200 MiB that neither compress nor deduplicate: the job streams for a while.
    await makeImage(img, 256, { 'etc/hostname': 'big\n' }, 200);
    const vol = await plat.local.emulator.seedVolume({ name: 'big-data', fromFile: img });
    volumeId = vol.id;
    await plat.setResources([{ name: 'big', volumeId }]);
  });

  afterAll(async () => {
    await plat?.stop();
    await tmp?.remove();
  });

  it('fails the run, cleans up, and leaves a store that passes check', async () => {
    const t = await plat.functions.call('trigger-export', { resource: 'big' });
    expect(t.status, JSON.stringify(t.body)).toBe(202);
    const runId: string = t.body.runId;
    const p = await plat.pipeline();
    const runs = p.runs(p.resource('big'));
    const store = s3(plat);
    const packs = async () => (await listKeys(store, STORE_BUCKET, 'kloset/packs/')).length;
    const packsBefore = await packs();

    // Drive the run until its job is running and has uploaded packs (it is mid-stream).
    const shipping = await runToEnd(plat, runId, { until: (r) => r.stage === 'shipping' && !!r.shipping?.jobRunId });
    const jobRunId = shipping.shipping!.jobRunId!;
    const { jobs } = sdk(plat);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const jr = await jobs.getJobRun({ jobRunId });
      const progress = await runs.getProgress(runId);
      if (jr.state === 'running' && progress && progress.bytesDone > 0 && (await packs()) > packsBefore) {
        expect(progress.bytesDone).toBeLessThan(progress.bytesTotal ?? Infinity);
        break;
      }
      expect(['queued', 'scheduled', 'running'], 'the job ended before it could be stopped: make the image bigger').toContain(jr.state);
      if (Date.now() > deadline) throw new Error('the job never reported progress');
      await sleep(50);
    }
    expect(await runs.getResult(runId)).toBeNull();
    await jobs.stopJobRun({ jobRunId });

    const run = await runToEnd(plat, runId);
    expect(run.status).toBe('failed');
    expect(run.error?.stage).toBe('shipping');
    expect(run.error?.message).toMatch(new RegExp(`job run ${jobRunId} ended canceled`));
    expect(run.leftovers).toBeUndefined();
    expect((await jobRunsFor(plat, runId)).map((j) => j.state)).toEqual(['canceled']);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    expect((await getRun(plat, runId)).result?.ok).toBe(false);

    await withStore(plat, async (repo) => {
      expect((await repo.listSnapshots()).filter((s) => s.tags.run === runId)).toEqual([]);
      const report = await checkStore(repo);
      expect(report.errors).toEqual([]);
    });
    store.destroy();
  });

  it('a job still streaming at the shipping deadline is stopped by cleanup; the run fails naming the stage', async () => {
    // New data over the first random file, so that nothing deduplicates and the job takes a while.
    const fresh = join(tmp.dir, 'fresh.bin');
    await execFileP('sh', ['-c', `head -c ${160 * MiB} /dev/urandom > "${fresh}"`]);
    await plat.local.emulator.writeVolume(volumeId, [{ offset: 64 * MiB, file: fresh }]);
    plat.env.KLOSET_STAGE_DEADLINES = JSON.stringify({ shipping: 1 });
    await plat.setResources([{ name: 'big', volumeId }]);
    const t = await plat.functions.call('trigger-export', { resource: 'big' });
    expect(t.status, JSON.stringify(t.body)).toBe(202);
    const runId: string = t.body.runId;
    const seen = new Set<string>();
    const run = await runToEnd(plat, runId, {
      until: (r) => {
        if (r.shipping?.jobRunId) seen.add(r.shipping.jobRunId);
        return false;
      },
    });
    expect(run.status).toBe('failed');
    expect(run.error?.stage).toBe('shipping');
    expect(run.error?.message).toMatch(/stage shipping did not finish within 1 s/);
    expect(run.result).toBeUndefined();
    expect(run.leftovers).toBeUndefined();
    const jobRuns = await jobRunsFor(plat, runId);
    expect(jobRuns.map((j) => j.id)).toEqual([...seen]);
    expect(jobRuns.map((j) => j.state)).toEqual(['canceled']);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    await withStore(plat, async (repo) => {
      expect((await repo.listSnapshots()).filter((s) => s.tags.run === runId)).toEqual([]);
      expect((await checkStore(repo)).errors).toEqual([]);
    });
  });
});
