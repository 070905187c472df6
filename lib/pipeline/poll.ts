// poll-export: advances every run that waits on Scaleway, for every resource. One failing run does
// not stop the others; two overlapping ticks are harmless because every step is idempotent.
import type { Pipeline } from './context.js';
import { advanceBackup } from './backup.js';
import { advanceRestore } from './restore.js';
import type { RunRecord } from './runs.js';

export interface PollReport {
  advanced: { runId: string; stage: string; status: string }[];
  errors: { runId: string; error: string }[];
}

export async function pollRuns(p: Pipeline, only?: { resource?: string; runId?: string }): Promise<PollReport> {
  const report: PollReport = { advanced: [], errors: [] };
  for (const r of p.resources) {
    if (only?.resource && r.name !== only.resource) continue;
    const runs = p.runs(r);
    const ids = only?.runId ? [only.runId] : await runs.listActiveIds();
    for (const id of ids) {
      let run: RunRecord | null = null;
      try {
        run = await runs.get(id);
        if (!run || run.status !== 'running') continue;
        if (run.kind === 'backup') await advanceBackup(p, r, run);
        else await advanceRestore(p, r, run);
        report.advanced.push({ runId: id, stage: run.stage, status: run.status });
      } catch (err) {
        p.log.error('poll step failed', { runId: id, resource: r.name, error: (err as Error).message });
        report.errors.push({ runId: id, error: (err as Error).message });
      }
    }
  }
  return report;
}
