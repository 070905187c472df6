// A wrong passphrase is detected and reported as such, with a non-zero exit and nothing written;
// `store passwd` replaces the passphrase without touching data.
import { createHash } from 'node:crypto';
import { cp, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, WrongPassphraseError } from '../../lib/kloset/store.js';
import {
  backupBuffer,
  createStore,
  imageData,
  listTree,
  makeTmp,
  MiB,
  PASSPHRASE,
  runCli,
  writeFileStreaming,
} from '../helpers/kloset.js';

describe('passphrase', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let store: string;
  let imgPath: string;
  const img = imageData(3 * MiB, 5);
  let snapshot: string;

  beforeAll(async () => {
    tmp = await makeTmp();
    store = join(tmp.dir, 'store');
    imgPath = join(tmp.dir, 'img');
    await createStore(store, { packSize: 1 << 20 });
    snapshot = (await backupBuffer(store, img)).snapshot;
    await writeFileStreaming(imgPath, imageData(2 * MiB, 6));
  });
  afterAll(async () => tmp?.cleanup());

  it('a wrong passphrase is reported as such by every command, exits non-zero and changes nothing', async () => {
    const before = await listTree(store);
    const out = join(tmp.dir, 'out.img');
    const wrong = { passphrase: 'not the passphrase', env: { KLOSET_NEW_PASSPHRASE: 'something new' } };
    const results = await Promise.all([
      runCli(['store', 'backup', '--store', store, imgPath, '--json'], wrong),
      runCli(['store', 'restore', '--store', store, snapshot.slice(0, 8), '--to', out], wrong),
      runCli(['store', 'passwd', '--store', store], wrong),
    ]);
    for (const r of results) {
      expect(r.stderr).toMatch(/wrong passphrase/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.code).not.toBe(0);
      expect(r.code).not.toBeNull();
      expect(r.out).toBe('');
    }
    expect(await listTree(store)).toEqual(before);
    expect(await readdir(tmp.dir)).not.toContain('out.img');
    await expect(openStore(store, `${PASSPHRASE} `)).rejects.toBeInstanceOf(WrongPassphraseError);
    await expect(openStore(store, PASSPHRASE.toUpperCase())).rejects.toThrow(/wrong passphrase/);
  });

  it('store passwd: the old passphrase stops working, the new one opens the store and data still restores', async () => {
    const dataFiles = async () => (await listTree(store)).filter((f) => !f.path.endsWith('/') && !f.path.startsWith('keys/'));
    const packsBefore = await dataFiles();
    const keysBefore = await readdir(join(store, 'keys'));
    const changed = await runCli(['store', 'passwd', '--store', store], { env: { KLOSET_NEW_PASSPHRASE: 'the new one' } });
    expect(changed.stderr).toMatch(/passphrase changed/);
    expect(changed.code).toBe(0);
    const keysAfter = await readdir(join(store, 'keys'));
    expect(keysAfter).toHaveLength(1);
    expect(keysAfter[0]).not.toBe(keysBefore[0]);
    // no data, index, snapshot or config object was rewritten
    expect(await dataFiles()).toEqual(packsBefore);

    const [oldR, newR] = await Promise.all([
      runCli(['store', 'ls', '--store', store, '--json']),
      runCli(['store', 'restore', '--store', store, snapshot.slice(0, 8), '--to', '-'], { passphrase: 'the new one' }),
    ]);
    expect(oldR.code).not.toBe(0);
    expect(oldR.stderr).toMatch(/wrong passphrase/);
    expect(newR.stderr).toBe('');
    expect(newR.code).toBe(0);
    expect(newR.stdout.equals(img)).toBe(true);
  });

  it('a store of format 1 (objects named by SHA-256) is refused as such, not reported as damaged', async () => {
    // Format 1 differed from format 2 in every name; renaming the key file to its SHA-256 is enough
    // for the format check, which runs before anything else is read.
    const old = join(tmp.dir, 'format1');
    await cp(store, old, { recursive: true });
    const [keyFile] = await readdir(join(old, 'keys'));
    const raw = await readFile(join(old, 'keys', keyFile!));
    await rename(join(old, 'keys', keyFile!), join(old, 'keys', createHash('sha256').update(raw).digest('hex')));
    const r = await runCli(['store', 'ls', '--store', old], { passphrase: 'the new one' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/has format 1 \(written by a development build before 2026-11-27\); this version reads format 2 only/);
    expect(r.stderr).not.toMatch(/damaged|at .*\.(ts|js|mjs):\d+/);
  });
});

