// Following a run to its end from the command line. With `drive`, the caller also does the work the
// cron and queue triggers would do for this run (poll steps, shipping, importing), so a run finishes
// even where no functions are deployed; duplicates with deployed functions are harmless.
import type { Pipeline } from './context.js';
import { shipBackup } from './backup.js';
import { importVolume } from './restore.js';
import { pollRuns } from './poll.js';
import type { Progress, RunRecord } from './runs.js';

export interface FollowOptions {
  drive: boolean;
  intervalMs?: number;
  onUpdate?: (run: RunRecord, progress: Progress | null) => void;
  /** Give up after this long (the run goes on; its stage deadlines still apply). */
  timeoutMs?: number;
}

export async function followRun(p: Pipeline, resource: string, runId: string, opts: FollowOptions): Promise<RunRecord> {
  const r = p.resource(resource);
  const runs = p.runs(r);
  const deadline = Date.now() + (opts.timeoutMs ?? 48 * 3600_000);
  for (;;) {
    let run = await runs.get(runId);
    if (!run) throw new Error(`no run ${runId} for resource ${resource}`);
    if (opts.drive && run.status === 'running') {
      if (run.kind === 'backup' && run.stage === 'shipping' && !run.shipping) await shipBackup(p, resource, runId);
      else if (run.kind === 'restore' && run.stage === 'importing' && !run.importedSnapshotId) await importVolume(p, resource, runId);
      else await pollRuns(p, { resource, runId });
      run = (await runs.get(runId))!;
    }
    const progress = run.status === 'running' ? await runs.getProgress(runId) : null;
    opts.onUpdate?.(run, progress);
    if (run.status !== 'running') return run;
    if (Date.now() > deadline) throw new Error(`gave up following run ${runId} (still ${run.stage})`);
    await new Promise((res) => setTimeout(res, opts.intervalMs ?? 1000));
  }
}

export function stageDurations(run: RunRecord): { stage: string; seconds: number }[] {
  return run.stages.map((s) => ({
    stage: s.stage,
    seconds: ((s.endedAt ? Date.parse(s.endedAt) : Date.now()) - Date.parse(s.startedAt)) / 1000,
  }));
}
