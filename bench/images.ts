// Builds the benchmark's volume images and caches them under .bench-cache/: a Debian root filesystem
// (debootstrap, minbase) plus application-like data in an ext4 volume, exported as QCOW2 ("day 1"),
// and two "next day" exports of the same volume: clustered rewrites (~5% of the data in a few
// contiguous regions) and scattered 4 KiB writes (~1% of the used blocks), each with a new file.
// The ext4 image is edited without mounting: raw block overwrites inside file data extents (found
// with debugfs) from a seeded PRNG, and `debugfs -w` to add the file, so the images are reproducible
// and the filesystem stays consistent (e2fsck -fn passes).
import { constants, createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { once } from 'node:events';
import {
  BenchError,
  GiB,
  MiB,
  RandomStream,
  Rng,
  TextStream,
  commandExists,
  fmtBytes,
  log,
  run,
  sha256File,
} from './util.js';

/** Bump when the recipe changes, so that cached images are rebuilt. */
export const RECIPE_VERSION = 1;
const BLOCK = 4096;

export interface ImageSpec {
  /** Label used in reports: "small", "4G", "16G". */
  label: string;
  /** Virtual size of the volume (ext4 size, QCOW2 virtual size). */
  volumeBytes: number;
  /** Target bytes used in the filesystem. */
  usedBytes: number;
  seed: string;
  /** Build day1 only (the large image is used for the RSS-vs-size check, first backup and restore). */
  day1Only?: boolean;
}

export interface ImageFile {
  path: string;
  /** Size of the QCOW2 file: what a backup tool reads. */
  bytes: number;
  sha256: string;
}

export interface ImageSet {
  spec: ImageSpec;
  dir: string;
  rootfs: RootfsInfo;
  composition: Record<string, number>;
  fs: { blockCount: number; usedBlocks: number; dataBlocks: number };
  edits?: {
    clustered: { regions: number; blocks: number; bytes: number; newFileBytes: number };
    scattered: { writes: number; bytes: number; newFileBytes: number };
  };
  day1: ImageFile;
  day2Clustered?: ImageFile;
  day2Scattered?: ImageFile;
  buildSeconds: number;
}

export interface RootfsInfo {
  dir: string;
  /** "debootstrap bookworm minbase (<mirror>)" or the fallback that was used instead. */
  kind: string;
  bytes: number;
}

const REQUIRED = [
  ['qemu-img', 'qemu-utils'],
  ['mkfs.ext4', 'e2fsprogs'],
  ['debugfs', 'e2fsprogs'],
  ['dumpe2fs', 'e2fsprogs'],
  ['e2fsck', 'e2fsprogs'],
] as const;

/** The new file of a next-day export is written in pieces of this size. */
const NEW_FILE_PIECE = 4 * MiB;

/** The new file is log-like text up to the first piece boundary at or past half its size, keystream after. */
function newFileTextBytes(size: number): number {
  return Math.min(size, Math.ceil(Math.floor(size / 2) / NEW_FILE_PIECE) * NEW_FILE_PIECE);
}

/** day2-clustered's rewritten regions alternate: text (even), keystream (odd). */
function isKeystreamRegion(k: number): boolean {
  return k % 2 === 1;
}

/**
 * Bytes of day2-clustered that are new keystream (the keystream regions and the keystream part of
 * the new file): no tool can store that export's change in less.
 */
export function clusteredKeystreamBytes(e: NonNullable<ImageSet['edits']>['clustered']): number {
  let regions = 0;
  for (let k = 0; k < e.regions; k++) if (isKeystreamRegion(k)) regions++;
  return (e.bytes / e.regions) * regions + e.newFileBytes - newFileTextBytes(e.newFileBytes);
}

export function missingImageTools(): string[] {
  const pkgs = new Set<string>();
  for (const [cmd, pkg] of REQUIRED) if (!commandExists(cmd) && !commandExists(`/usr/sbin/${cmd}`)) pkgs.add(pkg);
  return [...pkgs];
}

/** The Debian mirror apt is configured with (deb822 or one-line sources). */
export function aptMirror(): string {
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) files.push(join('/etc/apt/sources.list.d', f));
  } catch {
    /* no directory */
  }
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    // deb822 stanzas
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(\S+)/m.exec(stanza);
      const suites = /^Suites:\s*(.*)$/m.exec(stanza);
      if (uris && suites && /\bbookworm\b/.test(suites[1]) && !/security/.test(uris[1])) return uris[1];
    }
    // one-line form
    for (const line of text.split('\n')) {
      const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/.exec(line);
      if (m && !/security/.test(m[1])) return m[1];
    }
  }
  return 'http://deb.debian.org/debian';
}

async function treeBytes(dir: string): Promise<number> {
  const r = await run('du', ['-sb', dir]);
  return Number(r.stdout.split(/\s+/)[0]);
}

/** Unmounts anything debootstrap left mounted under dir (it mounts /proc, /sys) before removal. */
async function umountUnder(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m) => m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m], { allowFail: true });
}

async function safeRemoveTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  await umountUnder(dir);
  await rm(dir, { recursive: true, force: true });
}

/** Debian bookworm minbase root filesystem, built once with debootstrap and cached as a directory. */
export async function ensureRootfs(cacheDir: string): Promise<RootfsInfo> {
  const base = join(cacheDir, 'rootfs');
  const dir = join(base, 'bookworm-minbase');
  const marker = dir + '.ok';
  const fallbackDir = join(base, 'host-usr-fallback');
  if (existsSync(marker)) {
    return { dir, kind: 'debootstrap --variant=minbase bookworm (cached)', bytes: await treeBytes(dir) };
  }
  if (existsSync(fallbackDir + '.ok')) {
    return { dir: fallbackDir, kind: 'FALLBACK: copy of this machine\'s /usr and /etc (cached)', bytes: await treeBytes(fallbackDir) };
  }
  await mkdir(base, { recursive: true });
  const tmp = dir + '.tmp';
  await safeRemoveTree(tmp);
  const mirror = aptMirror();
  let why = '';
  if (process.getuid?.() !== 0) why = 'debootstrap needs root';
  else if (!commandExists('debootstrap') && !commandExists('/usr/sbin/debootstrap')) why = 'debootstrap is not installed (apt-get install debootstrap)';
  if (!why) {
    log(`building the Debian root filesystem: debootstrap --variant=minbase bookworm (${mirror}); a minute or two, once`);
    const r = await run('debootstrap', ['--variant=minbase', 'bookworm', tmp, mirror], { allowFail: true });
    await writeFile(dir + '.log', r.stdout + r.stderr);
    await umountUnder(tmp);
    if (r.code === 0) {
      await rename(tmp, dir);
      await writeFile(marker, `${new Date().toISOString()} ${mirror}\n`);
      return { dir, kind: `debootstrap --variant=minbase bookworm (${mirror})`, bytes: await treeBytes(dir) };
    }
    why = `debootstrap failed (exit ${r.code}, see ${dir}.log)`;
    await safeRemoveTree(tmp);
  }
  log(`WARNING: ${why}; falling back to copying this machine's /usr and /etc as the "root filesystem"`);
  await safeRemoveTree(fallbackDir);
  await mkdir(fallbackDir, { recursive: true });
  for (const d of ['/etc', '/usr/bin', '/usr/sbin', '/usr/lib/x86_64-linux-gnu', '/usr/share/doc']) {
    if (!existsSync(d)) continue;
    await mkdir(join(fallbackDir, relative('/', d), '..'), { recursive: true });
    await run('cp', ['-a', '--no-preserve=ownership', d, join(fallbackDir, relative('/', d))], { allowFail: true });
  }
  await writeFile(fallbackDir + '.ok', `${new Date().toISOString()} ${why}\n`);
  return { dir: fallbackDir, kind: `FALLBACK (${why}): copy of this machine's /usr and /etc`, bytes: await treeBytes(fallbackDir) };
}

async function writeGenerated(path: string, bytes: number, gen: { bytes(n: number): Buffer }): Promise<void> {
  const ws = createWriteStream(path);
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, 4 * MiB);
    if (!ws.write(gen.bytes(n))) await once(ws, 'drain');
    left -= n;
  }
  ws.end();
  await once(ws, 'finish');
}

/** Copies regular files of this machine's /usr (sorted walk, deterministic) up to a byte budget. */
async function copyHostFiles(dest: string, budget: number): Promise<number> {
  let copied = 0;
  const walk = async (dir: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch {
      return;
    }
    for (const name of names) {
      if (copied >= budget) return;
      const p = join(dir, name);
      let st;
      try {
        st = await lstat(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (p === '/usr/local' || p === '/usr/src') continue;
        await walk(p);
      } else if (st.isFile() && st.size > 0 && st.size <= 64 * MiB && copied + st.size <= budget * 1.02) {
        const out = join(dest, relative('/usr', p));
        await mkdir(join(out, '..'), { recursive: true });
        try {
          await copyFile(p, out, constants.COPYFILE_FICLONE);
          copied += st.size;
        } catch {
          /* unreadable: skip */
        }
      }
    }
  };
  await walk('/usr');
  return copied;
}

interface Extent {
  start: number; // physical block
  len: number;
}

/** Regular files under dir (paths relative to it, '/'-prefixed), at least minBytes long. */
async function listFiles(dir: string, minBytes: number): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const ent of (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) await walk(p);
      else if (ent.isFile()) {
        const rel = '/' + relative(dir, p);
        if (!/^[\w.+\-/@:,=~]+$/.test(rel)) continue; // debugfs argument quoting is limited
        if ((await stat(p)).size >= minBytes) out.push(rel);
      }
    }
  };
  await walk(dir);
  return out;
}

/** Physical data extents of the given files in an ext4 image, merged and sorted. */
async function dataExtents(raw: string, files: string[], workDir: string): Promise<Extent[]> {
  const cmdFile = join(workDir, 'debugfs-ex.cmd');
  await writeFile(cmdFile, files.map((f) => `ex "${f}"\n`).join(''));
  const r = await run('debugfs', ['-f', cmdFile, raw]);
  const ext: Extent[] = [];
  const re = /^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+\d+\s*-\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*(.*)$/;
  for (const line of r.stdout.split('\n')) {
    const m = re.exec(line);
    if (!m || m[1] !== m[2] || /Uninit/i.test(m[6])) continue;
    ext.push({ start: Number(m[3]), len: Number(m[5]) });
  }
  ext.sort((a, b) => a.start - b.start);
  const merged: Extent[] = [];
  for (const e of ext) {
    const last = merged[merged.length - 1];
    if (last && e.start <= last.start + last.len) {
      last.len = Math.max(last.len, e.start + e.len - last.start);
    } else merged.push({ ...e });
  }
  return merged;
}

async function fsStats(raw: string): Promise<{ blockCount: number; freeBlocks: number; blockSize: number }> {
  const r = await run('dumpe2fs', ['-h', raw]);
  const num = (k: string) => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(r.stdout)?.[1] ?? NaN);
  return { blockCount: num('Block count'), freeBlocks: num('Free blocks'), blockSize: num('Block size') };
}

/** Maps an index in "data space" (the concatenation of the extents) to a physical block. */
class DataSpace {
  private cum: number[] = [];
  readonly total: number;
  constructor(private ext: Extent[]) {
    let t = 0;
    for (const e of ext) {
      this.cum.push(t);
      t += e.len;
    }
    this.total = t;
  }
  /** Index of the extent holding data-space block i (binary search over the cumulative sizes). */
  private extentOf(i: number): number {
    let lo = 0;
    let hi = this.ext.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.cum[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
  physical(i: number): number {
    const lo = this.extentOf(i);
    return this.ext[lo].start + (i - this.cum[lo]);
  }
  /** Physical runs covering data-space [from, from+len). */
  runs(from: number, len: number): Extent[] {
    const out: Extent[] = [];
    let i = from;
    const end = from + len;
    while (i < end) {
      const p = this.physical(i);
      // extend within the current extent
      const lo = this.extentOf(i);
      const n = Math.min(end - i, this.cum[lo] + this.ext[lo].len - i);
      out.push({ start: p, len: n });
      i += n;
    }
    return out;
  }
}

async function addFile(raw: string, hostFile: string, name: string, workDir: string): Promise<void> {
  const cmd = join(workDir, 'debugfs-write.cmd');
  await writeFile(cmd, `cd /srv\nwrite ${hostFile} ${name}\n`);
  const r = await run('debugfs', ['-w', '-f', cmd, raw]);
  if (/error|fail|not found/i.test(r.stderr.replace(/^debugfs \d.*$/m, ''))) {
    throw new BenchError(`debugfs write failed: ${r.stderr}`);
  }
}

async function fsck(raw: string): Promise<string> {
  const r = await run('e2fsck', ['-fn', raw], { allowFail: true });
  return r.code === 0 ? 'clean' : `e2fsck exit ${r.code}: ${r.stdout.split('\n').slice(0, 5).join(' | ')}`;
}

async function toQcow2(raw: string, out: string): Promise<ImageFile> {
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, out + '.tmp']);
  await rename(out + '.tmp', out);
  return { path: out, bytes: (await stat(out)).size, sha256: await sha256File(out) };
}

function specDirName(spec: ImageSpec): string {
  const g = (n: number) => (n % GiB === 0 ? `${n / GiB}G` : `${Math.round(n / MiB)}M`);
  return `${spec.label}-vol${g(spec.volumeBytes)}-used${g(spec.usedBytes)}-seed${spec.seed}${spec.day1Only ? '-day1only' : ''}-r${RECIPE_VERSION}`;
}

/** Returns the cached image set for spec, building it first if it is missing. */
export async function ensureImages(cacheDir: string, spec: ImageSpec): Promise<ImageSet> {
  const dir = join(cacheDir, 'images', specDirName(spec));
  const manifestPath = join(dir, 'manifest.json');
  if (existsSync(manifestPath)) {
    const m = JSON.parse(await readFile(manifestPath, 'utf8')) as ImageSet;
    if ([m.day1, m.day2Clustered, m.day2Scattered].every((f) => !f || existsSync(f.path))) return m;
  }
  const t0 = Date.now();
  const rootfs = await ensureRootfs(cacheDir);
  log(`building ${spec.label} images (volume ${fmtBytes(spec.volumeBytes)}, ~${fmtBytes(spec.usedBytes)} used) in ${dir}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const staging = join(dir, 'staging');
  const seed = spec.seed;

  // 1. Staging tree: the root filesystem, a slice of this machine's /usr ("installed software"),
  //    logs/CSV exports (compressible, unique) and incompressible blobs (~25% of the used space).
  await run('cp', ['-a', '--reflink=auto', rootfs.dir, staging]);
  const randomBudget = Math.round(spec.usedBytes * 0.25);
  const hostBudget = Math.max(0, Math.min(spec.usedBytes * 0.35, spec.usedBytes - rootfs.bytes - randomBudget));
  await mkdir(join(staging, 'srv', 'data', 'logs'), { recursive: true });
  await mkdir(join(staging, 'srv', 'data', 'blobs'), { recursive: true });
  const hostBytes = hostBudget > 0 ? await copyHostFiles(join(staging, 'opt', 'software'), hostBudget) : 0;
  const textBudget = Math.max(0, spec.usedBytes - rootfs.bytes - randomBudget - hostBytes);
  const rng = new Rng(`layout:${seed}`);
  const text = new TextStream(`day1:${seed}`);
  const rnd = new RandomStream(`day1:${seed}`);
  let textBytes = 0;
  let randomBytes = 0;
  for (let i = 0; textBytes < textBudget || randomBytes < randomBudget; i++) {
    if (textBytes < textBudget) {
      const n = Math.min(textBudget - textBytes, (4 + rng.int(60)) * MiB + rng.int(MiB));
      await writeGenerated(join(staging, 'srv', 'data', 'logs', `app-${String(i).padStart(4, '0')}.log`), n, text);
      textBytes += n;
    }
    if (randomBytes < randomBudget) {
      const n = Math.min(randomBudget - randomBytes, (1 + rng.int(48)) * MiB + rng.int(MiB));
      await writeGenerated(join(staging, 'srv', 'data', 'blobs', `blob-${String(i).padStart(4, '0')}.bin`), n, rnd);
      randomBytes += n;
    }
  }
  const composition = { rootfs: rootfs.bytes, hostSoftware: hostBytes, text: textBytes, random: randomBytes };
  log(
    `  staging: rootfs ${fmtBytes(rootfs.bytes)}, software ${fmtBytes(hostBytes)}, logs ${fmtBytes(textBytes)}, random ${fmtBytes(randomBytes)}`,
  );

  // 2. ext4 volume from the staging tree (reproducible UUIDs and timestamps).
  const raw1 = join(dir, 'day1.raw');
  await run('truncate', ['-s', String(spec.volumeBytes), raw1]);
  await run(
    'mkfs.ext4',
    ['-q', '-F', '-b', String(BLOCK), '-U', 'a1b2c3d4-0000-4000-8000-00000000b0b0', '-E', 'hash_seed=a1b2c3d4-0000-4000-8000-00000000c0c0', '-L', 'data', '-d', staging, raw1],
    { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1747699200' } },
  );
  const st = await fsStats(raw1);
  const usedBlocks = st.blockCount - st.freeBlocks;
  const files = await listFiles(staging, 16 * 1024);
  const extents = await dataExtents(raw1, files, dir);
  const space = new DataSpace(extents);
  await rm(staging, { recursive: true, force: true });
  log(`  ext4: ${fmtBytes(usedBlocks * BLOCK)} used, ${fmtBytes(space.total * BLOCK)} in file data extents of ${files.length} files`);
  const day1 = await toQcow2(raw1, join(dir, 'day1.qcow2'));
  log(`  day1.qcow2 ${fmtBytes(day1.bytes)}`);
  if (spec.day1Only) {
    await rm(raw1, { force: true });
    const set: ImageSet = {
      spec,
      dir,
      rootfs,
      composition,
      fs: { blockCount: st.blockCount, usedBlocks, dataBlocks: space.total },
      day1,
      buildSeconds: (Date.now() - t0) / 1000,
    };
    await writeFile(manifestPath, JSON.stringify(set, null, 2) + '\n');
    log(`  built in ${set.buildSeconds.toFixed(0)} s`);
    return set;
  }

  // 3. Next-day exports of the same volume.
  const newFileBytes = Math.max(4 * MiB, Math.round(spec.usedBytes * 0.01));
  const makeNewFile = async (variant: string): Promise<string> => {
    const p = join(dir, `new-${variant}.bin`);
    const t = new TextStream(`new:${variant}:${seed}`);
    const r = new RandomStream(`new:${variant}:${seed}`);
    const textBytes = newFileTextBytes(newFileBytes);
    const fh = await open(p, 'w');
    for (let off = 0; off < newFileBytes; off += NEW_FILE_PIECE) {
      const n = Math.min(NEW_FILE_PIECE, newFileBytes - off);
      await fh.write(off < textBytes ? t.bytes(n) : r.bytes(n));
    }
    await fh.close();
    return p;
  };

  // (a) clustered: 4 contiguous regions totalling ~5% of the file data; alternately log-like text
  //     (a rewritten database/log) and incompressible bytes (a replaced archive).
  const rawA = join(dir, 'day2-clustered.raw');
  await run('cp', ['--sparse=always', raw1, rawA]);
  const regions = 4;
  const clusteredBlocks = Math.round(space.total * 0.05);
  const per = Math.floor(clusteredBlocks / regions);
  {
    const r = new Rng(`clustered:${seed}`);
    const t = new TextStream(`clustered:${seed}`);
    const x = new RandomStream(`clustered:${seed}`);
    const fh = await open(rawA, 'r+');
    for (let k = 0; k < regions; k++) {
      const sliceStart = Math.floor((space.total * k) / regions);
      const sliceLen = Math.floor(space.total / regions);
      const from = sliceStart + r.int(Math.max(1, sliceLen - per));
      for (const run_ of space.runs(from, per)) {
        for (let b = 0; b < run_.len; b += 256) {
          const n = Math.min(256, run_.len - b);
          const buf = isKeystreamRegion(k) ? x.bytes(n * BLOCK) : t.bytes(n * BLOCK);
          await fh.write(buf, 0, buf.length, (run_.start + b) * BLOCK);
        }
      }
    }
    await fh.close();
  }
  await addFile(rawA, await makeNewFile('clustered'), 'new-file-clustered.bin', dir);
  const fsckA = await fsck(rawA);
  const day2Clustered = await toQcow2(rawA, join(dir, 'day2-clustered.qcow2'));
  await rm(rawA, { force: true });
  log(`  day2-clustered.qcow2 ${fmtBytes(day2Clustered.bytes)} (${regions} regions, ${fmtBytes(per * regions * BLOCK)} rewritten; fsck ${fsckA})`);

  // (b) scattered: 4 KiB writes to ~1% of the used blocks, at random file-data positions.
  const rawB = join(dir, 'day2-scattered.raw');
  await run('cp', ['--sparse=always', raw1, rawB]);
  const writes = Math.round(usedBlocks * 0.01);
  {
    const r = new Rng(`scattered:${seed}`);
    const x = new RandomStream(`scattered:${seed}`);
    const chosen = new Set<number>();
    while (chosen.size < Math.min(writes, space.total)) chosen.add(r.int(space.total));
    const blocks = [...chosen].map((i) => space.physical(i)).sort((a, b) => a - b);
    const fh = await open(rawB, 'r+');
    for (const b of blocks) await fh.write(x.bytes(BLOCK), 0, BLOCK, b * BLOCK);
    await fh.close();
  }
  await addFile(rawB, await makeNewFile('scattered'), 'new-file-scattered.bin', dir);
  const fsckB = await fsck(rawB);
  const day2Scattered = await toQcow2(rawB, join(dir, 'day2-scattered.qcow2'));
  await rm(rawB, { force: true });
  await rm(raw1, { force: true });
  for (const v of ['clustered', 'scattered']) await rm(join(dir, `new-${v}.bin`), { force: true });
  log(`  day2-scattered.qcow2 ${fmtBytes(day2Scattered.bytes)} (${writes} writes of 4 KiB; fsck ${fsckB})`);

  const set: ImageSet = {
    spec,
    dir,
    rootfs,
    composition,
    fs: { blockCount: st.blockCount, usedBlocks, dataBlocks: space.total },
    edits: {
      clustered: { regions, blocks: per * regions, bytes: per * regions * BLOCK, newFileBytes },
      scattered: { writes, bytes: writes * BLOCK, newFileBytes },
    },
    day1,
    day2Clustered,
    day2Scattered,
    buildSeconds: (Date.now() - t0) / 1000,
  };
  await writeFile(manifestPath, JSON.stringify(set, null, 2) + '\n');
  log(`  built in ${set.buildSeconds.toFixed(0)} s`);
  return set;
}
