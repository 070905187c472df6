// Serverless Jobs API (`/serverless-jobs/v1alpha1/regions/{region}/...`): job definitions, and runs
// executed as local child processes (`/bin/sh -c COMMAND`) with the run's environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import type { EmulatorContext } from './context.js';
import {
  errors,
  isUuid,
  nowIso,
  optNumber,
  optString,
  optStringMap,
  orderBy,
  paginate,
  type Router,
} from './http.js';
import type { JobDefinitionRecord, JobRunRecord } from './state.js';

export const REGIONS = ['fr-par', 'nl-ams', 'pl-waw'];
const NAME = /^[A-Za-z0-9-_]{3,50}$/;
const RUN_STATES = ['unknown_state', 'queued', 'scheduled', 'running', 'succeeded', 'failed', 'canceled', 'internal_error'];
const ACTIVE = ['queued', 'scheduled', 'running'];
/** Variables of the emulator's own environment that a run inherits, so that local commands work. */
const INHERITED_ENV = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ', 'USER', 'SHELL', 'NODE_OPTIONS'];
const KILL_GRACE_MS = 5000;

function regionOf(region: string): string {
  if (!REGIONS.includes(region)) throw errors.invalidArguments('region', 'constraint', `unknown region ${region}`);
  return region;
}

function checkEnv(env: Record<string, string> | undefined, name: string): void {
  for (const k of Object.keys(env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw errors.invalidArguments(name, 'format', `invalid variable name ${k}`);
    if (k.startsWith('SCW_SLS')) throw errors.invalidArguments(name, 'constraint', `variable names starting with SCW_SLS are reserved (${k})`);
  }
}

function parseDurationSeconds(s: string | null): number | null {
  if (!s) return null;
  const m = /^(\d+(?:\.\d+)?)s$/.exec(s);
  if (!m) throw errors.invalidArguments('job_timeout', 'format', 'must be a duration such as "3600s"');
  return Number(m[1]);
}

export class JobRunner {
  private readonly processes = new Map<string, ChildProcess>();
  private readonly canceling = new Set<string>();
  private readonly shuttingDown = new Set<string>();

  constructor(private readonly c: EmulatorContext) {}

  /** On start-up: runs that were active when the emulator stopped cannot be resumed. */
  recover(): void {
    let changed = false;
    for (const r of this.c.state.jobRuns.values()) {
      if (ACTIVE.includes(r.state)) {
        this.finish(r, 'internal_error', null, 'the local Scaleway stopped while the run was active');
        changed = true;
      }
    }
    if (changed) this.c.state.save();
  }

  private finish(r: JobRunRecord, stateName: string, exitCode: number | null, message: string): void {
    const now = new Date();
    r.state = stateName;
    r.exit_code = exitCode;
    r.error_message = message;
    r.terminated_at = now.toISOString();
    r.updated_at = r.terminated_at;
    if (r.started_at) r.run_duration = `${((now.getTime() - Date.parse(r.started_at)) / 1000).toFixed(3)}s`;
    this.c.state.save();
  }

  schedule(r: JobRunRecord, timeoutSeconds: number | null): void {
    this.c.background.later(this.c.timings.jobStartMs, () => {
      if (r.state !== 'queued') return;
      this.execute(r, timeoutSeconds);
    });
  }

  private execute(r: JobRunRecord, timeoutSeconds: number | null): void {
    const { state, background } = this.c;
    if (!r.command.trim()) {
      r.started_at = nowIso();
      this.finish(r, 'failed', null, 'no command: the local Scaleway cannot run an image default command');
      return;
    }
    const env: Record<string, string> = {};
    for (const k of INHERITED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    Object.assign(env, r.environment_variables);
    const log = openSync(state.jobRunLogPath(r.id), 'a');
    let child: ChildProcess;
    try {
      child = spawn('/bin/sh', ['-c', r.command], {
        cwd: this.c.jobsCwd,
        env,
        stdio: ['ignore', log, log],
        detached: true, // its own process group, so that stop kills the whole command
      });
    } finally {
      closeSync(log);
    }
    this.processes.set(r.id, child);
    r.state = 'running';
    r.started_at = nowIso();
    r.updated_at = r.started_at;
    state.save();
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    if (timeoutSeconds) {
      timer = setTimeout(() => {
        timedOut = true;
        this.kill(r.id);
      }, timeoutSeconds * 1000);
      timer.unref();
    }
    background.run(
      () =>
        new Promise<void>((resolve) => {
          child.once('error', (err) => {
            clearTimeout(timer);
            this.processes.delete(r.id);
            this.finish(r, 'internal_error', null, `cannot start the command: ${err.message}`);
            resolve();
          });
          child.once('exit', (code, signal) => {
            clearTimeout(timer);
            this.processes.delete(r.id);
            if (this.shuttingDown.delete(r.id)) this.finish(r, 'internal_error', code, 'the local Scaleway stopped during the run');
            else if (this.canceling.delete(r.id)) this.finish(r, 'canceled', code, 'the job run was stopped');
            else if (timedOut) this.finish(r, 'failed', code, `the job run exceeded its timeout of ${timeoutSeconds}s`);
            else if (code === 0) this.finish(r, 'succeeded', 0, '');
            else if (code !== null) this.finish(r, 'failed', code, `the command exited with code ${code}`);
            else this.finish(r, 'failed', null, `the command was killed by ${signal}`);
            resolve();
          });
        }),
    );
  }

  private kill(id: string): void {
    const child = this.processes.get(id);
    if (!child?.pid) return;
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        // already gone
      }
    };
    signalGroup('SIGTERM');
    const t = setTimeout(() => this.processes.has(id) && signalGroup('SIGKILL'), KILL_GRACE_MS);
    t.unref();
  }

  stop(r: JobRunRecord): void {
    if (r.state === 'queued' || r.state === 'scheduled') {
      this.finish(r, 'canceled', null, 'the job run was stopped');
      return;
    }
    if (r.state === 'running') {
      this.canceling.add(r.id);
      this.kill(r.id);
    }
  }

  /** Kills every running command (server shutdown). */
  killAll(): void {
    for (const id of this.processes.keys()) {
      this.shuttingDown.add(id);
      this.kill(id);
    }
  }
}

export function jobsApi(router: Router, c: EmulatorContext, runner: JobRunner): void {
  const { state } = c;
  const base = '/serverless-jobs/v1alpha1/regions/{region}';

  const getDefinition = (region: string, id: string): JobDefinitionRecord => {
    const d = state.jobDefinitions.get(id);
    if (!d || d.region !== region) throw errors.notFound('job_definition', id);
    return d;
  };
  const getRun = (region: string, id: string): JobRunRecord => {
    const r = state.jobRuns.get(id);
    if (!r || r.region !== region) throw errors.notFound('job_run', id);
    return r;
  };
  const runView = ({ project_id: _p, ...r }: JobRunRecord) => r;

  router.add('POST', `${base}/job-definitions`, 'createJobDefinition', 'job_definition', (ctx) => {
    const region = regionOf(ctx.params.region!);
    const b = ctx.body;
    const name = optString(b, 'name') ?? '';
    if (!NAME.test(name)) throw errors.invalidArguments('name', 'format', 'must match ^[A-Za-z0-9-_]{3,50}$');
    const projectId = optString(b, 'project_id');
    if (!projectId || !isUuid(projectId)) throw errors.invalidArguments('project_id', 'format', 'must be a UUID');
    const cpu = optNumber(b, 'cpu_limit');
    const memory = optNumber(b, 'memory_limit');
    if (!cpu || cpu <= 0 || cpu > 6000) throw errors.invalidArguments('cpu_limit', 'constraint', 'must be 1..6000 mvCPU');
    if (!memory || memory <= 0 || memory > 16384) throw errors.invalidArguments('memory_limit', 'constraint', 'must be 1..16384 MiB');
    const env = optStringMap(b, 'environment_variables') ?? {};
    checkEnv(env, 'environment_variables');
    const timeout = optString(b, 'job_timeout') ?? null;
    parseDurationSeconds(timeout);
    const cron = b.cron_schedule as { schedule?: string; timezone?: string } | undefined | null;
    const now = nowIso();
    const d: JobDefinitionRecord = {
      id: randomUUID(),
      name,
      created_at: now,
      updated_at: now,
      cpu_limit: cpu,
      memory_limit: memory,
      local_storage_capacity: optNumber(b, 'local_storage_capacity') ?? 1000,
      image_uri: optString(b, 'image_uri') ?? '',
      command: optString(b, 'command') ?? '',
      project_id: projectId,
      environment_variables: env,
      description: optString(b, 'description') ?? '',
      job_timeout: timeout,
      cron_schedule: cron ? { schedule: cron.schedule ?? '', timezone: cron.timezone ?? 'UTC' } : null,
      region,
    };
    state.jobDefinitions.set(d.id, d);
    state.save();
    return d;
  });

  router.add('GET', `${base}/job-definitions/{id}`, 'getJobDefinition', 'job_definition', (ctx) =>
    getDefinition(regionOf(ctx.params.region!), ctx.params.id!),
  );

  router.add('GET', `${base}/job-definitions`, 'listJobDefinitions', 'job_definition', (ctx) => {
    const region = regionOf(ctx.params.region!);
    let items = [...state.jobDefinitions.values()].filter((d) => d.region === region);
    const projectId = ctx.query.get('project_id');
    if (projectId) items = items.filter((d) => d.project_id === projectId);
    const { page, total } = paginate(orderBy(items, ctx.query.get('order_by')), ctx.query);
    return { job_definitions: page, total_count: total };
  });

  router.add('PATCH', `${base}/job-definitions/{id}`, 'updateJobDefinition', 'job_definition', (ctx) => {
    const d = getDefinition(regionOf(ctx.params.region!), ctx.params.id!);
    const b = ctx.body;
    const name = optString(b, 'name');
    if (name !== undefined && !NAME.test(name)) throw errors.invalidArguments('name', 'format', 'must match ^[A-Za-z0-9-_]{3,50}$');
    const env = optStringMap(b, 'environment_variables');
    checkEnv(env, 'environment_variables');
    const timeout = optString(b, 'job_timeout');
    if (timeout !== undefined) parseDurationSeconds(timeout);
    const cpu = optNumber(b, 'cpu_limit');
    const memory = optNumber(b, 'memory_limit');
    if (cpu !== undefined && (cpu <= 0 || cpu > 6000)) throw errors.invalidArguments('cpu_limit', 'constraint', 'must be 1..6000 mvCPU');
    if (memory !== undefined && (memory <= 0 || memory > 16384)) {
      throw errors.invalidArguments('memory_limit', 'constraint', 'must be 1..16384 MiB');
    }
    if (name !== undefined) d.name = name;
    if (env !== undefined) d.environment_variables = env;
    if (timeout !== undefined) d.job_timeout = timeout;
    if (cpu !== undefined) d.cpu_limit = cpu;
    if (memory !== undefined) d.memory_limit = memory;
    const storage = optNumber(b, 'local_storage_capacity');
    if (storage !== undefined) d.local_storage_capacity = storage;
    for (const f of ['image_uri', 'command', 'description'] as const) {
      const v = optString(b, f);
      if (v !== undefined) d[f] = v;
    }
    const cron = b.cron_schedule as { schedule?: string; timezone?: string } | undefined | null;
    if (cron) d.cron_schedule = { schedule: cron.schedule ?? d.cron_schedule?.schedule ?? '', timezone: cron.timezone ?? d.cron_schedule?.timezone ?? 'UTC' };
    d.updated_at = nowIso();
    state.save();
    return d;
  });

  router.add('DELETE', `${base}/job-definitions/{id}`, 'deleteJobDefinition', 'job_definition', (ctx) => {
    const d = getDefinition(regionOf(ctx.params.region!), ctx.params.id!);
    state.jobDefinitions.delete(d.id);
    state.save();
    return null;
  });

  router.add('POST', `${base}/job-definitions/{id}/start`, 'startJobDefinition', 'job_definition', (ctx) => {
    const d = getDefinition(regionOf(ctx.params.region!), ctx.params.id!);
    const b = ctx.body;
    const command = optString(b, 'command');
    const envOverride = optStringMap(b, 'environment_variables');
    checkEnv(envOverride, 'environment_variables');
    const replicas = optNumber(b, 'replicas') ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 100) {
      throw errors.invalidArguments('replicas', 'constraint', 'must be between 1 and 100');
    }
    const timeoutSeconds = parseDurationSeconds(d.job_timeout);
    const runs: JobRunRecord[] = [];
    for (let i = 0; i < replicas; i++) {
      const now = nowIso();
      const r: JobRunRecord = {
        id: randomUUID(),
        job_definition_id: d.id,
        state: 'queued',
        created_at: now,
        updated_at: now,
        started_at: null,
        terminated_at: null,
        exit_code: null,
        run_duration: null,
        error_message: '',
        cpu_limit: d.cpu_limit,
        memory_limit: d.memory_limit,
        command: command || d.command,
        environment_variables: { ...d.environment_variables, ...envOverride },
        local_storage_capacity: d.local_storage_capacity,
        region: d.region,
        project_id: d.project_id,
      };
      state.jobRuns.set(r.id, r);
      runs.push(r);
    }
    state.save();
    for (const r of runs) runner.schedule(r, timeoutSeconds);
    return { job_runs: runs.map(runView) };
  });

  router.add('GET', `${base}/job-runs/{id}`, 'getJobRun', 'job_run', (ctx) =>
    runView(getRun(regionOf(ctx.params.region!), ctx.params.id!)),
  );

  router.add('POST', `${base}/job-runs/{id}/stop`, 'stopJobRun', 'job_run', (ctx) => {
    const r = getRun(regionOf(ctx.params.region!), ctx.params.id!);
    if (!ACTIVE.includes(r.state)) {
      throw errors.preconditionFailed('job_run_not_active', `the job run is already ${r.state}`);
    }
    runner.stop(r);
    return runView(r);
  });

  router.add('GET', `${base}/job-runs`, 'listJobRuns', 'job_run', (ctx) => {
    const region = regionOf(ctx.params.region!);
    const q = ctx.query;
    let items = [...state.jobRuns.values()].filter((r) => r.region === region);
    const defId = q.get('job_definition_id');
    if (defId) items = items.filter((r) => r.job_definition_id === defId);
    const projectId = q.get('project_id');
    if (projectId) items = items.filter((r) => r.project_id === projectId);
    const states = [...q.getAll('state'), ...q.getAll('states')];
    for (const s of states) {
      if (!RUN_STATES.includes(s)) throw errors.invalidArguments('state', 'constraint', `unknown state ${s}`);
    }
    if (states.length) items = items.filter((r) => states.includes(r.state));
    const { page, total } = paginate(orderBy(items, q.get('order_by')), q);
    return { job_runs: page.map(runView), total_count: total };
  });

  router.add('GET', `${base}/jobs-resources`, 'listJobsResources', 'job_definition', (ctx) => {
    regionOf(ctx.params.region!);
    return {
      resources: [
        { cpu_limit: 70, memory_limit: 256 },
        { cpu_limit: 140, memory_limit: 512 },
        { cpu_limit: 280, memory_limit: 1024 },
        { cpu_limit: 560, memory_limit: 2048 },
        { cpu_limit: 1120, memory_limit: 4096 },
        { cpu_limit: 2240, memory_limit: 8192 },
        { cpu_limit: 4480, memory_limit: 16384 },
      ],
    };
  });
}
