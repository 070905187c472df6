// The Serverless Job: streams one run's image between the staging bucket and the Kloset store.
// Started by ship-to-kloset (backup) or restore-upload (restore) with KLOSET_RUN_ID, KLOSET_RESOURCE
// and KLOSET_JOB_MODE; the rest of its configuration is the job definition's environment.
// It reports through the run's result object; poll-export moves the run on.
import { pathToFileURL } from 'node:url';
import { Pipeline } from '../lib/pipeline/context.js';
import { ConfigError } from '../lib/pipeline/config.js';
import { streamBackup, streamRestore } from '../lib/pipeline/stream.js';

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const missing = ['KLOSET_RUN_ID', 'KLOSET_RESOURCE', 'KLOSET_JOB_MODE'].filter((n) => !env[n]);
  if (missing.length > 0) {
    process.stderr.write(`scw-kloset job: missing environment variable(s): ${missing.join(', ')}\n`);
    return 2;
  }
  const mode = env.KLOSET_JOB_MODE;
  if (mode !== 'backup' && mode !== 'restore') {
    process.stderr.write(`scw-kloset job: KLOSET_JOB_MODE must be backup or restore, got "${mode}"\n`);
    return 2;
  }
  let p: Pipeline;
  try {
    p = await Pipeline.fromEnv(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`scw-kloset job: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const r = p.resource(env.KLOSET_RESOURCE!);
  const run = await p.runs(r).get(env.KLOSET_RUN_ID!);
  if (!run) {
    process.stderr.write(`scw-kloset job: no run ${env.KLOSET_RUN_ID} for resource ${r.name}\n`);
    return 2;
  }
  p.log.info('job started', { runId: run.id, mode });
  const result = mode === 'backup' ? await streamBackup(p, r, run, 'job') : await streamRestore(p, r, run, 'job');
  p.log.info(result.ok ? 'job succeeded' : 'job failed', { runId: run.id, ...result });
  return result.ok ? 0 : 1;
}

/**
 * In a container Node runs as PID 1, where the kernel installs no default SIGTERM action: without a
 * handler a stopped or timed-out job run would not end. The run's data stays safe (the store is
 * crash-safe); poll-export sees the run ended and fails it.
 */
export function exitOnSignals(): void {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      process.stderr.write(`scw-kloset job: ${sig} received, stopping\n`);
      process.exit(sig === 'SIGTERM' ? 143 : 130);
    });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  exitOnSignals();
  process.exitCode = await main();
}
