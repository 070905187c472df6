// The backup flow: trigger-export -> poll-export (snapshot, export) -> ship-to-kloset -> cleaning.
import { HeadBucketCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import type { Resource } from './config.js';
import type { Pipeline } from './context.js';
import { ensureJobRun } from './jobrun.js';
import { newRunId, newRunRecord, type RunRecord } from './runs.js';
import { enterStage, finishCleaning, isNotFound, isTransient, keepOldest, markFailed, markSucceeded, nowIso, pastDeadline, runTag, saveStep, workerOutcome, newClaim, claimStayed } from './stages.js';
import { streamBackup } from './stream.js';

/** Bad input that is the caller's to fix (HTTP 4xx), naming the field. */
export class RequestProblem extends Error {
  constructor(readonly field: string, message: string, readonly status = 400) {
    super(`${field}: ${message}`);
    this.name = 'RequestProblem';
  }
}

/** How long a queue message may go unanswered before the poller sends it again. */
const RESEND_AFTER_MS = 10 * 60_000;
/** How long a new run may wait for trigger-export to create its snapshot before a poll tick does. */
const TRIGGER_GRACE_MS = 60_000;
/** After an export, the snapshot is available again; the object should be there by then. */
const EXPORT_OBJECT_GRACE_MS = 2 * 60_000;

/** Checks what only Scaleway can tell: the volume exists in the zone, the bucket exists. */
export async function verifyResource(p: Pipeline, r: Resource): Promise<void> {
  const { block, s3 } = p.clients(r);
  try {
    await block.getVolume({ volumeId: r.endpoint, zone: r.zone as 'fr-par-1' });
  } catch (err) {
    if (isNotFound(err)) throw new RequestProblem('endpoint', `volume ${r.endpoint} not found in zone ${r.zone}`, 422);
    throw err;
  }
  try {
    await s3.send(new HeadBucketCommand({ Bucket: r.bucket }));
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
    if (status === 404 || (err as Error).name === 'NotFound' || (err as Error).name === 'NoSuchBucket') {
      throw new RequestProblem('bucket', `bucket ${r.bucket} does not exist (create it first)`, 422);
    }
    throw err;
  }
}

export interface TriggerOptions {
  trigger: RunRecord['trigger'];
  /** Cron ticks: the schedule slot (e.g. the minute), so overlapping ticks map to one run. */
  slot?: string;
  idempotencyKey?: string;
}

export type TriggerOutcome = { run: RunRecord; created: boolean } | { skipped: string; activeRun: string };

/** Starts a backup: a run record, then a Block snapshot of the volume tagged with the run id. */
export async function triggerBackup(p: Pipeline, resourceName: string, opts: TriggerOptions): Promise<TriggerOutcome> {
  const r = p.resource(resourceName);
  const runs = p.runs(r);
  const id = newRunId('backup', r.name, new Date(), opts.slot ?? opts.idempotencyKey);
  const existing = await runs.get(id);
  if (existing) return { run: existing, created: false };
  await verifyResource(p, r);
  if (opts.trigger === 'cron') {
    // A backup that outlasts its schedule is not stacked on: the next tick after it ends starts one.
    for (const activeId of await runs.listActiveIds()) {
      const a = await runs.get(activeId);
      if (a?.kind === 'backup' && a.resource === r.name && a.status === 'running') return { skipped: `backup ${a.id} is still running`, activeRun: a.id };
    }
  }
  const draft = newRunRecord({ id, kind: 'backup', resource: r.name, trigger: opts.trigger, stage: 'snapshotting', createClaim: newClaim() });
  enterStage(p, draft, 'snapshotting');
  const { run, created } = await runs.create(draft);
  if (!created) return { run, created };
  // Two calls with one run id (same idempotency key or cron slot) may both have created the record.
  const { stayed, stored } = await claimStayed(runs, id, draft.createClaim!, (s) => s.createClaim);
  if (!stayed && stored) return { run: stored, created: false };
  await ensureBlockSnapshot(p, r, run);
  await runs.save(run);
  p.log.info('backup started', { runId: run.id, resource: r.name, volumeId: r.endpoint, snapshotId: run.blockSnapshotId });
  return { run, created: true };
}

async function ensureBlockSnapshot(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  const { block } = p.clients(r);
  const zone = r.zone as 'fr-par-1';
  const tagged = async () => (await block.listSnapshots({ zone, tags: [runTag(run.id)], pageSize: 100 })).snapshots;
  if (!run.blockSnapshotId && (await tagged()).length === 0) {
    await block.createSnapshot({ zone, volumeId: r.endpoint, projectId: r.projectId, name: `kloset-${run.id}`.slice(0, 100), tags: [runTag(run.id), 'scw-kloset'] });
  }
  const winner = await keepOldest(await tagged(), (s) => block.deleteSnapshot({ zone, snapshotId: s.id }));
  if (winner) run.blockSnapshotId = winner.id;
}

/** One poll step of a running backup. Saves the record. */
export async function advanceBackup(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  const runs = p.runs(r);
  const before = JSON.stringify(run);
  if (run.stage !== 'cleaning' && pastDeadline(run)) {
    markFailed(p, run, `stage ${run.stage} did not finish within ${p.deadlineSeconds(run.stage)} s`);
  }
  const { block, s3 } = p.clients(r);
  const zone = r.zone as 'fr-par-1';
  if (run.stage === 'snapshotting' && !run.blockSnapshotId && Date.now() - Date.parse(run.createdAt) < TRIGGER_GRACE_MS) {
    // trigger-export is creating the snapshot; a later tick takes over only if it never does.
  } else if (run.stage === 'snapshotting') {
    await ensureBlockSnapshot(p, r, run);
    if (!run.blockSnapshotId) {
      markFailed(p, run, 'the Block snapshot of the volume disappeared');
    } else {
      const snap = await block.getSnapshot({ zone, snapshotId: run.blockSnapshotId });
      if (snap.status === 'error') markFailed(p, run, `Block snapshot ${snap.id} ended in error`);
      else if (snap.status === 'available') {
        try {
          await block.exportSnapshotToObjectStorage({ zone, snapshotId: snap.id, bucket: r.bucket, key: run.stagingKey });
        } catch (err) {
          if (!isTransient(err)) throw err; // already exporting: a racing tick started it
        }
        run.exportStartedAt = nowIso();
        enterStage(p, run, 'exporting');
        p.log.info('export started', { runId: run.id, snapshotId: snap.id, bucket: r.bucket, key: run.stagingKey });
      }
    }
  } else if (run.stage === 'exporting') {
    const snap = await block.getSnapshot({ zone, snapshotId: run.blockSnapshotId! });
    if (snap.status === 'error') markFailed(p, run, `the export of Block snapshot ${snap.id} ended in error`);
    else if (snap.status === 'available') {
      const head = await s3.send(new HeadObjectCommand({ Bucket: r.bucket, Key: run.stagingKey })).catch((err) => {
        if (isNotFound(err) || (err as Error).name === 'NotFound') return null;
        throw err;
      });
      if (head) {
        enterStage(p, run, 'shipping');
        await sendShip(p, r, run);
      } else if (Date.now() - Date.parse(run.exportStartedAt ?? run.updatedAt) > EXPORT_OBJECT_GRACE_MS) {
        markFailed(p, run, `the export finished but s3://${r.bucket}/${run.stagingKey} is missing`);
      }
    }
  } else if (run.stage === 'shipping') {
    const outcome = await workerOutcome(p, r, run);
    if (outcome === 'waiting') {
      // still streaming
    } else if ('lost' in outcome) {
      if (Date.now() - Date.parse(run.shipMessageSentAt ?? run.updatedAt) > RESEND_AFTER_MS) await sendShip(p, r, run);
    } else {
      run.result = outcome;
      if (outcome.ok) markSucceeded(p, run);
      else markFailed(p, run, outcome.error ?? 'streaming failed');
    }
  }
  if (run.stage === 'cleaning') await finishCleaning(p, r, run);
  else await saveStep(runs, run, before);
}

async function sendShip(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  await p.send(p.platform.shipQueueUrl, { type: 'ship', runId: run.id, resource: r.name });
  run.shipMessageSentAt = nowIso();
}

export type ShipOutcome = { action: 'ignored'; reason: string } | { action: 'inline'; run: RunRecord } | { action: 'job'; jobRunId: string };

/**
 * ship-to-kloset: streams the export into the store, in this function if the image is small enough,
 * else by starting the Serverless Job. A duplicate message for a run already shipping does nothing.
 */
export async function shipBackup(p: Pipeline, resourceName: string, runId: string): Promise<ShipOutcome> {
  const r = p.resource(resourceName);
  const runs = p.runs(r);
  const run = await runs.get(runId);
  if (!run) throw new RequestProblem('runId', `no run ${runId} for resource ${r.name}`, 404);
  if (run.kind !== 'backup') throw new RequestProblem('runId', `run ${runId} is a ${run.kind}, not a backup`);
  if (run.stage !== 'shipping') return { action: 'ignored', reason: `run is at stage ${run.stage}` };
  if (run.shipping) return { action: 'ignored', reason: `already shipping (${run.shipping.by})` };
  const head = await p.clients(r).s3.send(new HeadObjectCommand({ Bucket: r.bucket, Key: run.stagingKey }));
  const size = head.ContentLength ?? 0;
  const inline = size <= p.platform.inlineMaxBytes || !p.platform.jobDefinitionId;
  const claim = newClaim();
  run.shipping = { by: inline ? 'function' : 'job', startedAt: nowIso(), claim };
  await runs.save(run);
  if (!(await claimStayed(runs, runId, claim, (s) => s.shipping?.claim)).stayed) {
    return { action: 'ignored', reason: 'another invocation is shipping this run' };
  }
  if (inline) {
    const result = await streamBackup(p, r, run, 'function');
    run.result = result;
    if (result.ok) markSucceeded(p, run);
    else markFailed(p, run, result.error ?? 'streaming failed');
    await finishCleaning(p, r, run);
    return { action: 'inline', run };
  }
  try {
    run.shipping.jobRunId = await ensureJobRun(p, r, run, 'backup');
  } catch (err) {
    markFailed(p, run, `could not start the job: ${(err as Error).message}`);
    await finishCleaning(p, r, run);
    throw err;
  }
  await runs.save(run);
  return { action: 'job', jobRunId: run.shipping.jobRunId };
}
