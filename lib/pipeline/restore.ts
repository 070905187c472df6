// The restore flow: restore-upload (store -> staging object) -> import-volume (import as a Block
// snapshot) -> poll-export (snapshot available -> create volume -> volume available) -> cleaning.
import { z } from 'zod';
import { SnapshotNotFoundError } from '../kloset/store.js';
import { regionOfZone } from '../scaleway/clients.js';
import { ZONES, type Resource } from './config.js';
import type { Pipeline } from './context.js';
import { RequestProblem } from './backup.js';
import { ensureJobRun } from './jobrun.js';
import { newRunId, newRunRecord, type RunRecord } from './runs.js';
import { enterStage, finishCleaning, keepOldest, markFailed, markSucceeded, nowIso, pastDeadline, runTag, saveStep, workerOutcome, newClaim, claimStayed } from './stages.js';
import { openResourceStore, streamRestore } from './stream.js';
import { Errors } from '@scaleway/sdk-client';

const RESEND_AFTER_MS = 10 * 60_000;

export const RestoreRequestSchema = z.object({
  resource: z.string().min(1, 'is required'),
  /** Store snapshot id, or a unique prefix of one. */
  snapshot: z.string().regex(/^[0-9a-f]{4,64}$/i, 'must be a store snapshot id or a unique prefix of at least 4 hex digits'),
  target: z.object({
    zone: z.enum(ZONES as [string, ...string[]], { message: `must be one of ${ZONES.join(', ')}` }).optional(),
    volumeName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be 1-63 letters, digits, dots, underscores or hyphens'),
    /** Bytes; only larger than the image's virtual size. */
    size: z.number().int().positive().optional(),
    perfIops: z.union([z.literal(5000), z.literal(15000)], { message: 'must be 5000 or 15000' }).optional(),
  }),
  idempotencyKey: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, hyphens or underscores').optional(),
});
export type RestoreRequest = z.infer<typeof RestoreRequestSchema>;

/** restore-upload: creates the run and streams the image to the staging bucket (inline or by the job). */
export async function startRestore(p: Pipeline, req: RestoreRequest, trigger: RunRecord['trigger']): Promise<{ run: RunRecord; created: boolean }> {
  const r = p.resource(req.resource);
  const zone = req.target.zone ?? r.zone;
  if (regionOfZone(zone) !== regionOfZone(r.zone)) {
    throw new RequestProblem('target.zone', `must be in the staging bucket's region ${regionOfZone(r.zone)} (Scaleway imports from a bucket in the same region)`);
  }
  const runs = p.runs(r);
  const id = newRunId('restore', r.name, new Date(), req.idempotencyKey);
  const existing = await runs.get(id);
  if (existing) return { run: existing, created: false };

  const repo = await openResourceStore(p, r);
  let snap;
  try {
    snap = await repo.loadSnapshot(await repo.resolveSnapshotId(req.snapshot));
  } catch (err) {
    if (err instanceof SnapshotNotFoundError) throw new RequestProblem('snapshot', err.message, 404);
    throw err;
  } finally {
    await repo.backend.close();
  }
  const now = nowIso();
  const inline = snap.imageSize <= p.platform.inlineMaxBytes || !p.platform.jobDefinitionId;
  const claim = newClaim();
  const draft = newRunRecord({
    id,
    kind: 'restore',
    resource: r.name,
    trigger,
    stage: 'uploading',
    restore: { storeSnapshot: snap.id, imageSize: snap.imageSize, sha256: snap.sha256, target: { ...req.target, zone } },
    shipping: { by: inline ? 'function' : 'job', startedAt: now, claim },
  });
  enterStage(p, draft, 'uploading');
  const { run, created } = await runs.create(draft);
  if (!created) return { run, created };
  // Two requests with one idempotency key may both have created the record (Object Storage has no
  // conditional writes): the last write stayed, and only its writer goes on.
  const { stayed, stored } = await claimStayed(runs, id, claim, (s) => s.shipping?.claim);
  if (!stayed && stored) return { run: stored, created: false };
  p.log.info('restore started', { runId: id, resource: r.name, storeSnapshot: snap.id, imageSize: snap.imageSize, zone });

  if (inline) {
    const result = await streamRestore(p, r, run, 'function');
    run.result = result;
    if (result.ok) await toImporting(p, r, run);
    else {
      markFailed(p, run, result.error ?? 'upload failed');
      await finishCleaning(p, r, run);
      return { run, created: true };
    }
  } else {
    try {
      run.shipping!.jobRunId = await ensureJobRun(p, r, run, 'restore');
    } catch (err) {
      markFailed(p, run, `could not start the job: ${(err as Error).message}`);
      await finishCleaning(p, r, run);
      throw err;
    }
  }
  await runs.save(run);
  return { run, created: true };
}

async function toImporting(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  enterStage(p, run, 'importing');
  await p.send(p.platform.importQueueUrl, { type: 'import', runId: run.id, resource: r.name });
  run.importMessageSentAt = nowIso();
}

async function ensureImportedSnapshot(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  const { block } = p.clients(r);
  const zone = run.restore!.target.zone as 'fr-par-1';
  const tagged = async () => (await block.listSnapshots({ zone, tags: [runTag(run.id)], pageSize: 100 })).snapshots;
  if (!run.importedSnapshotId && (await tagged()).length === 0) {
    await block.importSnapshotFromObjectStorage({
      zone,
      bucket: r.bucket,
      key: run.stagingKey,
      name: `kloset-restore-${run.id}`.slice(0, 100),
      projectId: r.projectId,
      tags: [runTag(run.id), 'scw-kloset'],
    });
  }
  const winner = await keepOldest(await tagged(), (s) => block.deleteSnapshot({ zone, snapshotId: s.id }));
  if (winner) run.importedSnapshotId = winner.id;
}

async function ensureVolume(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  const { block } = p.clients(r);
  const t = run.restore!.target;
  const zone = t.zone as 'fr-par-1';
  const tagged = async () => (await block.listVolumes({ zone, tags: [runTag(run.id)], pageSize: 100 })).volumes;
  if (!run.volumeId && (await tagged()).length === 0) {
    await block.createVolume({
      zone,
      name: t.volumeName,
      projectId: r.projectId,
      perfIops: t.perfIops,
      fromSnapshot: { snapshotId: run.importedSnapshotId!, size: t.size },
      tags: [runTag(run.id), 'scw-kloset'],
    });
  }
  const winner = await keepOldest(await tagged(), (v) => block.deleteVolume({ zone, volumeId: v.id }));
  if (winner) run.volumeId = winner.id;
}

/** import-volume: imports the staging object as a Block snapshot. Duplicates do nothing. */
export async function importVolume(p: Pipeline, resourceName: string, runId: string): Promise<{ action: 'imported' | 'ignored'; reason?: string; run?: RunRecord }> {
  const r = p.resource(resourceName);
  const runs = p.runs(r);
  const run = await runs.get(runId);
  if (!run) throw new RequestProblem('runId', `no run ${runId} for resource ${r.name}`, 404);
  if (run.kind !== 'restore') throw new RequestProblem('runId', `run ${runId} is a ${run.kind}, not a restore`);
  if (run.stage !== 'importing') return { action: 'ignored', reason: `run is at stage ${run.stage}` };
  if (run.importedSnapshotId) return { action: 'ignored', reason: 'already imported' };
  // Duplicated messages delivered together: each writes its claim; only the one whose claim stayed
  // imports (later ones find the import by its tag).
  const claim = newClaim();
  run.importClaim = claim;
  await runs.save(run);
  if (!(await claimStayed(runs, runId, claim, (s) => s.importClaim)).stayed) {
    return { action: 'ignored', reason: 'another invocation is importing this run' };
  }
  try {
    await ensureImportedSnapshot(p, r, run);
  } catch (err) {
    // Scaleway refuses bad images with invalid_request_error (400): the run cannot succeed.
    if (err instanceof Errors.ScalewayError && err.status >= 400 && err.status < 500 && err.status !== 429 && !(err instanceof Errors.TransientStateError)) {
      markFailed(p, run, `Scaleway refused the import: ${err.message}`);
      await finishCleaning(p, r, run);
      return { action: 'imported', run };
    }
    throw err;
  }
  await runs.save(run);
  p.log.info('import started', { runId, snapshotId: run.importedSnapshotId });
  return { action: 'imported', run };
}

/** One poll step of a running restore. Saves the record. */
export async function advanceRestore(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  let before = JSON.stringify(run);
  if (run.stage !== 'cleaning' && pastDeadline(run)) {
    markFailed(p, run, `stage ${run.stage} did not finish within ${p.deadlineSeconds(run.stage)} s`);
  }
  const { block } = p.clients(r);
  const zone = run.restore!.target.zone as 'fr-par-1';
  if (run.stage === 'uploading') {
    const outcome = await workerOutcome(p, r, run);
    if (outcome !== 'waiting' && !('lost' in outcome)) {
      run.result = outcome;
      if (outcome.ok) await toImporting(p, r, run);
      else markFailed(p, run, outcome.error ?? 'upload failed');
    } else if (outcome !== 'waiting') {
      markFailed(p, run, 'the upload was never started');
    }
  } else if (run.stage === 'importing') {
    if (!run.importedSnapshotId) {
      if (Date.now() - Date.parse(run.importMessageSentAt ?? run.updatedAt) > RESEND_AFTER_MS) {
        await p.send(p.platform.importQueueUrl, { type: 'import', runId: run.id, resource: r.name });
        run.importMessageSentAt = nowIso();
      }
    } else {
      const snap = await block.getSnapshot({ zone, snapshotId: run.importedSnapshotId });
      if (snap.status === 'error') markFailed(p, run, `the import of ${run.stagingKey} ended in error`);
      else if (snap.status === 'available') {
        // Overlapping ticks: each writes its claim; only the one whose claim stayed creates the volume.
        const claim = newClaim();
        run.volumeClaim = claim;
        await p.runs(r).save(run);
        before = JSON.stringify(run);
        if (!(await claimStayed(p.runs(r), run.id, claim, (s) => s.volumeClaim)).stayed) return;
        await ensureVolume(p, r, run);
        enterStage(p, run, 'creating-volume');
        p.log.info('volume creation started', { runId: run.id, volumeId: run.volumeId });
      }
    }
  } else if (run.stage === 'creating-volume') {
    await ensureVolume(p, r, run);
    const v = await block.getVolume({ zone, volumeId: run.volumeId! });
    if (v.status === 'error') markFailed(p, run, `volume ${v.id} ended in error`);
    else if (v.status === 'available' || v.status === 'in_use') markSucceeded(p, run);
  }
  if (run.stage === 'cleaning') await finishCleaning(p, r, run);
  else await saveStep(p.runs(r), run, before);
}
