// A stand-in for `scw-kloset store` that only honours the CLI contract (init / backup --json /
// restore), by copying whole files. It exists to exercise the benchmark's plumbing before the real
// store lands: `npm run bench -- --small --ours-cmd "node --import tsx bench/stub-store.ts"`.
// Its figures mean nothing.
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';

const [group, cmd, ...rest] = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const positional = rest.filter((a, i) => !a.startsWith('--') && !rest[i - 1]?.startsWith('--store') && rest[i - 1] !== '--to');

if (group === '--version') {
  process.stdout.write('stub\n');
  process.exit(0);
}
if (group !== 'store' || !cmd) {
  process.stderr.write('usage: stub-store store init|backup|restore --store DIR ...\n');
  process.exit(2);
}
if (rest.includes('--help')) {
  process.stdout.write(`Usage: stub-store store ${cmd} --store <dir> ...\n`);
  process.exit(0);
}
const store = opt('--store');
if (!store) throw new Error('--store is required');

if (cmd === 'init') {
  await mkdir(join(store, 'data'), { recursive: true });
  await writeFile(join(store, 'config'), JSON.stringify({ stub: true, id: randomBytes(8).toString('hex') }));
} else if (cmd === 'backup') {
  const file = positional[0];
  const h = createHash('sha256');
  for await (const b of createReadStream(file)) h.update(b as Buffer);
  const id = h.digest('hex');
  const dest = join(store, 'data', id);
  const size = (await stat(file)).size;
  const added = existsSync(dest) ? 0 : size;
  if (!added) {
    /* already stored */
  } else await copyFile(file, dest);
  await writeFile(join(store, `snapshot-${id.slice(0, 16)}`), id);
  process.stdout.write(JSON.stringify({ snapshot: id.slice(0, 16), bytesRead: size, bytesAdded: added }) + '\n');
} else if (cmd === 'restore') {
  const id = (await readFile(join(store, `snapshot-${positional[0]}`), 'utf8')).trim();
  await copyFile(join(store, 'data', id), opt('--to')!);
} else {
  process.stderr.write(`unknown command ${cmd}\n`);
  process.exit(2);
}
