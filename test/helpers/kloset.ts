// Shared helpers of the Kloset store tests: the CLI as a child process, fast stores, deterministic data,
// directory listings and byte flips.
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { Archiver, initStore, openStore, type KdfParams, type Repository, Restorer } from '../../lib/kloset/store.js';
import type { BackupResult } from '../../lib/kloset/archiver.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(ROOT, 'bin', 'scw-kloset.js');

export const PASSPHRASE = 'correct horse battery staple';
/** Argon2id at its cheapest: the tests are about the store, not the KDF's cost. */
export const FAST_KDF: KdfParams = { name: 'argon2id', t: 1, m: 8192, p: 1 };
/** The same through the CLI's init options. */
export const FAST_KDF_ARGS = ['--kdf-memory', '8', '--kdf-iterations', '1'];

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** stdout as text. */
  out: string;
}

export interface CliOptions {
  /** KLOSET_PASSPHRASE; null leaves it unset. Defaults to PASSPHRASE. */
  passphrase?: string | null;
  /** Extra environment; undefined values remove a variable. */
  env?: Record<string, string | undefined>;
  /** Fed to stdin: a file path (streamed) or bytes. Otherwise stdin is empty. */
  stdinFile?: string;
  stdin?: Buffer;
}

/** The environment of a CLI child: no inherited store, passphrase or S3 settings. */
function cliEnv(opts: CliOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(KLOSET_|AWS_)/.test(k)) continue;
    env[k] = v;
  }
  const pass = opts.passphrase === undefined ? PASSPHRASE : opts.passphrase;
  if (pass !== null) env.KLOSET_PASSPHRASE = pass;
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function spawnCli(args: string[], opts: CliOptions = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: cliEnv(opts), stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdin!.on('error', () => {}); // the child may exit (or be killed) before reading all of it
  if (opts.stdinFile) void pipeline(createReadStream(opts.stdinFile), child.stdin!).catch(() => {});
  else child.stdin!.end(opts.stdin ?? Buffer.alloc(0));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out);
      resolve({ code, signal, stdout, stderr: err, out: stdout.toString('utf8') });
    });
  });
  return { child, done };
}

export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return spawnCli(args, opts).done;
}

/** Runs a command that must succeed; a failure shows its stderr. */
export async function cliOk(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const r = await runCli(args, opts);
  if (r.code !== 0) throw new Error(`scw-kloset ${args.join(' ')} exited ${r.code ?? r.signal}:\n${r.stderr}`);
  return r;
}

export async function cliBackupJson(store: string, source: string, extra: string[] = [], opts: CliOptions = {}): Promise<BackupResult> {
  const r = await cliOk(['store', 'backup', '--store', store, source, '--json', ...extra], opts);
  return JSON.parse(r.out) as BackupResult;
}

export async function makeTmp(prefix = 'kloset-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A store created in-process (cheap KDF), optionally with small packs. */
export async function createStore(dir: string, opts: { packSize?: number } = {}): Promise<void> {
  await initStore(dir, PASSPHRASE, { kdf: FAST_KDF, packSize: opts.packSize });
}

export async function withRepo<T>(location: string, fn: (repo: Repository) => Promise<T>, passphrase = PASSPHRASE): Promise<T> {
  const repo = await openStore(location, passphrase);
  try {
    return await fn(repo);
  } finally {
    await repo.backend.close();
  }
}

/** Backs up bytes in-process (much faster than a CLI round trip, for set-up). */
export async function backupBuffer(location: string, data: Buffer, tags: Record<string, string> = {}): Promise<BackupResult> {
  return withRepo(location, (repo) =>
    new Archiver(repo).backup(
      (async function* () {
        for (let at = 0; at < data.length; at += 4 * MiB) yield data.subarray(at, at + 4 * MiB);
      })(),
      { meta: { source: { path: 'buffer' }, tags } },
    ),
  );
}

/** Restores a snapshot (id or prefix) in-process into memory. */
export async function restoreToBuffer(location: string, prefix: string, passphrase = PASSPHRASE): Promise<Buffer> {
  return withRepo(location, async (repo) => {
    const parts: Buffer[] = [];
    await new Restorer(repo).restore(await repo.resolveSnapshotId(prefix), { write: async (bufs) => void parts.push(...bufs.map((b) => Buffer.from(b))) });
    return Buffer.concat(parts);
  }, passphrase);
}

// ---- deterministic data ----

/** mulberry32: a small seeded PRNG for choices (positions, delays). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Incompressible, reproducible bytes: an AES-CTR keystream seeded by `seed`. */
export function randomData(size: number, seed: number | string): Buffer {
  const key = createHash('sha256').update(`kloset-test-${seed}`).digest().subarray(0, 16);
  const c = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

/** Compressible, non-trivial text. */
export function textData(size: number, seed = 1): Buffer {
  const words = ['volume', 'snapshot', 'kloset', 'block', 'scaleway', 'qcow2', 'cluster', 'backup', 'restore', 'pack'];
  const r = prng(seed);
  const parts: string[] = [];
  let n = 0;
  while (n < size) {
    const w = words[Math.floor(r() * words.length)]! + (r() < 0.1 ? '\n' : ' ');
    parts.push(w);
    n += w.length;
  }
  return Buffer.from(parts.join('').slice(0, size));
}

/** A disk-like image: random regions, text, explicit zeros. */
export function imageData(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  const r = prng(seed);
  let at = 0;
  let i = 0;
  while (at < size) {
    const len = Math.min(size - at, Math.floor((0.5 + r() * 2) * MiB));
    const kind = i++ % 4;
    if (kind === 0 || kind === 2) randomData(len, `${seed}-${at}`).copy(out, at);
    else if (kind === 1) textData(len, seed * 1000 + i).copy(out, at);
    // kind 3: zeros
    at += len;
  }
  return out;
}

export async function writeFileStreaming(path: string, data: Buffer): Promise<void> {
  await pipeline(
    (async function* () {
      for (let at = 0; at < data.length; at += 4 * MiB) yield data.subarray(at, at + 4 * MiB);
    })(),
    createWriteStream(path),
  );
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const d of createReadStream(path)) h.update(d as Buffer);
  return h.digest('hex');
}

// ---- store files ----

export interface FileEntry {
  path: string;
  size: number;
  mtimeMs: number;
}

/** Every file and directory under `dir`, with size and mtime, sorted: compare before and after. */
export async function listTree(dir: string): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  const walk = async (d: string) => {
    const entries = await readdir(d, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return []; // removed meanwhile (a writer's tmp/ rename)
      throw err;
    });
    for (const e of entries) {
      const p = join(d, e.name);
      const st = await stat(p).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null;
        throw err;
      });
      if (!st) continue;
      out.push({ path: relative(dir, p) + (e.isDirectory() ? '/' : ''), size: e.isDirectory() ? 0 : st.size, mtimeMs: st.mtimeMs });
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

/** Files (not directories) under `dir` whose relative path starts with `prefix`, e.g. "packs/". */
export async function storeFiles(dir: string, prefix: string): Promise<FileEntry[]> {
  return (await listTree(dir)).filter((f) => !f.path.endsWith('/') && f.path.startsWith(prefix));
}

/** XORs one byte of a file in place. */
export async function flipByte(path: string, offset: number, mask = 0x01): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    const { bytesRead } = await fh.read(b, 0, 1, offset);
    if (bytesRead !== 1) throw new Error(`${path} has no byte at ${offset}`);
    b[0]! ^= mask;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

export async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T;
}

/** Shortest prefix of `id` that no other id shares (at least `min` characters). */
export function uniquePrefix(id: string, others: string[], min = 1): string {
  for (let n = min; n <= id.length; n++) {
    const p = id.slice(0, n);
    if (!others.some((o) => o !== id && o.startsWith(p))) return p;
  }
  return id;
}
