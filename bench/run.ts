// `npm run bench`: our Kloset store against restic, side by side, on the same realistic volume images
// in the same run. See bench/README.md for what each number means.
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ImageSet, ImageSpec, clusteredKeystreamBytes, ensureImages, missingImageTools } from './images.js';
import { Ours, Restic, Tool } from './tools.js';
import {
  BenchError,
  MiB,
  Measured,
  TIME_BIN,
  cpuModel,
  duBytes,
  fmtBytes,
  log,
  median,
  parseSize,
  pauseFreePageReporting,
  run,
  sha256File,
  warm,
} from './util.js';

const HELP = `usage: npm run bench -- [options]

  --small               quick run: 1 GiB volume with ~512 MiB used, 2 GiB/~1 GiB for the size check
  --size SIZE           main volume size (default 4G; env BENCH_SIZE)
  --used SIZE           bytes used in the main volume (default 1.75G; env BENCH_USED)
  --large-size SIZE     volume for the RSS-vs-size check (default 16G; env BENCH_LARGE_SIZE)
  --large-used SIZE     bytes used in it (default 7G; env BENCH_LARGE_USED)
  --no-large            skip the RSS-vs-size check
  --repeat N            rounds on the main image, tool order alternating; medians reported (default 1)
  --large-repeat N      rounds on the large image (default 1)
  --tools LIST          ours,restic (default both)
  --ours-cmd CMD        how to run our CLI (default "node bin/scw-kloset.js"; env KLOSET_BENCH_CMD)
  --seed S              image seed (default 1)
  --cache-dir DIR       default .bench-cache
  --keep                keep the stores and restored files of the last round
  --keep-page-reporting leave the VM's free page reporting on (it is paused during the run otherwise: see bench/README.md)
  --images-only         build (or check) the cached images and stop
  --from-json FILE      print the table again from a results-*.json file (no run)
  --ours-commit REF     run our CLI from a clean export of commit REF (e.g. HEAD) instead of the
                        working tree, so that edits made during a long run do not change the code
`;

interface StepResult {
  wallS: number;
  maxRssBytes: number;
  cpuS: number;
  imageBytes: number;
  throughput: number; // image bytes per second
  /** 1-minute load average when the step ended: how busy the shared machine was. */
  load1: number;
}

interface RoundResult {
  tool: string;
  image: string;
  round: number;
  order: number;
  error?: string;
  steps: Record<string, StepResult>;
  storedAfterDay1?: number;
  addedClusteredDu?: number;
  addedScatteredDu?: number;
  reportedAdded?: Record<string, number>;
  reportedRead?: Record<string, number>;
  restoreVerified?: boolean;
}

function step(m: Measured, imageBytes: number): StepResult {
  return {
    wallS: m.wallS,
    maxRssBytes: m.maxRssBytes,
    cpuS: m.userS + m.sysS,
    imageBytes,
    throughput: imageBytes / m.wallS,
    load1: loadavg()[0],
  };
}

async function sync(): Promise<void> {
  await run('sync', [], { allowFail: true });
}

/** One tool, one image set: init, backups, second exports, restore and verification. */
async function roundMain(tool: Tool, img: ImageSet, work: string, round: number, order: number, keep: boolean): Promise<RoundResult> {
  const day2Clustered = img.day2Clustered!;
  const day2Scattered = img.day2Scattered!;
  const res: RoundResult = { tool: tool.name, image: img.spec.label, round, order, steps: {}, reportedAdded: {}, reportedRead: {} };
  const repo = join(work, 'repo');
  const repoB = join(work, 'repo-b');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    log(`${tool.name} [${img.spec.label}, round ${round + 1}]: init`);
    res.steps.init = step(await tool.init(repo), 0);
    const base = await duBytes(repo);
    await sync();

    log(`${tool.name}: backup day1 (${fmtBytes(img.day1.bytes)})`);
    const b1 = await tool.backup(repo, img.day1.path);
    res.steps.backupDay1 = step(b1.m, img.day1.bytes);
    res.reportedAdded!.day1 = b1.reportedAdded;
    res.reportedRead!.day1 = b1.reportedRead;
    await sync();
    const size1 = await duBytes(repo);
    res.storedAfterDay1 = size1;
    log(`${tool.name}: ${res.steps.backupDay1.wallS.toFixed(1)} s, stored ${fmtBytes(size1)} (${fmtBytes(size1 - base)} over the empty store)`);

    // Each second export is measured against a store holding day1 only: copy the store.
    await run('cp', ['-a', repo, repoB]);
    await sync();

    /** One second export into its own copy of the day1 store; returns the bytes it added (du). */
    const secondExport = async (label: 'Clustered' | 'Scattered', store: string, image: { path: string; bytes: number }) => {
      log(`${tool.name}: backup day2-${label.toLowerCase()}`);
      const b = await tool.backup(store, image.path);
      res.steps[`backupDay2${label}`] = step(b.m, image.bytes);
      res.reportedAdded![`day2${label}`] = b.reportedAdded;
      res.reportedRead![`day2${label}`] = b.reportedRead;
      await sync();
      return (await duBytes(store)) - size1;
    };
    res.addedClusteredDu = await secondExport('Clustered', repo, day2Clustered);
    res.addedScatteredDu = await secondExport('Scattered', repoB, day2Scattered);
    if (!keep) await rm(repoB, { recursive: true, force: true });

    res.restoreVerified = await restoreAndVerify(tool, repo, b1.snapshot, img, work, res, 'restoreDay1');
    await sync();
  } catch (e) {
    res.error = (e as Error).message;
    log(`${tool.name}: ERROR ${res.error}`);
  } finally {
    if (!keep) await rm(work, { recursive: true, force: true });
  }
  return res;
}

async function restoreAndVerify(tool: Tool, repo: string, snapshot: string, img: ImageSet, work: string, res: RoundResult, key: string): Promise<boolean> {
  const out = join(work, 'restored');
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  log(`${tool.name}: restore day1 (snapshot ${snapshot.slice(0, 12)})`);
  const r = await tool.restore(repo, snapshot, out, img.day1.path);
  res.steps[key] = step(r.m, img.day1.bytes);
  await sync();
  const digest = existsSync(r.path) ? await sha256File(r.path) : 'missing';
  await rm(out, { recursive: true, force: true });
  if (digest !== img.day1.sha256) {
    throw new BenchError(`restore did not verify: ${r.path} has SHA-256 ${digest}, expected ${img.day1.sha256}`);
  }
  log(`${tool.name}: restored in ${r.m.wallS.toFixed(1)} s, SHA-256 verified`);
  return true;
}

/** The large image: first backup and restore only, for peak RSS against image size. */
async function roundLarge(tool: Tool, img: ImageSet, work: string, round: number, order: number, keep: boolean): Promise<RoundResult> {
  const res: RoundResult = { tool: tool.name, image: img.spec.label, round, order, steps: {}, reportedAdded: {}, reportedRead: {} };
  const repo = join(work, 'repo');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    log(`${tool.name} [${img.spec.label}, round ${round + 1}]: init + backup day1 (${fmtBytes(img.day1.bytes)})`);
    await tool.init(repo);
    await sync();
    const b1 = await tool.backup(repo, img.day1.path);
    res.steps.backupDay1 = step(b1.m, img.day1.bytes);
    res.reportedAdded!.day1 = b1.reportedAdded;
    await sync();
    res.storedAfterDay1 = await duBytes(repo);
    res.restoreVerified = await restoreAndVerify(tool, repo, b1.snapshot, img, work, res, 'restoreDay1');
  } catch (e) {
    res.error = (e as Error).message;
    log(`${tool.name}: ERROR ${res.error}`);
  } finally {
    if (!keep) await rm(work, { recursive: true, force: true });
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Report

type Cmp = 'ge' | 'le';
interface Row {
  section: string;
  metric: string;
  ours?: number;
  restic?: number;
  fmt: (n: number) => string;
  /** ratio = ours / restic; target applies to it unless `absolute` is set. */
  target?: { cmp: Cmp; value: number; text: string; absolute?: boolean; on?: 'ratio' | 'ours' };
  pass?: boolean | null;
  note?: string;
}

const mibs = (n: number) => `${(n / MiB).toFixed(0)} MiB/s`;
const bytes = (n: number) => fmtBytes(n);
const secs = (n: number) => `${n.toFixed(1)} s`;

function med(rounds: RoundResult[], tool: string, f: (r: RoundResult) => number | undefined): number | undefined {
  const xs = rounds.filter((r) => r.tool === tool && !r.error).map(f).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return xs.length ? median(xs) : undefined;
}

function judge(row: Row): Row {
  if (!row.target) return row;
  const t = row.target;
  const x = t.on === 'ours' ? row.ours : row.ours !== undefined && row.restic ? row.ours / row.restic : undefined;
  if (x === undefined) row.pass = null;
  else row.pass = t.cmp === 'ge' ? x >= t.value : x <= t.value;
  return row;
}

function buildRows(main: RoundResult[], large: RoundResult[], mainLabel: string, largeLabel: string | null): Row[] {
  const rows: Row[] = [];
  const both = (section: string, metric: string, f: (r: RoundResult) => number | undefined, fmt: Row['fmt'], target?: Row['target'], rs = main) =>
    rows.push(judge({ section, metric, ours: med(rs, 'ours', f), restic: med(rs, 'restic', f), fmt, target }));
  const s = `main image (${mainLabel})`;
  const thr2 = { cmp: 'ge' as const, value: 2, text: '>= 2x' };
  both(s, 'backup day1 throughput', (r) => r.steps.backupDay1?.throughput, mibs, thr2);
  both(s, 'backup day2-clustered throughput', (r) => r.steps.backupDay2Clustered?.throughput, mibs, thr2);
  both(s, 'backup day2-scattered throughput', (r) => r.steps.backupDay2Scattered?.throughput, mibs, thr2);
  both(s, 'restore day1 throughput', (r) => r.steps.restoreDay1?.throughput, mibs, thr2);
  both(s, '  backup day1 wall time', (r) => r.steps.backupDay1?.wallS, secs);
  both(s, '  restore day1 wall time', (r) => r.steps.restoreDay1?.wallS, secs);
  both(s, '  backup day1 CPU use (cores)', (r) => (r.steps.backupDay1 ? r.steps.backupDay1.cpuS / r.steps.backupDay1.wallS : undefined), (n) => n.toFixed(2));
  both(s, '  restore day1 CPU use (cores)', (r) => (r.steps.restoreDay1 ? r.steps.restoreDay1.cpuS / r.steps.restoreDay1.wallS : undefined), (n) => n.toFixed(2));
  // CPU seconds (user + system) are less disturbed by other work on the machine than wall time.
  for (const [k, name] of [
    ['backupDay1', 'backup day1'],
    ['backupDay2Clustered', 'backup day2-clustered'],
    ['backupDay2Scattered', 'backup day2-scattered'],
    ['restoreDay1', 'restore day1'],
  ] as const) {
    both(s, `  ${name} CPU time (user+sys)`, (r) => r.steps[k]?.cpuS, secs);
  }
  both(s, '  1-min load average after the step (backup day1)', (r) => r.steps.backupDay1?.load1, (n) => n.toFixed(1));
  both(s, 'stored bytes after day1 (du -sb)', (r) => r.storedAfterDay1, bytes, { cmp: 'le', value: 1, text: '<= 1x' });
  both(s, 'added by day2-clustered (du delta)', (r) => r.addedClusteredDu, bytes, { cmp: 'le', value: 0.7, text: '<= 0.7x' });
  both(s, 'added by day2-scattered (du delta)', (r) => r.addedScatteredDu, bytes, { cmp: 'le', value: 0.7, text: '<= 0.7x' });
  both(s, '  day1 added, as reported by the tool', (r) => r.reportedAdded?.day1, bytes);
  both(s, '  day2-clustered added, as reported', (r) => r.reportedAdded?.day2Clustered, bytes);
  both(s, '  day2-scattered added, as reported', (r) => r.reportedAdded?.day2Scattered, bytes);
  const rssTarget = { cmp: 'le' as const, value: 256 * MiB, text: '<= 256 MiB', on: 'ours' as const };
  for (const [k, name] of [
    ['init', 'init'],
    ['backupDay1', 'backup day1'],
    ['backupDay2Clustered', 'backup day2-clustered'],
    ['backupDay2Scattered', 'backup day2-scattered'],
    ['restoreDay1', 'restore day1'],
  ] as const) {
    both(s, `peak RSS, ${name}`, (r) => r.steps[k]?.maxRssBytes, bytes, rssTarget);
  }
  if (largeLabel) {
    const l = `large image (${largeLabel}) vs main`;
    both(l, 'backup day1 throughput', (r) => r.steps.backupDay1?.throughput, mibs, thr2, large);
    both(l, 'restore day1 throughput', (r) => r.steps.restoreDay1?.throughput, mibs, thr2, large);
    both(l, 'stored bytes after day1', (r) => r.storedAfterDay1, bytes, { cmp: 'le', value: 1, text: '<= 1x' }, large);
    for (const [k, name] of [
      ['backupDay1', 'backup'],
      ['restoreDay1', 'restore'],
    ] as const) {
      both(l, `peak RSS, ${name}`, (r) => r.steps[k]?.maxRssBytes, bytes, rssTarget, large);
      // Growth from the main image to the large one: "not growing" = at most 10% or 16 MiB more.
      const g = (tool: string) => {
        const a = med(main, tool, (r) => r.steps[k]?.maxRssBytes);
        const b = med(large, tool, (r) => r.steps[k]?.maxRssBytes);
        return a !== undefined && b !== undefined ? b - a : undefined;
      };
      const base = med(main, 'ours', (r) => r.steps[k]?.maxRssBytes) ?? 0;
      const allowed = Math.max(16 * MiB, base * 0.1);
      const row: Row = {
        section: l,
        metric: `peak RSS growth, ${name} (large - main)`,
        ours: g('ours'),
        restic: g('restic'),
        fmt: bytes,
        target: { cmp: 'le', value: allowed, text: `<= +${fmtBytes(allowed)}`, on: 'ours' },
      };
      rows.push(judge(row));
    }
  }
  return rows;
}

/** What no tool can avoid storing for day2-clustered (images.ts), against the "<= 0.7x restic" target. */
function clusteredFloorNote(img: ImageSet, rows: Row[]): string[] {
  const e = img.edits?.clustered;
  const restic = rows.find((r) => r.metric === 'added by day2-clustered (du delta)')?.restic;
  if (!e || restic === undefined) return [];
  const floor = clusteredKeystreamBytes(e);
  return [
    `day2-clustered floor: ${fmtBytes(floor)} of it is new keystream (incompressible), the rest of its ${fmtBytes(e.bytes + e.newFileBytes)} of new data is text; ` +
      `0.7x restic's ${fmtBytes(restic)} is ${fmtBytes(0.7 * restic)}${0.7 * restic < floor ? ', below that floor: no tool can meet this target on this image' : ''}.`,
  ];
}

function fixedCostRows(startup: Record<string, { wallS: number; maxRssBytes: number }>, mainRounds: RoundResult[]): Row[] {
  return [
    { section: 'fixed costs', metric: 'start-up (print version), wall', ours: startup.ours?.wallS, restic: startup.restic?.wallS, fmt: secs },
    { section: 'fixed costs', metric: 'start-up (print version), peak RSS', ours: startup.ours?.maxRssBytes, restic: startup.restic?.maxRssBytes, fmt: bytes },
    { section: 'fixed costs', metric: 'init (creates keys: KDF), wall', ours: med(mainRounds, 'ours', (r) => r.steps.init?.wallS), restic: med(mainRounds, 'restic', (r) => r.steps.init?.wallS), fmt: secs },
  ];
}

function printTable(rows: Row[]): string {
  const header = ['metric', 'ours', 'restic', 'ours/restic', 'target', 'result'];
  const lines: string[][] = [];
  let section = '';
  const out: string[] = [];
  const body: (string[] | string)[] = [];
  for (const r of rows) {
    if (r.section !== section) {
      section = r.section;
      body.push(`== ${section}`);
    }
    const ratio = r.ours !== undefined && r.restic ? r.ours / r.restic : undefined;
    const cells = [
      r.metric,
      r.ours !== undefined ? r.fmt(r.ours) : 'n/a',
      r.restic !== undefined ? r.fmt(r.restic) : 'n/a',
      ratio !== undefined && r.target?.on !== 'ours' ? `${ratio.toFixed(3)}x` : '',
      r.target?.text ?? '',
      r.pass === true ? 'PASS' : r.pass === false ? 'FAIL' : r.target ? 'n/a' : '',
    ];
    lines.push(cells);
    body.push(cells);
  }
  const w = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmtLine = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(w[i]) : x.padStart(w[i]))).join('  ');
  out.push(fmtLine(header));
  out.push(w.map((n) => '-'.repeat(n)).join('  '));
  for (const b of body) out.push(typeof b === 'string' ? b : fmtLine(b));
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const { values: a } = parseArgs({
    options: {
      small: { type: 'boolean' },
      size: { type: 'string' },
      used: { type: 'string' },
      'large-size': { type: 'string' },
      'large-used': { type: 'string' },
      'no-large': { type: 'boolean' },
      repeat: { type: 'string' },
      'large-repeat': { type: 'string' },
      tools: { type: 'string' },
      'ours-cmd': { type: 'string' },
      seed: { type: 'string' },
      'cache-dir': { type: 'string' },
      keep: { type: 'boolean' },
      'images-only': { type: 'boolean' },
      'ours-commit': { type: 'string' },
      'from-json': { type: 'string' },
      'keep-page-reporting': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  });
  if (a.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const env = process.env;
  if (a['from-json']) {
    const d = JSON.parse(await readFile(a['from-json'], 'utf8'));
    const label = (sp: ImageSpec | null) => (sp ? `${fmtBytes(sp.volumeBytes).replace('.00 ', ' ')} volume, ~${fmtBytes(sp.usedBytes)} used` : null);
    const rows = buildRows(d.rounds.main, d.rounds.large, label(d.options.mainSpec)!, d.options.largeSpec ? label(d.options.largeSpec) : null);
    rows.push(...fixedCostRows(d.startup ?? {}, d.rounds.main));
    process.stdout.write(`${a['from-json']}\nmachine: ${JSON.stringify(d.machine)}\n\n${printTable(rows)}\n`);
    return 0;
  }
  const small = !!a.small;
  const cacheDir = resolve(a['cache-dir'] ?? '.bench-cache');
  const seed = a.seed ?? env.BENCH_SEED ?? '1';
  const mainSpec: ImageSpec = {
    label: small ? 'small' : 'main',
    volumeBytes: parseSize(a.size ?? env.BENCH_SIZE ?? (small ? '1G' : '4G')),
    usedBytes: parseSize(a.used ?? env.BENCH_USED ?? (small ? '512M' : '1.75G')),
    seed,
  };
  const largeSpec: ImageSpec | null = a['no-large']
    ? null
    : {
        label: small ? 'small-large' : 'large',
        volumeBytes: parseSize(a['large-size'] ?? env.BENCH_LARGE_SIZE ?? (small ? '2G' : '16G')),
        usedBytes: parseSize(a['large-used'] ?? env.BENCH_LARGE_USED ?? (small ? '1G' : '7G')),
        seed,
        day1Only: true,
      };
  const sizeLabel = (s: ImageSpec) => `${fmtBytes(s.volumeBytes).replace('.00 ', ' ')} volume, ~${fmtBytes(s.usedBytes)} used`;
  const repeat = Math.max(1, Number(a.repeat ?? env.BENCH_REPEAT ?? 1));
  const largeRepeat = Math.max(1, Number(a['large-repeat'] ?? env.BENCH_LARGE_REPEAT ?? 1));
  const toolNames = (a.tools ?? 'ours,restic').split(',').map((s) => s.trim());
  let oursCmd = (a['ours-cmd'] ?? env.KLOSET_BENCH_CMD ?? 'node bin/scw-kloset.js').split(/\s+/).filter(Boolean);
  let oursLabel: string | undefined;
  if (a['ours-commit']) {
    const sha = (await run('git', ['rev-parse', '--verify', `${a['ours-commit']}^{commit}`])).stdout.trim();
    const dir = join(cacheDir, `ours-${sha.slice(0, 12)}`);
    if (!existsSync(join(dir, 'bin', 'scw-kloset.js'))) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      await run('sh', ['-c', 'git archive "$1" | tar -x -C "$2"', 'sh', sha, dir]);
      await symlink(resolve('node_modules'), join(dir, 'node_modules'));
    }
    oursCmd = ['node', join(dir, 'bin', 'scw-kloset.js')];
    oursLabel = `commit ${(await run('git', ['log', '-1', '--format=%h %cs %s', sha])).stdout.trim()} (clean export in ${dir})`;
  }

  // Prerequisites
  const missing = missingImageTools();
  if (!existsSync(TIME_BIN)) missing.push('time');
  if (missing.length) {
    process.stderr.write(
      `bench: missing Debian packages: ${missing.join(' ')}\n  install them with: apt-get install -y ${missing.join(' ')} debootstrap restic\n`,
    );
    return 2;
  }
  await mkdir(cacheDir, { recursive: true });

  const tools: Tool[] = [];
  const skipped: Record<string, string> = {};
  for (const name of toolNames) {
    const t = name === 'ours' ? new Ours(oursCmd, oursLabel) : name === 'restic' ? new Restic(join(cacheDir, 'work', 'restic-cache')) : null;
    if (!t) throw new BenchError(`unknown tool ${name}`);
    const why = await t.unavailable();
    if (why) {
      skipped[name] = why;
      log(`${name} is not available, skipped: ${why}`);
    } else tools.push(t);
  }
  if (!tools.length) {
    process.stderr.write('bench: no tool to run\n');
    return 2;
  }

  const pageReporting = a['keep-page-reporting'] ? 'free page reporting: left as it is (--keep-page-reporting)' : pauseFreePageReporting();
  const startedAt = new Date();
  const machine = {
    pageReporting,
    date: startedAt.toISOString(),
    nproc: cpus().length,
    cpu: cpuModel(),
    memTotal: totalmem(),
    memFreeAtStart: freemem(),
    loadAvgAtStart: loadavg(),
    kernel: release(),
    node: process.version,
    restic: skipped.restic ? 'n/a' : (await run('restic', ['version'])).stdout.trim(),
    ours: tools.find((t) => t.name === 'ours') ? await tools.find((t) => t.name === 'ours')!.version() : `n/a: ${skipped.ours ?? 'not selected'}`,
  };

  // Images (cached)
  const mainImg = await ensureImages(cacheDir, mainSpec);
  const largeImg = largeSpec ? await ensureImages(cacheDir, largeSpec) : null;
  const imgs = [mainImg, ...(largeImg ? [largeImg] : [])];
  if (a['images-only']) {
    for (const i of imgs) process.stdout.write(`${i.spec.label}: ${i.dir}\n`);
    return 0;
  }
  log('warming the page cache with the images');
  for (const i of imgs) for (const f of [i.day1, i.day2Clustered, i.day2Scattered]) if (f) await warm(f.path);

  // Fixed cost of starting each tool (median of 3), to read the throughput of small images.
  const startup: Record<string, { wallS: number; maxRssBytes: number }> = {};
  for (const t of tools) {
    try {
      const ms = [await t.startup(), await t.startup(), await t.startup()];
      startup[t.name] = { wallS: median(ms.map((m) => m.wallS)), maxRssBytes: median(ms.map((m) => m.maxRssBytes)) };
    } catch (e) {
      log(`${t.name}: start-up measurement failed (not counted as an error): ${(e as Error).message.split('\n')[0]}`);
    }
  }

  const mainRounds: RoundResult[] = [];
  const largeRounds: RoundResult[] = [];
  const work = join(cacheDir, 'work');
  for (let r = 0; r < repeat; r++) {
    const order = r % 2 === 0 ? tools : [...tools].reverse();
    for (const [i, t] of order.entries()) mainRounds.push(await roundMain(t, mainImg, join(work, t.name), r, i, !!a.keep));
  }
  if (largeImg) {
    for (let r = 0; r < largeRepeat; r++) {
      const order = r % 2 === 0 ? tools : [...tools].reverse();
      for (const [i, t] of order.entries()) largeRounds.push(await roundLarge(t, largeImg, join(work, `${t.name}-large`), r, i, !!a.keep));
    }
  }
  await rm(join(work, 'restic-cache'), { recursive: true, force: true });

  const finishedAt = new Date();
  const rows = buildRows(mainRounds, largeRounds, sizeLabel(mainSpec), largeSpec ? sizeLabel(largeSpec) : null);
  rows.push(...fixedCostRows(startup, mainRounds));
  const table = printTable(rows);
  const errors = [...mainRounds, ...largeRounds].filter((r) => r.error);

  const imageFacts = (i: ImageSet) =>
    `  ${i.spec.label}: ${sizeLabel(i.spec)} | rootfs: ${i.rootfs.kind}, ${fmtBytes(i.rootfs.bytes)}; software ${fmtBytes(i.composition.hostSoftware)}, logs ${fmtBytes(i.composition.text)}, random ${fmtBytes(i.composition.random)}\n` +
    `    day1.qcow2 ${fmtBytes(i.day1.bytes)}` +
    (i.edits && i.day2Clustered && i.day2Scattered
      ? `; day2-clustered ${fmtBytes(i.day2Clustered.bytes)} (${i.edits.clustered.regions} regions, ${fmtBytes(i.edits.clustered.bytes)} rewritten + ${fmtBytes(i.edits.clustered.newFileBytes)} new file); ` +
        `day2-scattered ${fmtBytes(i.day2Scattered.bytes)} (${i.edits.scattered.writes} x 4 KiB writes + ${fmtBytes(i.edits.scattered.newFileBytes)} new file)`
      : ' (first backup and restore only)');
  const report = [
    '',
    `scw-kloset benchmark — ${finishedAt.toISOString()}`,
    `machine: ${machine.nproc} x ${machine.cpu}, ${fmtBytes(machine.memTotal)} RAM, Linux ${machine.kernel}, node ${machine.node}`,
    machine.pageReporting,
    `load average: ${machine.loadAvgAtStart.map((x) => x.toFixed(2)).join(' ')} at start, ${loadavg().map((x) => x.toFixed(2)).join(' ')} at end (other work on the machine skews timings)`,
    `restic: ${machine.restic}`,
    `ours:   ${machine.ours}`,
    `images (warm page cache; throughput = QCOW2 file bytes / wall time; ${repeat} round(s), tool order alternating, medians):`,
    ...imgs.map(imageFacts),
    '',
    table,
    '',
    ...tools.flatMap((t) => t.notes.map((n) => `note (${t.name}): ${n}`)),
    ...Object.entries(skipped).map(([k, v]) => `NOTE: ${k} was not run: ${v}`),
    ...errors.map((r) => `ERROR: ${r.tool} on ${r.image} round ${r.round + 1}: ${r.error}`),
    `RSS growth target: "not growing" is read as at most max(16 MiB, 10% of the main image's figure) more on the large image.`,
    ...clusteredFloorNote(mainImg, rows),
    '',
  ].join('\n');
  process.stdout.write(report);

  const stamp = finishedAt.toISOString().replace(/[:.]/g, '-');
  const resultsPath = join(cacheDir, `results-${stamp}.json`);
  await writeFile(
    resultsPath,
    JSON.stringify(
      {
        machine: { ...machine, loadAvgAtEnd: loadavg(), finishedAt: finishedAt.toISOString() },
        options: { mainSpec, largeSpec, repeat, largeRepeat, tools: toolNames, oursCmd },
        skipped,
        images: imgs,
        notes: Object.fromEntries(tools.map((t) => [t.name, t.notes])),
        startup,
        rows: rows.map((r) => ({
          section: r.section,
          metric: r.metric,
          ours: r.ours ?? null,
          restic: r.restic ?? null,
          ratio: r.ours !== undefined && r.restic ? r.ours / r.restic : null,
          target: r.target?.text ?? null,
          pass: r.pass ?? null,
        })),
        rounds: { main: mainRounds, large: largeRounds },
        table,
      },
      null,
      2,
    ) + '\n',
  );
  process.stdout.write(`results: ${resultsPath}\n`);
  return errors.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  },
);

