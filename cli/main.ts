// The `scw-kloset` operator command. Each command group lives in its own file and registers itself.
import { Command, CommanderError } from 'commander';
import { registerStoreCommands } from './store.js';
import { registerLocalCommand } from './local.js';
import { registerDemoCommand } from './demo.js';
import { registerJobCommand } from './job.js';
import { registerRunCommands } from './runs.js';
import { UserError } from './errors.js';

const program = new Command('scw-kloset')
  .description('Back up and restore Scaleway Block Storage volumes into an encrypted, deduplicated Kloset store')
  .version('0.1.0')
  .exitOverride()
  .showHelpAfterError();

registerStoreCommands(program);
registerLocalCommand(program);
registerDemoCommand(program);
registerJobCommand(program);
registerRunCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof UserError) {
    process.stderr.write(`scw-kloset: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`scw-kloset: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
}
