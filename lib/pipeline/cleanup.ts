// Removes what a run created: the staging object (and any unfinished multipart upload of it), the
// temporary or imported Block snapshot, a job run still going, and, for a failed restore, the volume.
// Busy resources (exporting, creating) are "pending": the poller tries again on its next tick.
import { AbortMultipartUploadCommand, DeleteObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import type { Resource } from './config.js';
import type { Pipeline } from './context.js';
import type { Leftover, RunRecord } from './runs.js';
import { isNotFound, isTransient, TERMINAL_JOB_STATES } from './stages.js';

type Item = Omit<Leftover, 'error'> & { error: string };

/** How long a job that wrote its result may take to exit before cleanup stops it. */
const JOB_EXIT_GRACE_MS = 60_000;

export async function cleanup(p: Pipeline, r: Resource, run: RunRecord): Promise<{ pending: Item[]; leftovers: Item[] }> {
  const { block, jobs, s3 } = p.clients(r);
  const pending: Item[] = [];
  const leftovers: Item[] = [];
  const attempt = async (kind: Leftover['kind'], id: string, fn: () => Promise<'done' | 'busy'>) => {
    try {
      if ((await fn()) === 'busy') pending.push({ kind, id, error: 'busy, will retry' });
    } catch (err) {
      if (isNotFound(err)) return;
      if (isTransient(err)) pending.push({ kind, id, error: (err as Error).message });
      else leftovers.push({ kind, id, error: (err as Error).message });
    }
  };

  // The recorded job run, and any other started for this run but not recorded (a ship-to-kloset
  // that died between starting the job and saving its id).
  const jobRunIds = new Set<string>(run.shipping?.jobRunId ? [run.shipping.jobRunId] : []);
  if (p.platform.jobDefinitionId && run.shipping?.by === 'job') {
    await attempt('job-run', `of ${run.id}`, async () => {
      const listed = await jobs.listJobRuns({ jobDefinitionId: p.platform.jobDefinitionId!, pageSize: 100, orderBy: 'created_at_desc' });
      for (const j of listed.jobRuns) if (j.environmentVariables?.KLOSET_RUN_ID === run.id) jobRunIds.add(j.id);
      return 'done';
    });
  }
  for (const jobRunId of jobRunIds) {
    await attempt('job-run', jobRunId, async () => {
      const jr = await jobs.getJobRun({ jobRunId });
      if (!TERMINAL_JOB_STATES.has(jr.state)) {
        // A job that has reported its result is exiting on its own: give it time to end with its
        // own status rather than stopping it (a succeeded backup would show a canceled job run).
        if (run.result?.by === 'job' && Date.now() - Date.parse(run.result.endedAt) < JOB_EXIT_GRACE_MS) return 'busy';
        await jobs.stopJobRun({ jobRunId });
        return 'busy';
      }
      return 'done';
    });
  }

  await attempt('multipart-upload', `${r.bucket}/${run.stagingKey}`, async () => {
    try {
      const out = await s3.send(new ListMultipartUploadsCommand({ Bucket: r.bucket, Prefix: run.stagingKey }));
      for (const u of out.Uploads ?? []) {
        await s3.send(new AbortMultipartUploadCommand({ Bucket: r.bucket, Key: u.Key!, UploadId: u.UploadId! }));
      }
    } catch (err) {
      // Servers without ListMultipartUploads (some local ones) rely on the bucket's lifecycle rule.
      if ((err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode !== 501 && !/not implemented|unsupported/i.test(String((err as Error).message))) throw err;
    }
    return 'done';
  });

  await attempt('staging-object', `${r.bucket}/${run.stagingKey}`, async () => {
    await s3.send(new DeleteObjectCommand({ Bucket: r.bucket, Key: run.stagingKey }));
    return 'done';
  });

  const deleteSnapshot = async (snapshotId: string, zone: string) => {
    await attempt('block-snapshot', snapshotId, async () => {
      const s = await block.getSnapshot({ snapshotId, zone: zone as 'fr-par-1' });
      if (s.status === 'deleting' || s.status === 'deleted') return s.status === 'deleted' ? 'done' : 'busy';
      if (['creating', 'exporting'].includes(s.status)) return 'busy';
      await block.deleteSnapshot({ snapshotId, zone: zone as 'fr-par-1' });
      return 'busy'; // confirmed gone on a later look
    });
  };
  if (run.blockSnapshotId) await deleteSnapshot(run.blockSnapshotId, r.zone);
  if (run.importedSnapshotId && run.restore) await deleteSnapshot(run.importedSnapshotId, run.restore.target.zone);

  if (run.outcome === 'failed' && run.volumeId && run.restore) {
    const zone = run.restore.target.zone as 'fr-par-1';
    await attempt('volume', run.volumeId, async () => {
      const v = await block.getVolume({ volumeId: run.volumeId!, zone });
      if (v.status === 'deleting') return 'busy';
      if (['creating', 'updating', 'resizing', 'snapshotting'].includes(v.status)) return 'busy';
      await block.deleteVolume({ volumeId: run.volumeId!, zone });
      return 'busy';
    });
  }
  return { pending, leftovers };
}
