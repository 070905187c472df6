// `npm start` = `scw-kloset demo`: the product end to end on the local Scaleway. A volume holding a
// real ext4 filesystem is backed up through the functions (trigger-export over private HTTP, then
// the poll-export cron, the ship-to-kloset queue trigger and a Serverless Job run), changed, backed
// up again (deduplicated), and the second snapshot is restored into a new volume whose content is
// compared with the source. Exits 0 only if that comparison holds.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { startLocalPlatform, type LocalPlatform } from '../emulator/platform.js';
import { buildExt4Image, ext4WriteFiles } from '../emulator/seed.js';
import { followRun, stageDurations } from '../lib/pipeline/follow.js';
import type { RunRecord } from '../lib/pipeline/runs.js';
import { byteProgress } from './progress.js';
import { UserError } from './errors.js';

const MiB = 1024 * 1024;
const say = (s: string) => process.stderr.write(`${s}\n`);

/** SHA-256 of the first `length` bytes of a file. */
async function hashPrefix(file: string, length: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { start: 0, end: length - 1, highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function watch(plat: LocalPlatform, resource: string, runId: string): Promise<RunRecord> {
  const p = await plat.pipeline();
  let last = '';
  let worker = '';
  let bar: ReturnType<typeof byteProgress> | null = null;
  const t0 = Date.now();
  const run = await followRun(p, resource, runId, {
    drive: false, // the local cron and queue triggers do the work, as on Scaleway
    intervalMs: 300,
    timeoutMs: 15 * 60_000,
    onUpdate(r, progress) {
      if (r.stage !== last) {
        bar?.stop();
        bar = null;
        last = r.stage;
        if (r.stage !== 'done') say(`    ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s  ${r.stage}`);
      }
      const by = r.shipping?.by === 'job' ? (r.shipping.jobRunId ? `Serverless Job run ${r.shipping.jobRunId}` : '') : r.shipping ? 'the function itself' : '';
      if (by && by !== worker && r.status === 'running') {
        worker = by;
        bar?.stop();
        bar = null;
        say(`             streaming by ${by}`);
      }
      if (progress?.bytesTotal) {
        bar ??= byteProgress('           stream  ', progress.bytesTotal);
        bar.update(progress.bytesDone, progress.bytesTotal);
      }
    },
  });
  (bar as ReturnType<typeof byteProgress> | null)?.stop();
  return run;
}

function describe(run: RunRecord): string[] {
  const out = [`  ${run.kind} ${run.id}: ${run.status.toUpperCase()}`];
  out.push(`    stages   ${stageDurations(run).map((s) => `${s.stage} ${s.seconds.toFixed(1)}s`).join(' -> ')}`);
  const res = run.result;
  if (run.kind === 'backup' && res?.ok) {
    const read = res.bytesRead ?? 0;
    const added = res.bytesAdded ?? 0;
    out.push(`    image    ${(read / MiB).toFixed(1)} MiB read, ${(added / MiB).toFixed(1)} MiB added to the store (${(read / Math.max(added, 1)).toFixed(1)}x smaller)`);
    out.push(`    snapshot ${res.storeSnapshot}`);
  }
  if (run.kind === 'restore') out.push(`    volume   ${run.volumeId ?? '-'}`);
  if (run.error) out.push(`    error    ${run.error.message}`);
  for (const l of run.leftovers ?? []) out.push(`    left     ${l.kind} ${l.id}: ${l.error}`);
  return out;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('back up, back up again and restore a volume on the local Scaleway, end to end (npm start)')
    .option('--keep', 'keep the local Scaleway running at the end (Ctrl-C to stop)')
    .option('--data-mib <n>', 'MiB of pseudo-random data in the volume, besides system files', (v) => Number(v), 48)
    .action(async (o: { keep?: boolean; dataMib: number }) => {
      for (const tool of ['mkfs.ext4', 'debugfs', 'qemu-img']) {
        const found = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].some((d) => existsSync(path.join(d, tool)));
        if (!found) throw new UserError(`${tool} is missing: run "bash scripts/setup.sh" first`);
      }
      const work = await mkdtemp(path.join(tmpdir(), 'scw-kloset-demo-'));
      const t0 = Date.now();
      say('scw-kloset demo: Block Storage volume -> Kloset store -> new volume, on the local Scaleway\n');
      say('1. Starting the local Scaleway (Block Storage + Jobs API, S3 + SQS) and the five functions...');
      const plat = await startLocalPlatform({
        timings: { volumeCreateMs: 400, snapshotCreateMs: 400, exportMs: 400, importMs: 400, deleteMs: 200, jobStartMs: 300 },
        inlineMaxBytes: 0, // always use the Serverless Job, as for large production volumes
      });
      let ok = false;
      try {
        say(`   API ${plat.local.apiUrl}, S3/SQS ${plat.local.s3Endpoint}, store ${plat.storeLocation}`);
        say(`   function logs: ${plat.logFile}`);
        plat.functions.startDrivers({ cronEveryMs: 1000, cronFunctions: ['poll-export'] });

        say('2. Creating a volume with a real ext4 filesystem (system docs, Python library, random data)...');
        const image = path.join(work, 'volume.img');
        const dirs = ['/usr/share/doc', '/usr/lib/python3.11'].filter((d) => existsSync(d));
        const sourceTree = path.join(work, 'tree');
        const { execFile } = await import('node:child_process');
        const { promisify } = await import('node:util');
        const run = promisify(execFile);
        await run('mkdir', ['-p', sourceTree]);
        for (const d of dirs) await run('cp', ['-a', '--parents', d, sourceTree]).catch(() => {});
        await buildExt4Image(image, {
          sizeMiB: 512,
          dir: sourceTree,
          files: { 'var/lib/app/data.bin': { size: o.dataMib * MiB, seed: 'day-1' }, 'etc/motd': 'scw-kloset demo volume\n' },
        });
        const vol = await plat.local.emulator.seedVolume({ name: 'demo-data', fromFile: image });
        await plat.setResources([{ name: 'demo', volumeId: vol.id, environment: 'production', dataClass: 'critical' }]);
        say(`   volume ${vol.id} (${(vol.size / 1e9).toFixed(0)} GB, ${dirs.join(', ')} + ${o.dataMib} MiB random)`);

        const backup = async (label: string) => {
          say(`\n${label}`);
          const res = await plat.functions.call('trigger-export', { resource: 'demo' });
          if (res.status !== 202) throw new Error(`trigger-export answered ${res.status}: ${JSON.stringify(res.body)}`);
          say(`   POST trigger-export -> 202, run ${res.body.runId}`);
          return watch(plat, 'demo', res.body.runId);
        };
        const first = await backup('3. Backup #1 (trigger-export over private HTTP; poll-export cron; ship-to-kloset queue; Serverless Job)');

        say('\n4. "The next day": editing the volume (a new 8 MiB file, a rewritten config file)...');
        await ext4WriteFiles(plat.local.emulator.volumePath(vol.id), {
          'var/lib/app/new-upload.bin': { size: 8 * MiB, seed: 'day-2' },
          'etc/motd': 'scw-kloset demo volume, day 2\n',
        });
        const second = await backup('5. Backup #2 (deduplicated against #1)');

        const restored: RunRecord[] = [];
        if (second.status === 'succeeded') {
          say('\n6. Restoring backup #2 into a new volume (restore-upload; import-volume queue; poll-export)');
          const res = await plat.functions.call('restore-upload', {
            resource: 'demo',
            snapshot: second.result!.storeSnapshot!.slice(0, 12),
            target: { volumeName: 'demo-restored' },
          });
          if (res.status !== 202) throw new Error(`restore-upload answered ${res.status}: ${JSON.stringify(res.body)}`);
          say(`   POST restore-upload -> 202, run ${res.body.runId}`);
          restored.push(await watch(plat, 'demo', res.body.runId));
        }

        say('\n7. Verifying the restored volume against the source...');
        let verdict = 'not verified: a run failed';
        const rr = restored[0];
        if (rr?.status === 'succeeded' && rr.volumeId) {
          const src = plat.local.emulator.volumePath(vol.id);
          const dst = plat.local.emulator.volumePath(rr.volumeId);
          const [a, b] = await Promise.all([hashPrefix(src, vol.size), hashPrefix(dst, vol.size)]);
          ok = a === b;
          verdict = ok ? `identical (SHA-256 of ${(vol.size / 1e9).toFixed(0)} GB: ${a.slice(0, 16)}...)` : `DIFFERENT: ${a} vs ${b}`;
        }
        say(`   ${verdict}`);

        say('\nSummary');
        for (const r of [first, second, ...restored]) for (const l of describe(r)) say(l);
        if (first.result?.ok && second.result?.ok) {
          const ratio = (first.result.bytesAdded ?? 0) / Math.max(second.result.bytesAdded ?? 1, 1);
          say(`  backup #2 added ${ratio.toFixed(0)}x fewer bytes than backup #1`);
        }
        say(`  total ${((Date.now() - t0) / 1000).toFixed(1)}s; ${ok ? 'restore VERIFIED' : 'restore NOT verified'}`);
        if (o.keep) {
          say('\nThe local Scaleway keeps running; press Ctrl-C to stop.');
          await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
        }
      } finally {
        await plat.stop();
        await rm(work, { recursive: true, force: true });
      }
      if (!ok) process.exitCode = 1;
    });
}
