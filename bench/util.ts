// Small helpers shared by the benchmark scripts: running commands, timing them with /usr/bin/time,
// seeded pseudo-random data, sizes and hashing. Nothing here is imported by the product code.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export class BenchError extends Error {}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Do not throw on a non-zero exit status. */
  allowFail?: boolean;
  /** Pass stderr through to ours (for long builds) instead of capturing it. */
  inheritStderr?: boolean;
  input?: string;
}

/** Runs a command to completion, capturing stdout and stderr. Throws on a non-zero status. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', opts.inheritStderr ? 'inherit' : 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    child.on('error', (e) => reject(new BenchError(`cannot run ${cmd}: ${e.message}`)));
    child.on('close', (code, signal) => {
      const res = {
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (res.code !== 0 && !opts.allowFail) {
        reject(
          new BenchError(
            `${cmd} ${args.join(' ')} exited with ${signal ?? res.code}\n${tail(res.stderr || res.stdout, 2000)}`,
          ),
        );
      } else resolve(res);
    });
  });
}

export function tail(s: string, n: number): string {
  return s.length > n ? '…' + s.slice(-n) : s;
}

export interface Measured extends RunResult {
  /** Wall-clock seconds, spawn to exit. */
  wallS: number;
  /** Peak resident set size in bytes (largest process of the tree, from wait4's ru_maxrss). */
  maxRssBytes: number;
  userS: number;
  sysS: number;
}

export const TIME_BIN = '/usr/bin/time';

/**
 * Runs a command under GNU time (Debian package `time`) and returns its wall time, peak RSS and CPU
 * time. GNU time reports ru_maxrss from wait4(), which covers the child and the descendants it
 * waited for, so a tool that forks is still measured as a tree (the largest member).
 */
export async function measure(cmd: string, args: string[], opts: RunOptions = {}): Promise<Measured> {
  const dir = await mkdtemp(join(tmpdir(), 'kloset-bench-'));
  const timeFile = join(dir, 'time');
  try {
    const t0 = process.hrtime.bigint();
    const res = await run(TIME_BIN, ['-f', '%e %M %U %S', '-o', timeFile, cmd, ...args], {
      ...opts,
      allowFail: true,
    });
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const lines = (await readFile(timeFile, 'utf8')).trim().split('\n');
    // GNU time writes "Command exited with non-zero status N" before the format line on failure.
    const fields = lines[lines.length - 1].trim().split(/\s+/).map(Number);
    const m: Measured = {
      ...res,
      wallS,
      maxRssBytes: (fields[1] ?? 0) * 1024,
      userS: fields[2] ?? 0,
      sysS: fields[3] ?? 0,
    };
    if (res.code !== 0 && !opts.allowFail) {
      throw new BenchError(
        `${cmd} ${args.join(' ')} exited with ${res.code}\n${tail(res.stderr || res.stdout, 3000)}`,
      );
    }
    return m;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Bytes used by a directory tree, as `du -sb` counts them (apparent sizes). */
export async function duBytes(dir: string): Promise<number> {
  const r = await run('du', ['-sb', dir]);
  return Number(r.stdout.split(/\s+/)[0]);
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(b as Buffer);
  return h.digest('hex');
}

/** Reads a file once so that later runs start from the same, warm page cache. */
export async function warm(path: string): Promise<void> {
  for await (const _ of createReadStream(path, { highWaterMark: 8 * MiB }));
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Parses sizes such as 512M, 4G, 1.5GiB, 1048576. Binary units. */
export function parseSize(s: string): number {
  const m = /^\s*([\d.]+)\s*([kKmMgGtT]?)(i?[bB])?\s*$/.exec(s);
  if (!m) throw new BenchError(`not a size: ${s}`);
  const mult = { '': 1, k: KiB, m: MiB, g: GiB, t: 1024 * GiB }[m[2].toLowerCase()]!;
  return Math.round(Number(m[1]) * mult);
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  const a = Math.abs(n);
  if (a >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (a >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (a >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Small, fast, seeded PRNG (sfc32) for positions and choices. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number | string) {
    const h = createHash('sha256').update(String(seed)).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
    for (let i = 0; i < 16; i++) this.next();
  }
  /** Uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Uniform float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }
  /** Uniform integer in [0, n), n up to 2^53. */
  int(n: number): number {
    if (n <= 4294967296) return Math.floor(this.float() * n);
    return Math.floor((this.next() * 4294967296 + this.next()) / 18446744073709551616 * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

/**
 * Seeded incompressible bytes: the AES-256-CTR keystream under a key derived from the seed.
 * Reproducible, and several GiB/s, so building large images is bounded by the disk.
 */
export class RandomStream {
  private cipher;
  private zero = Buffer.alloc(4 * MiB);
  constructor(seed: string) {
    const k = createHash('sha256').update('bench-random:' + seed).digest();
    this.cipher = createCipheriv('aes-256-ctr', k, Buffer.alloc(16));
  }
  bytes(n: number): Buffer {
    if (n <= this.zero.length) return this.cipher.update(this.zero.subarray(0, n));
    return this.cipher.update(Buffer.alloc(n));
  }
}

const WORDS = (
  'the of and to in is for on that with as by at from this be are was it an or which not have has ' +
  'request response error warning info debug user session client server volume snapshot backup restore ' +
  'export import queue message worker job status ok failed retry timeout connection closed opened ' +
  'database table index query row column insert update delete select commit rollback transaction lock ' +
  'cache hit miss evict memory disk network packet bytes latency throughput region zone project bucket ' +
  'object key value config service daemon process thread signal started stopped reload kernel module ' +
  'device mounted filesystem inode block sector partition image cluster node instance pool storage ' +
  'http https get post put head path query header cookie token auth login logout admin guest account ' +
  'order invoice payment customer product price amount currency total discount shipping address city'
).split(' ');
const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
const SERVICES = ['api', 'worker', 'nginx', 'postgres', 'scheduler', 'auth', 'billing', 'cron'];
const HEX = '0123456789abcdef';

/**
 * Seeded, compressible, non-repeating text in the shape of application logs and CSV exports: what
 * the "data" part of a real server volume tends to be. zstd-1 compresses it about 3-4x, and it does
 * not deduplicate against itself.
 */
export class TextStream {
  private rng: Rng;
  private t: number;
  constructor(seed: string) {
    this.rng = new Rng('bench-text:' + seed);
    this.t = Date.UTC(2025, 0, 1) + this.rng.int(86400_000 * 100);
  }
  private hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += HEX[this.rng.next() & 15];
    return s;
  }
  private line(): string {
    const r = this.rng;
    this.t += r.int(2000);
    if (r.next() % 7 === 0) {
      // CSV-like record
      return `${r.int(1e9)},${new Date(this.t).toISOString()},${r.pick(WORDS)},${r.pick(WORDS)},${(r.int(1e7) / 100).toFixed(2)},${r.pick(WORDS)} ${r.pick(WORDS)},${this.hex(12)}\n`;
    }
    let msg = '';
    const n = 4 + r.int(10);
    for (let i = 0; i < n; i++) msg += (i ? ' ' : '') + r.pick(WORDS);
    return `${new Date(this.t).toISOString()} host-${r.int(40)} ${r.pick(SERVICES)}[${1000 + r.int(30000)}]: ${r.pick(LEVELS)} ${msg} id=${this.hex(16)} dur=${r.int(5000)}ms bytes=${r.int(1 << 20)}\n`;
  }
  bytes(n: number): Buffer {
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const l = this.line();
      parts.push(l);
      len += l.length;
    }
    return Buffer.from(parts.join(''), 'latin1').subarray(0, n);
  }
}

export function commandExists(cmd: string): boolean {
  if (cmd.startsWith('/')) return existsSync(cmd);
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => d && existsSync(join(d, cmd)));
}

export function cpuModel(): string {
  try {
    const m = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? m[1].trim() : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

const PAGE_REPORTING_ORDER = '/sys/module/page_reporting/parameters/page_reporting_order';

/**
 * Stops the kernel's free page reporting for the run, where the VM has it (virtio-balloon with
 * free page reporting, as on the Firecracker VMs here). Reported memory goes back to the host, and
 * the next page the guest takes from it faults in the host: writing 1.9 GB of new data then costs
 * 4.5-8.5 s of system time instead of ~0.4 s, at moments no tool controls, so that whichever tool
 * runs after a quiet spell pays. No free block is of order 11 or more, so none is reported. The
 * old value comes back on exit. Returns a line for the report.
 */
export function pauseFreePageReporting(): string {
  if (!existsSync(PAGE_REPORTING_ORDER)) return 'free page reporting: not on this machine';
  const old = readFileSync(PAGE_REPORTING_ORDER, 'utf8').trim();
  try {
    writeFileSync(PAGE_REPORTING_ORDER, '11');
  } catch (err) {
    return `free page reporting: left on (order ${old}), could not pause it: ${(err as Error).message}; write timings of both tools are noisier`;
  }
  const restore = () => {
    try {
      writeFileSync(PAGE_REPORTING_ORDER, old);
    } catch {
      // nothing more to do at exit
    }
  };
  process.on('exit', restore);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  return `free page reporting: paused during the run (page_reporting_order ${old} -> 11, restored at exit), so that no tool's writes fault pages back in from the host`;
}
