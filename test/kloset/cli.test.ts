// Round trips through the `scw-kloset store` CLI (a real child process): init, backup (file and stdin),
// ls with filters, restore by unique prefix to a file and to stdout, dedup of unchanged and modified
// images, and the errors a user meets (ambiguous/unknown prefix, second init, missing --store).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupResult } from '../../lib/kloset/archiver.js';
import { matchesFilter, type SnapshotFilter } from '../../lib/kloset/store.js';
import {
  backupBuffer,
  cliBackupJson,
  cliOk,
  FAST_KDF_ARGS,
  imageData,
  makeTmp,
  MiB,
  randomData,
  restoreToBuffer,
  runCli,
  sha256,
  spawnCli,
  uniquePrefix,
  writeFileStreaming,
} from '../helpers/kloset.js';

interface LsEntry {
  id: string;
  source: { volumeId?: string; name?: string; zone?: string; projectId?: string; path?: string };
  environment?: string;
  dataClass?: string;
  tags: Record<string, string>;
  imageSize: number;
  sha256: string;
  bytesRead: number;
  bytesAdded: number;
}

describe('store CLI round trips', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let store: string;
  const imgA = imageData(16 * MiB, 1);
  const imgB = imageData(6 * MiB + 12345, 2); // not a multiple of anything
  let pathA: string;
  let pathB: string;
  let snapA: BackupResult;
  let snapB: BackupResult;

  const ls = async (...filters: string[]) => JSON.parse((await cliOk(['store', 'ls', '--store', store, '--json', ...filters])).out) as LsEntry[];

  beforeAll(async () => {
    tmp = await makeTmp();
    store = join(tmp.dir, 'store');
    pathA = join(tmp.dir, 'a.img');
    pathB = join(tmp.dir, 'b.img');
    await writeFileStreaming(pathA, imgA);
    await writeFileStreaming(pathB, imgB);
  });
  afterAll(async () => tmp?.cleanup());

  it('init creates a store; a second init on the same location refuses and changes nothing', async () => {
    const r = await runCli(['store', 'init', '--store', store, ...FAST_KDF_ARGS, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const created = JSON.parse(r.out) as { store: string; id: string };
    expect(created.store).toBe(store);
    expect(created.id).toMatch(/^[0-9a-f-]{36}$/);
    const keysBefore = await readdir(join(store, 'keys'));
    const configBefore = await readFile(join(store, 'config'));
    expect(keysBefore).toHaveLength(1);

    const again = await runCli(['store', 'init', '--store', store, ...FAST_KDF_ARGS]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already exists/);
    expect(again.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    expect(await readdir(join(store, 'keys'))).toEqual(keysBefore);
    expect((await readFile(join(store, 'config'))).equals(configBefore)).toBe(true);
  });

  it('backup --json of a file and of stdin reports the snapshot, bytes read and bytes added', async () => {
    [snapA, snapB] = await Promise.all([
      cliBackupJson(store, pathA, [
        '--tag', 'app=web', '--tag', 'tier=gold',
        '--volume-id', '11111111-1111-4111-8111-111111111111', '--volume-name', 'vol-a', '--zone', 'fr-par-1',
        '--environment', 'production', '--data-class', 'critical',
      ]),
      cliBackupJson(store, '-', ['--tag', 'app=db', '--volume-name', 'vol-b', '--environment', 'staging', '--data-class', 'standard'], { stdinFile: pathB }),
    ]);
    for (const [s, img] of [[snapA, imgA], [snapB, imgB]] as const) {
      expect(s.snapshot).toMatch(/^[0-9a-f]{64}$/);
      expect(s.bytesRead).toBe(img.length);
      expect(s.sha256).toBe(sha256(img));
      expect(s.bytesAdded).toBeGreaterThan(0);
    }
    // A is half random (incompressible), a quarter text, a quarter zeros: stored below its size but
    // above its random part. The two backups share nothing but zero chunks.
    expect(snapA.bytesAdded).toBeLessThan(imgA.length);
    expect(snapA.bytesAdded).toBeGreaterThan(imgA.length * 0.3);
    expect(snapB.bytesAdded).toBeLessThan(imgB.length);
    expect(snapA.snapshot).not.toBe(snapB.snapshot);
  });

  it('ls --json lists both snapshots with their metadata, and filters by tag, volume, environment and data class', async () => {
    const all = await ls();
    expect(all.map((s) => s.id).sort()).toEqual([snapA.snapshot, snapB.snapshot].sort());
    const a = all.find((s) => s.id === snapA.snapshot)!;
    expect(a.tags).toEqual({ app: 'web', tier: 'gold' });
    expect(a.source).toMatchObject({ volumeId: '11111111-1111-4111-8111-111111111111', name: 'vol-a', zone: 'fr-par-1', path: pathA });
    expect(a).toMatchObject({ environment: 'production', dataClass: 'critical', imageSize: imgA.length, sha256: sha256(imgA), bytesRead: imgA.length });
    const b = all.find((s) => s.id === snapB.snapshot)!;
    expect(b).toMatchObject({ environment: 'staging', dataClass: 'standard', imageSize: imgB.length, tags: { app: 'db' } });
    expect(b.source.path).toBe('-');

    const ids = (list: LsEntry[]) => list.map((s) => s.id).sort();
    const [byTags, byVolName, byEnv, byClass] = await Promise.all([
      ls('--tag', 'app=web', '--tag', 'tier=gold'),
      ls('--volume', 'vol-b'),
      ls('--environment', 'staging'),
      ls('--data-class', 'critical'),
    ]);
    expect(ids(byTags)).toEqual([snapA.snapshot]);
    expect(ids(byVolName)).toEqual([snapB.snapshot]);
    expect(ids(byEnv)).toEqual([snapB.snapshot]);
    expect(ids(byClass)).toEqual([snapA.snapshot]);
    // the rest of the filter logic (the same function the CLI applies) on the listed records
    const pick = (f: SnapshotFilter) => ids(all.filter((s) => matchesFilter(s, f)));
    expect(pick({ volume: '11111111-1111-4111-8111-111111111111' })).toEqual([snapA.snapshot]);
    expect(pick({ tags: { app: 'web', tier: 'silver' } })).toEqual([]);
    expect(pick({ environment: 'production', dataClass: 'standard' })).toEqual([]);
    expect(pick({ environment: 'production', dataClass: 'critical', volume: 'vol-a' })).toEqual([snapA.snapshot]);
    expect(pick({})).toEqual(ids(all));
  });

  it('restore by a unique id prefix to a file and to stdout gives the original bytes', async () => {
    const ids = [snapA.snapshot, snapB.snapshot];
    const prefixA = uniquePrefix(snapA.snapshot, ids, 6);
    const prefixB = uniquePrefix(snapB.snapshot, ids, 1);
    const outA = join(tmp.dir, 'restored-a.img');
    const [toFile, toStdout] = await Promise.all([
      runCli(['store', 'restore', '--store', store, prefixA, '--to', outA]),
      runCli(['store', 'restore', '--store', store, prefixB.toUpperCase(), '--to', '-']),
    ]);
    expect(toFile.stderr).toContain(snapA.snapshot.slice(0, 12));
    expect(toFile.code).toBe(0);
    expect((await readFile(outA)).equals(imgA)).toBe(true);
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout.length).toBe(imgB.length);
    expect(toStdout.stdout.equals(imgB)).toBe(true);
    // nothing but the restored image was left next to it (no partial files)
    expect((await readdir(tmp.dir)).filter((f) => f.includes('restored'))).toEqual(['restored-a.img']);
  });

  it('a second backup of the same image adds almost nothing; a modified image adds about the changed part', async () => {
    const modified = Buffer.from(imgA);
    randomData(256 * 1024, 'edit-1').copy(modified, 3 * MiB + 777); // in a random region
    textData256(modified, 11 * MiB + 5);
    const pathM = join(tmp.dir, 'a-modified.img');
    await writeFileStreaming(pathM, modified);
    const [same, mod] = await Promise.all([cliBackupJson(store, pathA, ['--tag', 'app=web']), cliBackupJson(store, pathM)]);
    expect(same.bytesRead).toBe(imgA.length);
    expect(same.snapshot).not.toBe(snapA.snapshot); // a new snapshot record...
    expect(same.blobsAdded).toBe(0); // ...but no new data
    expect(same.bytesAdded).toBeLessThan(16 * 1024); // the snapshot record, and maybe a small index
    // 2 x 256 KiB changed: with 256 KiB average (1 MiB max) chunks, a few chunks around each edit
    expect(mod.bytesRead).toBe(modified.length);
    expect(mod.bytesAdded).toBeGreaterThan(256 * 1024);
    expect(mod.bytesAdded).toBeLessThan(4 * MiB);
    expect(mod.bytesAdded).toBeLessThan(snapA.bytesAdded / 2);
    expect(mod.blobsAdded).toBeLessThan(mod.chunks / 3);

    const restored = await restoreToBuffer(store, mod.snapshot.slice(0, 10));
    expect(restored.equals(modified)).toBe(true);
  });

  it('an ambiguous or unknown prefix is a clear error with a non-zero exit', async () => {
    // Add tiny snapshots (in-process) until two ids share their first character.
    let ids = JSON.parse((await cliOk(['store', 'ls', '--store', store, '--json'])).out).map((s: LsEntry) => s.id) as string[];
    const shared = () => ids.find((id) => ids.filter((o) => o[0] === id[0]).length > 1);
    for (let i = 0; !shared() && i < 20; i++) ids.push((await backupBuffer(store, randomData(1000, `tiny-${i}`))).snapshot);
    const ambiguous = shared()![0]!;
    const unknown = [...'0123456789abcdef'].map((c) => c + c + c + c).find((p) => !ids.some((id) => id.startsWith(p)))!;
    const out = join(tmp.dir, 'never.img');
    const noDir = join(tmp.dir, 'no-such-dir', 'x.img');
    const [amb, unk, bad, dir] = await Promise.all([
      runCli(['store', 'restore', '--store', store, ambiguous, '--to', out]),
      runCli(['store', 'show', '--store', store, unknown]),
      runCli(['store', 'restore', '--store', store, 'not-an-id', '--to', out]),
      runCli(['store', 'restore', '--store', store, ids[0]!, '--to', noDir]),
    ]);
    expect(dir.code).toBe(2);
    expect(dir.stderr).toContain(`directory ${join(tmp.dir, 'no-such-dir')} does not exist`);
    expect(amb.code).not.toBe(0);
    expect(amb.stderr).toMatch(new RegExp(`"${ambiguous}" matches \\d+ snapshots`));
    expect(unk.code).not.toBe(0);
    expect(unk.stderr).toContain(`no snapshot matches "${unknown}"`);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/is not a snapshot id/);
    for (const r of [amb, unk, bad, dir]) {
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout.length).toBe(0);
    }
    expect((await readdir(tmp.dir)).filter((f) => f.includes('never'))).toEqual([]);
  });

  it('backing up a file that does not exist says so in one line, exit 2', async () => {
    const missing = join(tmp.dir, 'no-such-image.qcow2');
    const r = await runCli(['store', 'backup', '--store', store, missing]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`scw-kloset: cannot back up ${missing}: no such file`);
  });

  it('backup and restore of a one-chunk image exit on their own (no worker thread keeps the process alive)', async () => {
    // A single chunk leaves one of the blob workers without a job: its port must not hold the
    // process (it did, and the command hung after printing its result).
    const small = randomData(100_000, 77);
    const path = join(tmp.dir, 'small.img');
    await writeFileStreaming(path, small);
    const timed = async (args: string[]) => {
      const { child, done } = spawnCli(args);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const r = await done;
      clearTimeout(timer);
      expect(r.signal, `${args.slice(0, 2).join(' ')} did not exit by itself:\n${r.stderr}`).toBeNull();
      expect(r.code, r.stderr).toBe(0);
      return r;
    };
    const b = JSON.parse((await timed(['store', 'backup', '--store', store, path, '--json'])).out) as BackupResult;
    expect(b.chunks).toBe(1);
    const out = join(tmp.dir, 'small.out');
    await timed(['store', 'restore', '--store', store, b.snapshot, '--to', out]);
    expect((await readFile(out)).equals(small)).toBe(true);
  });

  it('check passes on the store built above', async () => {
    const r = await runCli(['store', 'check', '--store', store, '--read-data']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^no errors: \d+ snapshots/m);
    expect(r.stderr).not.toMatch(/^error:/m);
  });

  it('a missing --store is a clear message and a non-zero exit', async () => {
    const [lsR, backupR] = await Promise.all([runCli(['store', 'ls']), runCli(['store', 'backup', pathB, '--json'])]);
    for (const r of [lsR, backupR]) {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/missing --store/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.out).toBe('');
    }
  });
});

/** Overwrites 256 KiB of (compressible) text at `at`. */
function textData256(buf: Buffer, at: number): void {
  Buffer.from(('edited block ' + at + '\n').repeat(20000)).subarray(0, 256 * 1024).copy(buf, at);
}
