// Persistent state of the local Scaleway: resources in their wire form (snake_case JSON) in
// DIR/state.json, content as sparse files in DIR/volumes and DIR/snapshots, job logs in DIR/job-runs.
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export interface VolumeRecord {
  id: string;
  name: string;
  type: string;
  size: number;
  project_id: string;
  created_at: string;
  updated_at: string;
  references: unknown[];
  parent_snapshot_id: string | null;
  status: string;
  tags: string[];
  zone: string;
  specs: { perf_iops: number; class: string };
  last_detached_at: string | null;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  parent_volume: { id: string; name: string; type: string; status: string } | null;
  size: number;
  project_id: string;
  created_at: string;
  updated_at: string;
  references: unknown[];
  status: string;
  tags: string[];
  zone: string;
  class: string;
}

export interface JobDefinitionRecord {
  id: string;
  name: string;
  created_at: string;
  updated_at: string;
  cpu_limit: number;
  memory_limit: number;
  local_storage_capacity: number;
  image_uri: string;
  command: string;
  project_id: string;
  environment_variables: Record<string, string>;
  description: string;
  job_timeout: string | null;
  cron_schedule: { schedule: string; timezone: string } | null;
  region: string;
}

export interface JobRunRecord {
  id: string;
  job_definition_id: string;
  state: string;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  terminated_at: string | null;
  exit_code: number | null;
  run_duration: string | null;
  error_message: string;
  cpu_limit: number;
  memory_limit: number;
  command: string;
  environment_variables: Record<string, string>;
  local_storage_capacity: number;
  region: string;
  /** Not on the wire: the project of the definition (for list filters). */
  project_id: string;
}

interface StateFile {
  version: 1;
  volumes: VolumeRecord[];
  snapshots: SnapshotRecord[];
  jobDefinitions: JobDefinitionRecord[];
  jobRuns: JobRunRecord[];
}

export class State {
  readonly volumes = new Map<string, VolumeRecord>();
  readonly snapshots = new Map<string, SnapshotRecord>();
  readonly jobDefinitions = new Map<string, JobDefinitionRecord>();
  readonly jobRuns = new Map<string, JobRunRecord>();
  private readonly file: string;

  constructor(readonly dir: string) {
    for (const sub of ['volumes', 'snapshots', 'job-runs', 'tmp']) mkdirSync(join(dir, sub), { recursive: true });
    this.file = join(dir, 'state.json');
    if (existsSync(this.file)) {
      const data = JSON.parse(readFileSync(this.file, 'utf8')) as StateFile;
      for (const v of data.volumes) this.volumes.set(v.id, v);
      for (const s of data.snapshots) this.snapshots.set(s.id, s);
      for (const d of data.jobDefinitions) this.jobDefinitions.set(d.id, d);
      for (const r of data.jobRuns) this.jobRuns.set(r.id, r);
    }
  }

  volumePath(id: string): string {
    return join(this.dir, 'volumes', `${id}.raw`);
  }

  snapshotPath(id: string): string {
    return join(this.dir, 'snapshots', `${id}.raw`);
  }

  jobRunLogPath(id: string): string {
    return join(this.dir, 'job-runs', `${id}.log`);
  }

  tmpPath(name: string): string {
    return join(this.dir, 'tmp', name);
  }

  /** Writes state.json atomically (small file, written after every change). */
  save(): void {
    const data: StateFile = {
      version: 1,
      volumes: [...this.volumes.values()],
      snapshots: [...this.snapshots.values()],
      jobDefinitions: [...this.jobDefinitions.values()],
      jobRuns: [...this.jobRuns.values()],
    };
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(data, null, 1));
    renameSync(tmp, this.file);
  }
}
