// The store passphrase: KLOSET_PASSPHRASE, else a prompt on the terminal. Never logged, never an argument.
import { UserError } from './errors.js';

export async function readPassphrase(opts: { confirm?: boolean; envName?: string; what?: string } = {}): Promise<string> {
  const envName = opts.envName ?? 'KLOSET_PASSPHRASE';
  const fromEnv = process.env[envName];
  if (fromEnv) return fromEnv;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new UserError(`no passphrase: set ${envName} (no terminal to prompt on)`);
  }
  // Loaded only to prompt: it costs ~0.1 s of start-up, and scripts set the variable.
  const { default: password } = await import('@inquirer/password');
  const what = opts.what ?? 'Store passphrase';
  const first = await password({ message: `${what}:`, mask: true }, { output: process.stderr });
  if (!first) throw new UserError('the passphrase must not be empty');
  if (opts.confirm) {
    const again = await password({ message: `${what} (again):`, mask: true }, { output: process.stderr });
    if (again !== first) throw new UserError('the passphrases do not match');
  }
  return first;
}
