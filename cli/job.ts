import type { Command } from 'commander';

// `scw-kloset job`: the Serverless Job entry (the local Scaleway's job runs execute this command).
export function registerJobCommand(program: Command): void {
  program
    .command('job')
    .description('run the Serverless Job of one run (configured by KLOSET_RUN_ID, KLOSET_RESOURCE, KLOSET_JOB_MODE and KLOSET_* settings)')
    .action(async () => {
      const { main, exitOnSignals } = await import('../jobs/main.js');
      exitOnSignals();
      process.exitCode = await main();
    });
}
