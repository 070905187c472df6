// Idempotent stages: overlapping cron ticks, concurrent poll ticks, duplicated queue messages and
// retried functions create no second run, Block snapshot, export, job run or store snapshot.
import { join } from 'node:path';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalPlatform, LocalResource } from '../../emulator/platform.js';
import type { RunRecord } from '../../lib/pipeline/runs.js';
import { makeSqsClient } from '../../lib/scaleway/clients.js';
import { allVolumes, getRun, jobRunsFor, leftovers, makeImage, MiB, runObjects, runToEnd, setInlineMax, sleep, spyActions, startPlatform, taggedSnapshots, tempDir, withStore } from './helpers.js';

describe('duplicates create nothing twice', () => {
  let plat: LocalPlatform;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let resources: LocalResource[];
  let spy: ReturnType<typeof spyActions>;
  let exportsStarted = 0;

  beforeAll(async () => {
    tmp = await tempDir();
    plat = await startPlatform({ inlineMaxBytes: 0 });
    const img = join(tmp.dir, 'dup.img');
    await makeImage(img, 64, { 'etc/hostname': 'dup\n', 'data/a.bin': { size: 8 * MiB, seed: 'dup-a' } });
    const vol = await plat.local.emulator.seedVolume({ name: 'dup-data', fromFile: img });
    resources = [{ name: 'dup', volumeId: vol.id, environment: 'staging' }];
    await plat.setResources(resources);
    spy = spyActions(plat);
    // Exports the emulator accepted (refused duplicates never get this far).
    const faults = plat.local.emulator.faults;
    const take = faults.takeExportFailure.bind(faults);
    faults.takeExportFailure = () => {
      exportsStarted++;
      return take();
    };
  });

  afterAll(async () => {
    spy?.restore();
    await plat?.stop();
    await tmp?.remove();
  });

  const recordIds = async () => (await runObjects(plat)).filter((k) => /^kloset-runs\/[^/]+(?<!\.result|\.progress)\.json$/.test(k));
  const storeSnapshotsOf = (runId: string) => withStore(plat, async (repo) => (await repo.listSnapshots()).filter((s) => s.tags.run === runId));

  /**
   * Exports the emulator accepted in the step that started the export. The emulator checks the
   * snapshot's status before an await and sets `exporting` after it (emulator/block.ts), so two
   * export calls arriving together are both accepted, where Scaleway refuses the second one (the
   * pipeline catches that refusal). That step may race there; no later step may export again.
   */
  let exportsInExportStep = 0;

  /** Two concurrent poll-export ticks per step; queued messages are left in the queue until `stage`. */
  async function doublePollUntil(runId: string, done: (run: RunRecord) => boolean): Promise<RunRecord> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const was = (await getRun(plat, runId)).stage;
      const ticks = await Promise.all([plat.functions.cronTick(new Date(), 'poll-export'), plat.functions.cronTick(new Date(), 'poll-export')]);
      for (const t of ticks.flat()) expect(t.status).toBe(200);
      const run = await getRun(plat, runId);
      if (was === 'snapshotting' && run.stage !== 'snapshotting') exportsInExportStep = exportsStarted;
      if (done(run)) return run;
      if (run.status !== 'running') throw new Error(`run ended early: ${JSON.stringify(run.error)}`);
      if (Date.now() > deadline) throw new Error(`stuck at ${run.stage}`);
      await sleep(50);
    }
  }

  it('overlapping cron ticks, concurrent polls and a duplicated ship message: one run, snapshot, export, job run, store snapshot', async () => {
    spy.reset();
    exportsStarted = 0;
    exportsInExportStep = 0;
    const before = await recordIds();
    // Two cron deliveries of trigger-export in the same minute (Scaleway may deliver a tick twice).
    const [a, b] = await Promise.all([
      plat.functions.call('trigger-export', { resource: 'dup', trigger: 'cron' }),
      plat.functions.call('trigger-export', { resource: 'dup', trigger: 'cron' }),
    ]);
    expect([a.status, b.status].sort(), JSON.stringify([a.body, b.body])).toEqual(expect.arrayContaining([202]));
    for (const r of [a, b]) expect([200, 202]).toContain(r.status);
    const runId: string = a.body.runId;
    expect(b.body.runId).toBe(runId);
    expect(runId).toMatch(/^dup-backup-\d{8}T\d{4}$/);
    expect((await recordIds()).length).toBe(before.length + 1);
    expect(spy.count('createSnapshot')).toBe(1);
    expect((await taggedSnapshots(plat, runId)).length).toBe(1);

    // Poll twice concurrently at each step until the ship message is queued (not yet delivered).
    const shipping = await doublePollUntil(runId, (r) => r.stage === 'shipping');
    expect(shipping.shipping).toBeUndefined();
    // The same ship message once more, as a redelivery would.
    const sqs = makeSqsClient({ endpoint: plat.local.sqsEndpoint, region: plat.local.region, accessKeyId: plat.local.accessKey, secretAccessKey: plat.local.secretKey });
    try {
      await sqs.send(new SendMessageCommand({ QueueUrl: plat.env.KLOSET_SHIP_QUEUE_URL!, MessageBody: JSON.stringify({ type: 'ship', runId, resource: 'dup' }) }));
    } finally {
      sqs.destroy();
    }
    const delivered = await plat.functions.drainQueues();
    expect(delivered).toBeGreaterThanOrEqual(2);
    const run = await runToEnd(plat, runId, { doubleTicks: true });
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');

    expect(spy.count('createSnapshot')).toBe(1);
    expect(exportsInExportStep).toBeGreaterThanOrEqual(1);
    expect(exportsStarted).toBe(exportsInExportStep);
    const jobRuns = await jobRunsFor(plat, runId);
    expect(jobRuns.map((j) => j.state)).toEqual(['succeeded']);
    expect(spy.count('startJobDefinition')).toBe(1);
    const snaps = await storeSnapshotsOf(runId);
    expect(snaps.map((s) => s.id)).toEqual([run.result!.storeSnapshot]);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
    expect((await recordIds()).length).toBe(before.length + 1);

    // A late duplicate of the ship message, after the run ended, changes nothing.
    const late = await plat.functions.call('ship-to-kloset', { type: 'ship', runId, resource: 'dup' });
    expect(late.status).toBe(200);
    expect(late.body.action).toBe('ignored');
    expect((await jobRunsFor(plat, runId)).length).toBe(1);
    expect((await getRun(plat, runId)).status).toBe('succeeded');
  });

  it('a ship-to-kloset call retried while the first is still streaming (inline) streams once', async () => {
    await setInlineMax(plat, 1024 ** 4, resources);
    spy.reset();
    exportsStarted = 0;
    exportsInExportStep = 0;
    const t1 = await plat.functions.call('trigger-export', { resource: 'dup', idempotencyKey: 'retry-1' });
    expect(t1.status).toBe(202);
    // The same HTTP call retried by a client: the same run, nothing new.
    const t2 = await plat.functions.call('trigger-export', { resource: 'dup', idempotencyKey: 'retry-1' });
    expect(t2.status).toBe(202);
    expect(t2.body).toMatchObject({ runId: t1.body.runId, created: false });
    const runId: string = t1.body.runId;
    expect(spy.count('createSnapshot')).toBe(1);

    await doublePollUntil(runId, (r) => r.stage === 'shipping');
    // Scaleway retries a function that timed out while the first invocation may still be running:
    // two calls of ship-to-kloset at once, plus the queued message.
    const msg = { type: 'ship', runId, resource: 'dup' };
    const [c1, c2] = await Promise.all([plat.functions.call('ship-to-kloset', msg), plat.functions.call('ship-to-kloset', msg)]);
    expect(c1.status).toBe(200);
    expect(c2.status).toBe(200);
    expect([c1.body.action, c2.body.action].sort()).toEqual(['ignored', 'inline']);
    const run = await runToEnd(plat, runId);
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(exportsInExportStep).toBeGreaterThanOrEqual(1);
    expect(exportsStarted).toBe(exportsInExportStep);
    expect(await jobRunsFor(plat, runId)).toEqual([]);
    expect((await storeSnapshotsOf(runId)).map((s) => s.id)).toEqual([run.result!.storeSnapshot]);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
  });

  it('a restore requested twice, with concurrent polls and duplicated import messages: one run, import, volume', async () => {
    const source = (await storeSnapshotsOf((await recordIds()).map((k) => k.slice('kloset-runs/'.length, -'.json'.length)).find((id) => id.includes('backup'))!))[0];
    expect(source, 'needs a backup from the tests above').toBeDefined();
    await setInlineMax(plat, 0, resources);
    spy.reset();
    const body = { resource: 'dup', snapshot: source!.id, target: { volumeName: 'dup-restored' }, idempotencyKey: 'restore-once' };
    const [a, b] = await Promise.all([plat.functions.call('restore-upload', body), plat.functions.call('restore-upload', body)]);
    expect(a.status, JSON.stringify(a.body)).toBe(202);
    expect(b.status, JSON.stringify(b.body)).toBe(202);
    const runId: string = a.body.runId;
    expect(b.body.runId).toBe(runId);
    // Retried once more after the fact: the same run, nothing new.
    const c = await plat.functions.call('restore-upload', body);
    expect(c.body).toMatchObject({ runId, created: false });

    const importing = await doublePollUntil(runId, (r) => r.stage === 'importing');
    expect(importing.importedSnapshotId).toBeUndefined();
    const sqs = makeSqsClient({ endpoint: plat.local.sqsEndpoint, region: plat.local.region, accessKeyId: plat.local.accessKey, secretAccessKey: plat.local.secretKey });
    try {
      const again = JSON.stringify({ type: 'import', runId, resource: 'dup' });
      await sqs.send(new SendMessageCommand({ QueueUrl: plat.env.KLOSET_IMPORT_QUEUE_URL!, MessageBody: again }));
      await sqs.send(new SendMessageCommand({ QueueUrl: plat.env.KLOSET_IMPORT_QUEUE_URL!, MessageBody: again }));
    } finally {
      sqs.destroy();
    }
    const run = await runToEnd(plat, runId, { doubleTicks: true });
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect((await jobRunsFor(plat, runId)).map((j) => j.state)).toEqual(['succeeded']);
    expect(spy.count('startJobDefinition')).toBe(1);
    expect(spy.count('importSnapshotFromObjectStorage')).toBe(1);
    expect(spy.count('createVolume')).toBe(1);
    expect((await allVolumes(plat)).filter((v) => v.name === 'dup-restored').map((v) => v.id)).toEqual([run.volumeId]);
    expect(await leftovers(plat, run)).toEqual({ staging: [], uploads: [], snapshots: [] });
  });

  it('"back up now" sent twice at once with one idempotency key: one run, one Block snapshot', async () => {
    await setInlineMax(plat, 1024 ** 4, resources);
    spy.reset();
    const body = { resource: 'dup', idempotencyKey: 'now-1' };
    const [a, b] = await Promise.all([plat.functions.call('trigger-export', body), plat.functions.call('trigger-export', body)]);
    expect(a.status, JSON.stringify(a.body)).toBe(202);
    expect(b.status, JSON.stringify(b.body)).toBe(202);
    expect(b.body.runId).toBe(a.body.runId);
    expect(spy.count('createSnapshot')).toBe(1);
    const run = await runToEnd(plat, a.body.runId);
    expect(run.status, JSON.stringify(run.error)).toBe('succeeded');
    expect(spy.count('createSnapshot')).toBe(1);
    expect((await storeSnapshotsOf(run.id)).length).toBe(1);
  });
});
