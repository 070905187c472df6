// Stage transitions shared by both flows, and the rules every run follows:
// - a stage has a deadline; past it the run fails;
// - failing or succeeding goes through `cleaning`, which removes what the run created, retrying on
//   later poll ticks while Scaleway resources are busy, and records what it could not remove;
// - resources a racing duplicate created twice are reduced to the oldest (create, then converge),
//   so no conditional writes are needed from Object Storage.
import { randomBytes } from 'node:crypto';
import { Errors } from '@scaleway/sdk-client';
import type { Resource } from './config.js';
import type { Pipeline } from './context.js';
import { cleanup } from './cleanup.js';
import type { RunRecord, RunStore, Stage, StreamResult } from './runs.js';

export const nowIso = () => new Date().toISOString();

export function enterStage(p: Pipeline, run: RunRecord, stage: Stage): void {
  const now = nowIso();
  const open = run.stages[run.stages.length - 1];
  if (open && !open.endedAt) open.endedAt = now;
  run.stage = stage;
  run.deadline = new Date(Date.now() + p.deadlineSeconds(stage) * 1000).toISOString();
  if (stage !== 'done') run.stages.push({ stage, startedAt: now });
}

export function markFailed(p: Pipeline, run: RunRecord, message: string): void {
  if (run.outcome) return;
  run.error = { stage: run.stage, message, at: nowIso() };
  run.outcome = 'failed';
  p.log.error('run failed', { runId: run.id, resource: run.resource, stage: run.stage, error: message });
  enterStage(p, run, 'cleaning');
}

export function markSucceeded(p: Pipeline, run: RunRecord): void {
  if (run.outcome) return;
  run.outcome = 'succeeded';
  enterStage(p, run, 'cleaning');
}

export function pastDeadline(run: RunRecord): boolean {
  return Date.now() > Date.parse(run.deadline);
}

/** Cleans up and, once nothing is left (or the cleaning deadline passed), ends the run. Saves it. */
export async function finishCleaning(p: Pipeline, r: Resource, run: RunRecord): Promise<void> {
  const { pending, leftovers } = await cleanup(p, r, run);
  const expired = pastDeadline(run);
  if (pending.length === 0 || expired) {
    const all = [...leftovers, ...(expired ? pending.map((x) => ({ ...x, error: `still present when cleaning timed out: ${x.error}` })) : [])];
    if (all.length > 0) run.leftovers = all;
    run.status = run.outcome ?? 'failed';
    run.endedAt = nowIso();
    enterStage(p, run, 'done');
    p.log.info('run ended', { runId: run.id, resource: run.resource, status: run.status, leftovers: all.length });
  }
  await p.runs(r).save(run);
}

/**
 * Saves the record of a poll step, unless the step changed nothing or another invocation (an
 * overlapping tick, ship-to-kloset) saved the run since it was read: writing back a stale copy would
 * move the run back a stage (and redo an export) or drop what the other one recorded.
 */
export async function saveStep(runs: RunStore, run: RunRecord, before: string): Promise<void> {
  if (JSON.stringify(run) === before) return;
  const stored = await runs.get(run.id);
  if (stored && stored.updatedAt !== (JSON.parse(before) as RunRecord).updatedAt) return;
  await runs.save(run);
}

/** How long a claim is left for racing duplicates to overwrite before it is checked. */
export const CLAIM_SETTLE_MS = 1000;

export function newClaim(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Object Storage has no conditional writes, so "only one invocation does this" is a claim: each
 * racing invocation writes its own token into the run, waits for the others' writes to land, and
 * reads the run back; only the one whose token stayed (the last write) goes on.
 */
export async function claimStayed(runs: RunStore, runId: string, claim: string, read: (r: RunRecord) => string | undefined): Promise<{ stayed: boolean; stored: RunRecord | null }> {
  await new Promise((res) => setTimeout(res, CLAIM_SETTLE_MS));
  const stored = await runs.get(runId);
  return { stayed: !!stored && read(stored) === claim, stored };
}

export function runTag(runId: string): string {
  return `kloset-run=${runId}`;
}

/** Of several copies created by racing invocations, keeps the oldest and removes the others. */
export async function keepOldest<T extends { id: string; createdAt?: Date }>(items: T[], remove: (t: T) => Promise<unknown>): Promise<T | undefined> {
  const sorted = [...items].sort((a, b) => (a.createdAt?.getTime() ?? 0) - (b.createdAt?.getTime() ?? 0) || a.id.localeCompare(b.id));
  for (const extra of sorted.slice(1)) await remove(extra).catch(() => {}); // retried on the next tick
  return sorted[0];
}

export const isNotFound = (err: unknown) => err instanceof Errors.ResourceNotFoundError || (err as { status?: number })?.status === 404;
export const isTransient = (err: unknown) => err instanceof Errors.TransientStateError;

export const TERMINAL_JOB_STATES = new Set(['succeeded', 'failed', 'canceled', 'internal_error']);

/**
 * Where the streaming worker (function or job) of a run stands: its result if it wrote one,
 * a failure if its job ended without one, or 'waiting'.
 */
export async function workerOutcome(p: Pipeline, r: Resource, run: RunRecord): Promise<StreamResult | 'waiting' | { lost: true }> {
  const result = await p.runs(r).getResult(run.id);
  if (result) return result;
  const jobRunId = run.shipping?.jobRunId;
  if (jobRunId) {
    const jr = await p.clients(r).jobs.getJobRun({ jobRunId });
    if (TERMINAL_JOB_STATES.has(jr.state)) {
      // The job may have written its result just before ending: read once more.
      const late = await p.runs(r).getResult(run.id);
      if (late) return late;
      const why = jr.state === 'succeeded' ? 'ended without reporting a result' : `ended ${jr.state}${jr.exitCode != null ? ` (exit code ${jr.exitCode})` : ''}${jr.errorMessage ? `: ${jr.errorMessage}` : ''}`;
      return { ok: false, error: `job run ${jobRunId} ${why}`, startedAt: run.shipping!.startedAt, endedAt: nowIso(), by: 'job' };
    }
    return 'waiting';
  }
  if (!run.shipping) return { lost: true };
  return 'waiting';
}
