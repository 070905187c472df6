// The `scw-kloset` operator command. Each command group lives in its own file and registers itself;
// only the group named on the command line is loaded (the emulator and the SDKs are slow to load).
import { Command, CommanderError } from 'commander';
import { UserError } from './errors.js';

type Register = (program: Command) => void;
const GROUPS: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['store'], load: async () => (await import('./store.js')).registerStoreCommands },
  { commands: ['backup', 'restore', 'runs'], load: async () => (await import('./runs.js')).registerRunCommands },
  { commands: ['local'], load: async () => (await import('./local.js')).registerLocalCommand },
  { commands: ['demo'], load: async () => (await import('./demo.js')).registerDemoCommand },
  { commands: ['job'], load: async () => (await import('./job.js')).registerJobCommand },
];

const program = new Command('scw-kloset')
  .description('Back up and restore Scaleway Block Storage volumes into an encrypted, deduplicated Kloset store')
  .version('0.1.0')
  .exitOverride()
  .showHelpAfterError();

const named = process.argv[2];
const only = GROUPS.filter((g) => g.commands.includes(named ?? ''));
// --version needs no command; anything else unnamed (help, a typo) shows them all.
const loadAll = only.length === 0 && named !== '--version' && named !== '-V';
for (const g of loadAll ? GROUPS : only) (await g.load())(program);

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
