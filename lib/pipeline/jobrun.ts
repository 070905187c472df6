// Starting the Serverless Job that streams large images, at most once per run.
import type { Resource } from './config.js';
import type { Pipeline } from './context.js';
import type { RunRecord } from './runs.js';
import { keepOldest, TERMINAL_JOB_STATES } from './stages.js';

export type JobMode = 'backup' | 'restore';

/** Starts the job for a run unless a live run of it exists; racing starts converge on the oldest. */
export async function ensureJobRun(p: Pipeline, r: Resource, run: RunRecord, mode: JobMode): Promise<string> {
  const jobDefinitionId = p.platform.jobDefinitionId;
  if (!jobDefinitionId) throw new Error('no job definition configured (KLOSET_JOB_DEFINITION_ID)');
  const { jobs } = p.clients(r);
  const mine = async () =>
    (await jobs.listJobRuns({ jobDefinitionId, pageSize: 100, orderBy: 'created_at_desc' })).jobRuns.filter(
      (j) => j.environmentVariables?.KLOSET_RUN_ID === run.id && !TERMINAL_JOB_STATES.has(j.state),
    );
  if ((await mine()).length === 0) {
    await jobs.startJobDefinition({
      jobDefinitionId,
      environmentVariables: { KLOSET_RUN_ID: run.id, KLOSET_RESOURCE: r.name, KLOSET_JOB_MODE: mode },
    });
  }
  const winner = await keepOldest(await mine(), (j) => jobs.stopJobRun({ jobRunId: j.id }));
  if (!winner) throw new Error(`the job run for ${run.id} could not be found after starting it`);
  p.log.info('job run started', { runId: run.id, jobRunId: winner.id, mode });
  return winner.id;
}
