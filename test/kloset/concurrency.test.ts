// Two writers at once: two CLI processes back up different images into one store at the same time.
// Both snapshots must restore byte-identical and `check --read-data` must pass.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkStore } from '../../lib/kloset/store.js';
import {
  createStore,
  imageData,
  makeTmp,
  MiB,
  randomData,
  runCli,
  spawnCli,
  storeFiles,
  textData,
  withRepo,
  writeFileStreaming,
} from '../helpers/kloset.js';
import type { BackupResult } from '../../lib/kloset/archiver.js';

describe('concurrent writers', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    tmp = await makeTmp();
  });
  afterAll(async () => tmp?.cleanup());

  it('two backups of different images into one store at the same time: both restore, check --read-data passes', async () => {
    const store = join(tmp.dir, 'store');
    await createStore(store, { packSize: 1 << 20 });
    // Different images that share a region: both writers may store the same blobs at the same time.
    const shared = textData(2 * MiB, 99);
    const imgA = Buffer.concat([randomData(8 * MiB, 'conc-a'), shared, imageData(4 * MiB, 31)]);
    const imgB = Buffer.concat([imageData(4 * MiB, 32), shared, randomData(6 * MiB + 999, 'conc-b')]);
    const pathA = join(tmp.dir, 'a.img');
    const pathB = join(tmp.dir, 'b.img');
    await Promise.all([writeFileStreaming(pathA, imgA), writeFileStreaming(pathB, imgB)]);

    const a = spawnCli(['store', 'backup', '--store', store, pathA, '--json', '--volume-name', 'a']);
    const b = spawnCli(['store', 'backup', '--store', store, '-', '--json', '--volume-name', 'b'], { stdinFile: pathB });
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra.stderr).toBe('');
    expect(rb.stderr).toBe('');
    expect([ra.code, rb.code]).toEqual([0, 0]);
    const sa = JSON.parse(ra.out) as BackupResult;
    const sb = JSON.parse(rb.out) as BackupResult;
    expect(sa.bytesRead).toBe(imgA.length);
    expect(sb.bytesRead).toBe(imgB.length);
    // each writer wrote its own packs and index files; nothing was lost
    expect((await storeFiles(store, 'packs/')).length).toBeGreaterThanOrEqual(Math.floor((8 + 6) / 1.1));
    expect((await storeFiles(store, 'index/')).length).toBeGreaterThanOrEqual(2);
    expect(await storeFiles(store, 'locks/')).toEqual([]);

    const outA = join(tmp.dir, 'ra.img');
    const [restA, restB, check] = await Promise.all([
      runCli(['store', 'restore', '--store', store, sa.snapshot.slice(0, 12), '--to', outA]),
      runCli(['store', 'restore', '--store', store, sb.snapshot.slice(0, 12), '--to', '-']),
      runCli(['store', 'check', '--store', store, '--read-data']),
    ]);
    expect(restA.code).toBe(0);
    expect((await readFile(outA)).equals(imgA)).toBe(true);
    expect(restB.code).toBe(0);
    expect(restB.stdout.equals(imgB)).toBe(true);
    expect(check.stderr).toMatch(/^no errors: 2 snapshots/m);
    expect(check.code).toBe(0);
    // every pack is indexed (no orphans), no lock is left
    const report = await withRepo(store, (repo) => checkStore(repo));
    expect(report.errors).toEqual([]);
    expect(report.warnings).toEqual([]);
    expect(report.packs).toBe((await storeFiles(store, 'packs/')).length);
  });
});
