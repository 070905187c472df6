// The streaming work of a run, done by the Serverless Job (large images) or by the function itself
// (small ones): staging object -> Kloset store for a backup, store -> staging object for a restore.
// Never staged on local disk (a job has 10 GB; images go up to 1 TB). Progress is written to the
// run's progress object and logged every few seconds; the result goes to the run's result object.
import { Archiver, openStore, Restorer, type Repository } from '../kloset/store.js';
import { openImageSink } from '../kloset/io.js';
import type { S3Options } from '../scaleway/s3.js';
import { S3ObjectReader } from '../scaleway/s3-reader.js';
import type { Resource } from './config.js';
import type { Pipeline } from './context.js';
import type { RunRecord, StreamResult } from './runs.js';
import { nowIso } from './stages.js';

const PROGRESS_EVERY_MS = 5000;

/** S3 settings for a resource's store and staging bucket: its own keys, the platform's endpoint. */
export function storeS3Options(p: Pipeline, r: Resource): S3Options {
  return {
    endpoint: p.platform.endpoints.s3Endpoint,
    region: p.clients(r).region,
    accessKeyId: r.accessKey,
    secretAccessKey: r.secretKey,
  };
}

export async function openResourceStore(p: Pipeline, r: Resource): Promise<Repository> {
  return openStore(r.store, r.storePassphrase, storeS3Options(p, r));
}

function progressReporter(p: Pipeline, r: Resource, run: RunRecord, total: number | undefined) {
  let last = 0;
  return (bytesDone: number) => {
    const now = Date.now();
    if (now - last < PROGRESS_EVERY_MS) return;
    last = now;
    p.log.info('progress', { runId: run.id, bytesDone, bytesTotal: total });
    void p.runs(r).putProgress(run.id, { bytesDone, bytesTotal: total, at: nowIso() }).catch(() => {});
  };
}

async function withResult(by: StreamResult['by'], fn: (r: Partial<StreamResult>) => Promise<void>): Promise<StreamResult> {
  const startedAt = nowIso();
  const out: Partial<StreamResult> = {};
  try {
    await fn(out);
    return { ...out, ok: true, startedAt, endedAt: nowIso(), by };
  } catch (err) {
    return { ...out, ok: false, error: (err as Error).message, startedAt, endedAt: nowIso(), by };
  }
}

/** Backup: streams the exported QCOW2 from the staging bucket into the store. */
export async function streamBackup(p: Pipeline, r: Resource, run: RunRecord, by: StreamResult['by']): Promise<StreamResult> {
  const result = await withResult(by, async (out) => {
    const { s3, block } = p.clients(r);
    const repo = await openResourceStore(p, r);
    let staged: S3ObjectReader | undefined;
    try {
      const volume = await block.getVolume({ volumeId: r.endpoint, zone: r.zone as 'fr-par-1' }).catch(() => null);
      staged = await S3ObjectReader.open(s3, r.bucket, run.stagingKey, {
        onRetry: (i) => p.log.warn('staging read retried', { runId: run.id, offset: i.offset, attempt: i.attempt, error: i.error }),
      });
      const report = progressReporter(p, r, run, staged.size);
      const res = await new Archiver(repo).backup(staged.read, {
        meta: {
          source: { volumeId: r.endpoint, name: volume?.name, zone: r.zone, projectId: r.projectId, path: `s3://${r.bucket}/${run.stagingKey}` },
          environment: r.environment,
          dataClass: r.dataClass,
          tags: { run: run.id, resource: r.name },
        },
        onProgress: (pr) => report(pr.bytesRead),
      });
      Object.assign(out, {
        storeSnapshot: res.snapshot,
        bytesRead: res.bytesRead,
        bytesAdded: res.bytesAdded,
        imageSize: res.imageSize,
        sha256: res.sha256,
      });
      if (res.bytesRead !== staged.size) {
        throw new Error(`read ${res.bytesRead} bytes of a ${staged.size}-byte staging object`);
      }
    } finally {
      staged?.close();
      await repo.backend.close();
    }
  });
  await p.runs(r).putResult(run.id, result);
  return result;
}

/** Restore: streams the snapshot's image from the store into the staging bucket, verifying its SHA-256. */
export async function streamRestore(p: Pipeline, r: Resource, run: RunRecord, by: StreamResult['by']): Promise<StreamResult> {
  const result = await withResult(by, async (out) => {
    const spec = run.restore!;
    const repo = await openResourceStore(p, r);
    try {
      const sink = await openImageSink(`s3://${r.bucket}/${run.stagingKey}`, spec.imageSize, storeS3Options(p, r));
      const report = progressReporter(p, r, run, spec.imageSize);
      try {
        const res = await new Restorer(repo).restore(spec.storeSnapshot, sink, (pr) => report(pr.bytesWritten));
        await sink.commit();
        Object.assign(out, { storeSnapshot: res.snapshot, bytesWritten: res.bytesWritten, imageSize: res.bytesWritten, sha256: res.sha256 });
      } catch (err) {
        await sink.abort();
        throw err;
      }
    } finally {
      await repo.backend.close();
    }
  });
  await p.runs(r).putResult(run.id, result);
  return result;
}
