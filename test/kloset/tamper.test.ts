// Tampering: one flipped byte in any stored object is detected by the command that reads it, which
// names the damaged object; truncated and missing packs too. A restore that fails verification exits
// non-zero and leaves no file under the target name.
import { cp, mkdir, readdir, readFile, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkStore, openStore } from '../../lib/kloset/store.js';
import {
  backupBuffer,
  createStore,
  flipByte,
  makeTmp,
  MiB,
  PASSPHRASE,
  prng,
  randomData,
  restoreToBuffer,
  runCli,
  storeFiles,
  withRepo,
  type CliResult,
} from '../helpers/kloset.js';

const SEED = Number(process.env.KLOSET_TEST_SEED ?? Date.now() % 1_000_000);

describe('tampering', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let base: string;
  const imgX = randomData(3 * MiB + 5000, 'tamper-x');
  const imgY = randomData(2 * MiB + 77, 'tamper-y');
  let snapX: string;
  let snapY: string;
  let packsX: string[]; // keys (packs/xx/id) written by the backup of X
  let indexX: string;
  let caseNo = 0;

  beforeAll(async () => {
    console.log(`tamper seed ${SEED} (set KLOSET_TEST_SEED to replay)`);
    tmp = await makeTmp();
    base = join(tmp.dir, 'base');
    await createStore(base, { packSize: 1 << 20 });
    snapX = (await backupBuffer(base, imgX)).snapshot;
    packsX = (await storeFiles(base, 'packs/')).map((f) => f.path);
    const indexes = (await storeFiles(base, 'index/')).map((f) => f.path);
    expect(indexes).toHaveLength(1);
    indexX = indexes[0]!;
    snapY = (await backupBuffer(base, imgY)).snapshot;
    expect(packsX.length).toBeGreaterThanOrEqual(3);
    const report = await withRepo(base, (repo) => checkStore(repo, { readData: true }));
    expect(report.errors).toEqual([]);
    expect(report.warnings).toEqual([]);
  });
  afterAll(async () => tmp?.cleanup());

  /** A fresh copy of the base store, and an empty directory to restore into. */
  async function copyStore(): Promise<{ store: string; out: string }> {
    const n = ++caseNo;
    const store = join(tmp.dir, `case-${n}`);
    const out = join(tmp.dir, `out-${n}`);
    await cp(base, store, { recursive: true });
    await mkdir(out);
    return { store, out };
  }

  const check = (store: string, readData = false) => runCli(['store', 'check', '--store', store, ...(readData ? ['--read-data'] : [])]);
  const restore = (store: string, snap: string, out: string) => runCli(['store', 'restore', '--store', store, snap.slice(0, 16), '--to', join(out, 'image.img')]);

  function expectCheckNames(r: CliResult, object: string): void {
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: ${object}: `, 'm'));
    expect(r.stderr).toMatch(/^\d+ error\(s\)/m);
  }

  async function expectRestoreFails(r: CliResult, out: string, names: string): Promise<void> {
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull();
    expect(r.stderr).toContain(names);
    expect(await readdir(out)).toEqual([]); // neither the image nor a partial file
  }

  async function packLayout(store: string, key: string): Promise<{ size: number; indexOffset: number }> {
    const data = await readFile(join(store, key));
    return { size: data.length, indexOffset: Number(data.readBigUInt64BE(data.length - 16)) };
  }

  it('config: a flipped byte makes open fail, naming the config', async () => {
    const { store } = await copyStore();
    const size = (await readFile(join(store, 'config'))).length;
    await flipByte(join(store, 'config'), size - 20);
    const r = await runCli(['store', 'ls', '--store', store]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/integrity check failed: config/);
  });

  it('key file: a flipped byte anywhere makes open fail', async () => {
    const { store } = await copyStore();
    const [keyFile] = await storeFiles(store, 'keys/');
    const path = join(store, keyFile!.path);
    const text = await readFile(path, 'utf8');
    // one byte in the wrapped key: the passphrase no longer unwraps anything
    const at = text.indexOf('"wrappedKey": "') + 20;
    await flipByte(path, at, text[at] === 'A' ? 0x03 : 0x01); // stays base64
    const r = await runCli(['store', 'ls', '--store', store]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${keyFile!.path}: damaged`);
    await flipByte(path, at, text[at] === 'A' ? 0x03 : 0x01);
    await expect(withRepo(store, async () => 'opened')).resolves.toBe('opened');
    // every other byte of the file, in-process (cheap KDF): no flip may still open the store
    const undetected: string[] = [];
    for (let i = 0; i < text.length; i++) {
      await flipByte(path, i);
      const opened = await openStore(store, PASSPHRASE).then(
        async (repo) => (await repo.backend.close(), true),
        () => false,
      );
      if (opened) undetected.push(`${i}:${JSON.stringify(text[i])}`);
      await flipByte(path, i);
    }
    expect(undetected).toEqual([]);
  });

  it("a pack's header byte: check names the pack; the data still restores (blobs are authenticated on their own)", async () => {
    const { store } = await copyStore();
    const pack = packsX[0]!;
    await flipByte(join(store, pack), 10); // in the salt
    expectCheckNames(await check(store), pack);
    expect((await restoreToBuffer(store, snapX)).equals(imgX)).toBe(true);
  });

  it("a pack's blob byte: check --read-data names the pack; restore of the snapshot fails naming it and leaves no file", async () => {
    const { store, out } = await copyStore();
    const pack = packsX[0]!;
    await flipByte(join(store, pack), 24 + 1000); // in the first blob
    const id = pack.slice(pack.lastIndexOf('/') + 1);
    const [structure, data, rest, other] = await Promise.all([
      check(store),
      check(store, true),
      restore(store, snapX, out),
      restoreToBuffer(store, snapY),
    ]);
    expect(structure.code).toBe(0); // structure alone does not read blobs
    expectCheckNames(data, pack);
    expect(data.stderr).toMatch(/does not match its name|integrity check failed: blob/);
    await expectRestoreFails(rest, out, id);
    expect(other.equals(imgY)).toBe(true); // other snapshots are unaffected
  });

  it("a pack's own index byte and footer byte: check names the pack", async () => {
    const { store } = await copyStore();
    const [p1, p2] = [packsX[1]!, packsX[2]!];
    const l1 = await packLayout(store, p1);
    await flipByte(join(store, p1), l1.indexOffset + 7);
    const l2 = await packLayout(store, p2);
    await flipByte(join(store, p2), l2.size - 16 + 3); // the index offset in the footer
    const [structure, data] = await Promise.all([check(store), check(store, true)]);
    expectCheckNames(structure, p1);
    expectCheckNames(structure, p2);
    expectCheckNames(data, p1);
    expectCheckNames(data, p2);
    expect((await restoreToBuffer(store, snapX)).equals(imgX)).toBe(true);
  });

  it('an index file byte: check names the index file; restore fails naming it and leaves no file', async () => {
    const { store, out } = await copyStore();
    const size = (await readFile(join(store, indexX))).length;
    await flipByte(join(store, indexX), Math.floor(size / 2));
    const [c, r] = await Promise.all([check(store), restore(store, snapX, out)]);
    expectCheckNames(c, indexX);
    expectCheckNames(c, `snapshots/${snapX}`); // its blobs are no longer indexed
    await expectRestoreFails(r, out, indexX);
  });

  it('a snapshot byte: check names the snapshot; restore of it fails and leaves no file', async () => {
    const { store, out } = await copyStore();
    const key = `snapshots/${snapX}`;
    await flipByte(join(store, key), 40);
    const [c, r] = await Promise.all([check(store), restore(store, snapX, out)]);
    expectCheckNames(c, key);
    expect(c.stderr).not.toContain(`error: snapshots/${snapY}`);
    await expectRestoreFails(r, out, key);
  });

  it('a truncated pack and a missing pack: check names both; restore fails and leaves no file', async () => {
    const { store, out } = await copyStore();
    const [truncated, missing] = [packsX[0]!, packsX[1]!];
    const size = (await readFile(join(store, truncated))).length;
    await truncate(join(store, truncated), Math.floor(size / 2));
    await rm(join(store, missing));
    const [c, r] = await Promise.all([check(store), restore(store, snapX, out)]);
    expectCheckNames(c, truncated);
    expectCheckNames(c, missing);
    expect(c.stderr).toMatch(/missing/);
    expect(c.stderr).toMatch(/truncated/);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`${truncated.slice(-64)}|${missing.slice(-64)}`));
    expect(await readdir(out)).toEqual([]);
  });

  it('any byte of any data object: check --read-data (in-process) reports that very object', async () => {
    const { store } = await copyStore();
    const r = prng(SEED);
    const objects = [...(await storeFiles(store, 'packs/')), ...(await storeFiles(store, 'index/')), ...(await storeFiles(store, 'snapshots/'))];
    const misses: string[] = [];
    for (const o of objects) {
      for (let k = 0; k < 4; k++) {
        const at = Math.floor(r() * o.size);
        const mask = 1 << Math.floor(r() * 8);
        await flipByte(join(store, o.path), at, mask);
        const report = await withRepo(store, (repo) => checkStore(repo, { readData: true }));
        if (!report.errors.some((e) => e.object === o.path)) misses.push(`${o.path}@${at}^${mask}`);
        await flipByte(join(store, o.path), at, mask);
      }
    }
    expect(misses).toEqual([]);
    const clean = await withRepo(store, (repo) => checkStore(repo, { readData: true }));
    expect(clean.errors).toEqual([]);
  });
});
