// `scw-kloset backup | restore | runs`: the pipeline's flows from the command line, configured like
// the functions (KLOSET_RESOURCES or --config, KLOSET_* endpoints, secrets from the environment).
import type { Command } from 'commander';
import { ConfigError } from '../lib/pipeline/config.js';
import { Pipeline, UnknownResourceError } from '../lib/pipeline/context.js';
import { RequestProblem, triggerBackup } from '../lib/pipeline/backup.js';
import { RestoreRequestSchema, startRestore } from '../lib/pipeline/restore.js';
import { followRun, stageDurations } from '../lib/pipeline/follow.js';
import { jsonLogger, silentLogger } from '../lib/pipeline/log.js';
import type { RunRecord } from '../lib/pipeline/runs.js';
import { UserError } from './errors.js';
import { byteProgress } from './progress.js';

const MiB = 1024 * 1024;

async function pipeline(o: { config?: string }): Promise<Pipeline> {
  if (o.config) process.env.KLOSET_RESOURCES_FILE = o.config;
  try {
    // Structured logs only when nobody watches a terminal; the terminal gets a bar and stage lines.
    return await Pipeline.fromEnv(process.env, process.stderr.isTTY ? silentLogger : jsonLogger((l) => process.stderr.write(l)));
  } catch (err) {
    if (err instanceof ConfigError) throw new UserError(err.message);
    throw err;
  }
}

async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof RequestProblem || err instanceof UnknownResourceError) throw new UserError(err.message);
    throw err;
  }
}

/** Follows a run, printing stage changes and a progress bar on a terminal. */
async function follow(p: Pipeline, resource: string, runId: string, drive: boolean): Promise<RunRecord> {
  let lastStage = '';
  let bar: ReturnType<typeof byteProgress> | null = null;
  const run = await followRun(p, resource, runId, {
    drive,
    onUpdate(run, progress) {
      if (run.stage !== lastStage) {
        bar?.stop();
        bar = null;
        lastStage = run.stage;
        if (run.stage !== 'done') process.stderr.write(`  ${new Date().toISOString().slice(11, 19)}  ${run.stage}\n`);
      }
      if (progress?.bytesTotal) {
        bar ??= byteProgress(`  ${run.stage.padEnd(9)}`, progress.bytesTotal);
        bar.update(progress.bytesDone, progress.bytesTotal);
      }
    },
  });
  (bar as ReturnType<typeof byteProgress> | null)?.stop();
  return run;
}

export function summarizeRun(run: RunRecord): string {
  const lines = [`run ${run.id}: ${run.status}`];
  lines.push(`  stages: ${stageDurations(run).map((s) => `${s.stage} ${s.seconds.toFixed(1)}s`).join(', ')}`);
  const res = run.result;
  if (run.kind === 'backup' && res?.ok) {
    lines.push(`  store snapshot ${res.storeSnapshot}`);
    lines.push(`  read ${((res.bytesRead ?? 0) / MiB).toFixed(1)} MiB, added ${((res.bytesAdded ?? 0) / MiB).toFixed(1)} MiB (dedup+compression ratio ${((res.bytesRead ?? 0) / Math.max(1, res.bytesAdded ?? 0)).toFixed(1)}x)`);
  }
  if (run.kind === 'restore' && run.volumeId) lines.push(`  new volume ${run.volumeId} in ${run.restore?.target.zone}`);
  if (run.error) lines.push(`  error (${run.error.stage}): ${run.error.message}`);
  for (const l of run.leftovers ?? []) lines.push(`  left behind: ${l.kind} ${l.id}: ${l.error}`);
  return lines.join('\n') + '\n';
}

function finish(run: RunRecord, json?: boolean): void {
  if (json) process.stdout.write(`${JSON.stringify(run)}\n`);
  else process.stderr.write(summarizeRun(run));
  if (run.status !== 'succeeded') process.exitCode = 1;
}

export function registerRunCommands(program: Command): void {
  program
    .command('backup')
    .description('back up a configured volume now: snapshot, export, ship to the store, clean up; follows the run to its end')
    .requiredOption('--resource <name>', 'the configured resource (volume) to back up')
    .option('--config <file>', 'resources JSON file (default: KLOSET_RESOURCES or KLOSET_RESOURCES_FILE)')
    .option('--no-drive', 'only watch: leave the work to the deployed functions')
    .option('--json', 'print the final run record as JSON')
    .action(async (o: { resource: string; config?: string; drive: boolean; json?: boolean }) => {
      const p = await pipeline(o);
      const out = await guard(() => triggerBackup(p, o.resource, { trigger: 'cli' }));
      if ('skipped' in out) throw new UserError(out.skipped);
      process.stderr.write(`backup ${out.run.id} of ${o.resource}\n`);
      finish(await follow(p, o.resource, out.run.id, o.drive), o.json);
    });

  program
    .command('restore')
    .description('restore a store snapshot into a new volume: upload, import, create the volume, clean up')
    .requiredOption('--resource <name>', 'the configured resource whose store and staging bucket to use')
    .requiredOption('--snapshot <id>', 'store snapshot id or a unique prefix')
    .requiredOption('--volume-name <name>', 'name of the new volume')
    .option('--zone <zone>', 'zone of the new volume (default: the resource zone)')
    .option('--size <bytes>', 'size of the new volume in bytes (only larger than the image)', (v) => Number(v))
    .option('--iops <n>', 'performance: 5000 or 15000', (v) => Number(v))
    .option('--config <file>', 'resources JSON file')
    .option('--no-drive', 'only watch: leave the work to the deployed functions')
    .option('--json', 'print the final run record as JSON')
    .action(async (o: { resource: string; snapshot: string; volumeName: string; zone?: string; size?: number; iops?: number; config?: string; drive: boolean; json?: boolean }) => {
      const req = RestoreRequestSchema.safeParse({
        resource: o.resource,
        snapshot: o.snapshot,
        target: { zone: o.zone, volumeName: o.volumeName, size: o.size, perfIops: o.iops },
      });
      if (!req.success) throw new UserError(req.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
      const p = await pipeline(o);
      const { run } = await guard(() => startRestore(p, req.data, 'cli'));
      process.stderr.write(`restore ${run.id}: snapshot ${run.restore?.storeSnapshot.slice(0, 12)} -> volume ${o.volumeName}\n`);
      finish(await follow(p, o.resource, run.id, o.drive), o.json);
    });

  const runs = program.command('runs').description('list backup and restore runs (from the run records in the staging buckets)');
  runs
    .option('--resource <name>', 'only this resource')
    .option('--config <file>', 'resources JSON file')
    .option('--active', 'only runs in progress')
    .option('--json', 'print a JSON array')
    .action(async (o: { resource?: string; config?: string; active?: boolean; json?: boolean }) => {
      const p = await pipeline(o);
      const all: RunRecord[] = [];
      for (const r of p.resources) {
        if (o.resource && r.name !== o.resource) continue;
        const store = p.runs(r);
        const ids = o.active ? await store.listActiveIds() : await store.listIds();
        for (const id of ids) {
          const run = await store.get(id);
          if (run) all.push(run);
        }
      }
      all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      if (o.json) {
        process.stdout.write(`${JSON.stringify(all)}\n`);
        return;
      }
      const rows = [['RUN', 'KIND', 'STATUS', 'STAGE', 'CREATED', 'DURATION', 'DETAIL']];
      for (const run of all) {
        const secs = ((run.endedAt ? Date.parse(run.endedAt) : Date.now()) - Date.parse(run.createdAt)) / 1000;
        const detail = run.error?.message ?? (run.kind === 'backup' ? run.result?.storeSnapshot?.slice(0, 12) : run.volumeId) ?? '';
        rows.push([run.id, run.kind, run.status, run.stage, run.createdAt.replace('T', ' ').slice(0, 19), `${secs.toFixed(0)}s`, detail]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
    });
  runs
    .command('show')
    .description('show one run: stage, progress, timings, errors')
    .argument('<id>', 'run id')
    .option('--config <file>', 'resources JSON file')
    .option('--json', 'print the run record as JSON')
    .action(async (id: string, o: { config?: string; json?: boolean }) => {
      const p = await pipeline(o);
      for (const r of p.resources) {
        const store = p.runs(r);
        const run = await store.get(id);
        if (!run) continue;
        const progress = await store.getProgress(id);
        if (o.json) process.stdout.write(`${JSON.stringify({ ...run, progress })}\n`);
        else {
          process.stdout.write(summarizeRun(run));
          process.stdout.write(`  stage ${run.stage}, deadline ${run.deadline}\n`);
          if (progress && run.status === 'running') process.stdout.write(`  progress ${(progress.bytesDone / MiB).toFixed(1)}/${((progress.bytesTotal ?? 0) / MiB).toFixed(1)} MiB at ${progress.at}\n`);
        }
        return;
      }
      throw new UserError(`no run ${id} in any configured resource's bucket`);
    });
}
