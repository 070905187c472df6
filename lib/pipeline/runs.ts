// Run records: one JSON object per backup or restore, kept in the resource's staging bucket so that
// they survive any function instance. Active runs also have an empty marker under `active/`, so the
// poller lists only what is in flight. The streaming worker (job or function) writes its result and
// progress to objects of their own, so it never races the poller on the record.
import { randomBytes } from 'node:crypto';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

export const RUNS_PREFIX = 'kloset-runs/';
export const STAGING_PREFIX = 'kloset-staging/';

export type RunKind = 'backup' | 'restore';
export type BackupStage = 'snapshotting' | 'exporting' | 'shipping';
export type RestoreStage = 'uploading' | 'importing' | 'creating-volume';
export type Stage = BackupStage | RestoreStage | 'cleaning' | 'done';
export type RunStatus = 'running' | 'succeeded' | 'failed';

export interface StageEntry {
  stage: Stage;
  startedAt: string;
  endedAt?: string;
}

/** What a streaming worker reports when it is done. */
export interface StreamResult {
  ok: boolean;
  error?: string;
  /** Backup: the store snapshot written. Restore: the snapshot restored. */
  storeSnapshot?: string;
  bytesRead?: number;
  bytesAdded?: number;
  bytesWritten?: number;
  imageSize?: number;
  sha256?: string;
  startedAt: string;
  endedAt: string;
  by: 'function' | 'job';
}

export interface Progress {
  bytesDone: number;
  bytesTotal?: number;
  at: string;
}

export interface Leftover {
  kind: 'block-snapshot' | 'staging-object' | 'multipart-upload' | 'job-run' | 'volume';
  id: string;
  error: string;
}

export interface RestoreTarget {
  zone: string;
  volumeName: string;
  size?: number;
  perfIops?: 5000 | 15000;
}

export interface RunRecord {
  version: 1;
  id: string;
  kind: RunKind;
  resource: string;
  trigger: 'cron' | 'http' | 'cli' | 'queue';
  status: RunStatus;
  stage: Stage;
  /** Set when the run enters cleaning: the status it ends with once cleaned up. */
  outcome?: 'succeeded' | 'failed';
  createdAt: string;
  updatedAt: string;
  endedAt?: string;
  /** When the current stage must be over. */
  deadline: string;
  stages: StageEntry[];
  /** The QCOW2 object in the staging bucket. */
  stagingKey: string;
  /** Which of the calls that created this run goes on (duplicates may create it at the same time). */
  createClaim?: string;
  /** Backup: the temporary Block snapshot of the volume. */
  blockSnapshotId?: string;
  exportStartedAt?: string;
  /** When the message asking for the streaming work was last sent (ship, or restore's job start). */
  shipMessageSentAt?: string;
  shipping?: { by: 'function' | 'job'; jobRunId?: string; startedAt: string; claim?: string };
  result?: StreamResult;
  /** Restore: what is restored, and where. */
  restore?: { storeSnapshot: string; imageSize: number; sha256: string; target: RestoreTarget };
  importMessageSentAt?: string;
  /** Which import-volume invocation imports (duplicates deliver the message more than once). */
  importClaim?: string;
  /** Which poll tick creates the volume (overlapping ticks). */
  volumeClaim?: string;
  importedSnapshotId?: string;
  volumeId?: string;
  error?: { stage: Stage; message: string; at: string };
  leftovers?: Leftover[];
}

export function newRunId(kind: RunKind, resource: string, at = new Date(), slot?: string): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').slice(0, 13); // 20261127T0405
  return slot ? `${resource}-${kind}-${slot}` : `${resource}-${kind}-${stamp}-${randomBytes(3).toString('hex')}`;
}

/** A fresh record for a run entering its first stage (the caller sets the stage's deadline). */
export function newRunRecord(fields: Pick<RunRecord, 'id' | 'kind' | 'resource' | 'trigger' | 'stage'> & Partial<RunRecord>): RunRecord {
  const now = new Date().toISOString();
  return {
    version: 1,
    status: 'running',
    createdAt: now,
    updatedAt: now,
    deadline: now,
    stages: [],
    stagingKey: `${STAGING_PREFIX}${fields.id}.qcow2`,
    ...fields,
  };
}

const isMissing = (err: unknown) => {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
};

/** Run records of one staging bucket. */
export class RunStore {
  constructor(private readonly s3: S3Client, readonly bucket: string) {}

  private recordKey = (id: string) => `${RUNS_PREFIX}${id}.json`;
  private activeKey = (id: string) => `${RUNS_PREFIX}active/${id}`;
  private resultKey = (id: string) => `${RUNS_PREFIX}${id}.result.json`;
  private progressKey = (id: string) => `${RUNS_PREFIX}${id}.progress.json`;

  private async getJson<T>(key: string): Promise<T | null> {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return JSON.parse(await out.Body!.transformToString()) as T;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  private async putJson(key: string, value: unknown): Promise<void> {
    await this.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: JSON.stringify(value, null, 1), ContentType: 'application/json' }),
    );
  }

  get(id: string): Promise<RunRecord | null> {
    return this.getJson<RunRecord>(this.recordKey(id));
  }

  /** Creates the record unless one exists with that id; returns the stored record and whether it is new. */
  async create(run: RunRecord): Promise<{ run: RunRecord; created: boolean }> {
    const existing = await this.get(run.id);
    if (existing) return { run: existing, created: false };
    await this.putJson(this.activeKey(run.id), { resource: run.resource, kind: run.kind });
    await this.putJson(this.recordKey(run.id), run);
    return { run, created: true };
  }

  async save(run: RunRecord): Promise<void> {
    if (run.status === 'running') {
      // A stale copy (an overlapping invocation) never brings an ended run back to life.
      const stored = await this.get(run.id);
      if (stored && stored.status !== 'running') return;
    }
    run.updatedAt = new Date().toISOString();
    await this.putJson(this.recordKey(run.id), run);
    if (run.status !== 'running') await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.activeKey(run.id) }));
  }

  private async listKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const out = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of out.Contents ?? []) keys.push(o.Key!);
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  async listActiveIds(): Promise<string[]> {
    return (await this.listKeys(`${RUNS_PREFIX}active/`)).map((k) => k.slice(`${RUNS_PREFIX}active/`.length));
  }

  async listIds(): Promise<string[]> {
    return (await this.listKeys(RUNS_PREFIX))
      .filter((k) => !k.startsWith(`${RUNS_PREFIX}active/`) && k.endsWith('.json') && !k.endsWith('.result.json') && !k.endsWith('.progress.json'))
      .map((k) => k.slice(RUNS_PREFIX.length, -'.json'.length));
  }

  getResult(id: string): Promise<StreamResult | null> {
    return this.getJson<StreamResult>(this.resultKey(id));
  }

  putResult(id: string, result: StreamResult): Promise<void> {
    return this.putJson(this.resultKey(id), result);
  }

  getProgress(id: string): Promise<Progress | null> {
    return this.getJson<Progress>(this.progressKey(id));
  }

  putProgress(id: string, p: Progress): Promise<void> {
    return this.putJson(this.progressKey(id), p);
  }
}
