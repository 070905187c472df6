// Shared test helpers: temp dirs, qemu-img runner, sparse raw builders.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

export async function qemuImg(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP('/usr/bin/qemu-img', args, { maxBuffer: 64 * MiB });
}

/**
 * Creates a LUKS-encrypted QCOW2 image. qemu-img first times PBKDF2 on the thread's CPU clock, which ticks every
 * 10 ms here; when the sample lands inside one tick it reads 0 ms and qemu-img gives up with "Unable to get
 * accurate CPU usage" (about 1 run in 9 on this machine). Only that error is retried.
 */
export async function createLuksQcow2(path: string, size: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const r = await qemuImgStatus(
      'create', '-f', 'qcow2', '--object', 'secret,id=sec0,data=password',
      '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', path, size,
    );
    if (r.code === 0) return;
    if (attempt >= 10 || !r.stderr.includes('Unable to get accurate CPU usage')) {
      throw new Error(`qemu-img create (LUKS) failed with exit ${r.code}: ${r.stderr.trim()}`);
    }
  }
}

/** Runs qemu-img and returns its exit code and output instead of throwing on a non-zero exit. */
export async function qemuImgStatus(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await qemuImg(...args);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export async function makeTmpDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'qcow2-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export type Region = { offset: number; data: Buffer };

/** Creates a sparse file of `size` bytes with the given regions written into it. */
export async function makeSparseFile(path: string, size: number, regions: Region[]): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const r of regions) await fh.write(r.data, 0, r.data.length, r.offset);
  } finally {
    await fh.close();
  }
}

/** Compressible but non-trivial bytes (so qemu-img convert -c really stores compressed clusters). */
export function textBytes(len: number, seed = 0): Buffer {
  const words = ['volume', 'snapshot', 'kloset', 'block', 'scaleway', 'qcow2', 'cluster', 'refcount'];
  let s = '';
  let x = seed + 1;
  while (s.length < len) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    s += words[x % words.length] + (x % 7 === 0 ? '\n' : ' ');
  }
  return Buffer.from(s.slice(0, len));
}

/**
 * A typical test volume: random and text regions, explicitly written zeros, a lone non-zero byte, unaligned
 * boundaries, and a tail that is 512-aligned but not 64 KiB-aligned.
 */
export function standardRegions(size: number): Region[] {
  const lone = Buffer.alloc(1, 0x5a);
  return [
    { offset: 0, data: randomBytes(1 * MiB) },
    { offset: 3 * MiB + 1000, data: randomBytes(200 * KiB + 17) },
    { offset: 5 * MiB, data: textBytes(2 * MiB + 333, 1) },
    { offset: 9 * MiB, data: Buffer.alloc(1 * MiB) }, // allocated zeros: must not become data clusters
    { offset: 12 * MiB + 65536 * 3 + 4321, data: lone },
    { offset: size - 100 * KiB, data: randomBytes(100 * KiB) },
  ];
}
