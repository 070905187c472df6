// Real disk images for tests and demos: an ext4 filesystem with files in it (`mkfs.ext4 -d` from
// e2fsprogs), sparse, and later edits of files inside it without mounting (`debugfs -w`), so that
// "the next day" of a volume changes a few blocks the way a running system would.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const SBIN_ENV = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };

/** File content: text, bytes, or `size` pseudo-random bytes from `seed` (written in pieces). */
export type FileContent = string | Uint8Array | { size: number; seed?: string };
/** Paths relative to the filesystem root ('etc/hostname', 'data/blob.bin') -> content. */
export type Ext4Files = Record<string, FileContent>;

/** Deterministic pseudo-random bytes (SHA-256 in counter mode), `size` bytes, written to `path`. */
export async function writePseudoRandomFile(path: string, size: number, seed = 'seed'): Promise<void> {
  const fh = await open(path, 'w');
  try {
    let counter = 0;
    for (let pos = 0; pos < size; ) {
      const piece = Buffer.allocUnsafe(Math.min(MiB, size - pos));
      for (let o = 0; o < piece.length; o += 32) {
        const h = createHash('sha256').update(`${seed}:${counter++}`).digest();
        h.copy(piece, o, 0, Math.min(32, piece.length - o));
      }
      await fh.write(piece, 0, piece.length, pos);
      pos += piece.length;
    }
  } finally {
    await fh.close();
  }
}

async function materialize(dir: string, files: Ext4Files): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(dir, ...rel.split('/').filter(Boolean));
    await mkdir(dirname(path), { recursive: true });
    if (typeof content === 'string' || content instanceof Uint8Array) await writeFile(path, content);
    else await writePseudoRandomFile(path, content.size, content.seed ?? rel);
  }
}

/**
 * Builds a sparse ext4 image of `sizeMiB` MiB at `path` holding `files` and/or the tree `dir`.
 * Only the blocks of the metadata and the files are allocated, so a GiB image costs a few MiB.
 */
export async function buildExt4Image(
  path: string,
  opts: { sizeMiB: number; files?: Ext4Files; dir?: string; label?: string },
): Promise<void> {
  if (!(opts.sizeMiB >= 8)) throw new Error('an ext4 image needs at least 8 MiB');
  let source = opts.dir;
  let tmp: string | undefined;
  if (opts.files) {
    tmp = await mkdtemp(join(tmpdir(), 'scw-kloset-ext4-'));
    if (opts.dir) await execFileP('cp', ['-a', `${opts.dir}/.`, tmp]);
    await materialize(tmp, opts.files);
    source = tmp;
  }
  try {
    const fh = await open(path, 'w');
    await fh.close();
    await truncate(path, opts.sizeMiB * MiB);
    const args = ['-q', '-F', '-t', 'ext4', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard'];
    if (opts.label) args.push('-L', opts.label);
    if (source) args.push('-d', source);
    args.push(path);
    await execFileP('mkfs.ext4', args, { env: SBIN_ENV });
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Writes (creates or replaces) files inside an ext4 image without mounting it, with `debugfs -w`.
 * Parent directories are created. Use it on a volume's file (EmulatorServer.volumePath) for "the
 * next day" of a volume.
 */
export async function ext4WriteFiles(imagePath: string, files: Ext4Files): Promise<void> {
  const tmp = await mkdtemp(join(tmpdir(), 'scw-kloset-debugfs-'));
  // debugfs's mkdir on an existing directory leaves an orphan inode behind: create only missing ones.
  const known = new Set<string>(['/']);
  const exists = async (path: string) => {
    if (known.has(path)) return true;
    const out = await execFileP('debugfs', ['-R', `stat ${quote(path)}`, imagePath], { env: SBIN_ENV });
    const found = !/not found/i.test(out.stderr) && /Inode:/.test(out.stdout);
    if (found) known.add(path);
    return found;
  };
  try {
    const commands: string[] = [];
    let n = 0;
    for (const [rel, content] of Object.entries(files)) {
      const parts = rel.split('/').filter(Boolean);
      const name = parts.pop()!;
      const local = join(tmp, `f${n++}`);
      await materialize(tmp, { [`f${n - 1}`]: content });
      commands.push('cd /');
      for (let i = 0; i < parts.length; i++) {
        const dir = posix.join('/', ...parts.slice(0, i + 1));
        if (await exists(dir)) continue;
        commands.push(`mkdir ${quote(dir)}`);
        known.add(dir);
      }
      commands.push(`cd ${quote(posix.join('/', ...parts))}`, `rm ${quote(name)}`, `write ${quote(local)} ${quote(name)}`);
    }
    const script = join(tmp, 'commands');
    await writeFile(script, commands.join('\n') + '\n');
    await execFileP('debugfs', ['-w', '-f', script, imagePath], { env: SBIN_ENV });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function quote(s: string): string {
  if (/["\s]/.test(s)) return `"${s.replace(/"/g, '\\"')}"`;
  return s;
}
