// Crash safety: a backup killed with SIGKILL at random points leaves a store that `check` passes with
// every earlier snapshot intact; running the backup again completes, reuses what was uploaded
// (orphan packs are recovered), restores identical and passes `check --read-data`.
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupResult } from '../../lib/kloset/archiver.js';
import {
  backupBuffer,
  cliBackupJson,
  createStore,
  imageData,
  makeTmp,
  MiB,
  prng,
  randomData,
  restoreToBuffer,
  runCli,
  spawnCli,
  storeFiles,
  withRepo,
  writeFileStreaming,
} from '../helpers/kloset.js';

const SEED = Number(process.env.KLOSET_TEST_SEED ?? Math.floor(Math.random() * 1_000_000));
const ROUNDS = 3;

async function orphanPacks(store: string): Promise<string[]> {
  return withRepo(store, async (repo) => {
    await repo.loadIndex();
    return [...(await repo.listPacks()).keys()].filter((id) => !repo.index.hasPack(id));
  });
}

const packBytes = async (store: string) => (await storeFiles(store, 'packs/')).reduce((s, f) => s + f.size, 0);

describe('crash safety (SIGKILL during backup)', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let store: string;
  let bigPath: string;
  const earlier = imageData(4 * MiB, 77);
  const big = Buffer.concat([randomData(48 * MiB, 'crash-big'), imageData(16 * MiB, 78)]);
  let earlierSnap: string;
  let full: BackupResult; // the same backup, uninterrupted, into a scratch store
  let typicalMs: number;
  let packBytesBefore: number;
  const rounds: { delay: number; outcome: string; packs: number }[] = [];

  beforeAll(async () => {
    console.log(`crash test seed ${SEED} (set KLOSET_TEST_SEED to replay)`);
    tmp = await makeTmp();
    store = join(tmp.dir, 'store');
    bigPath = join(tmp.dir, 'big.img');
    await writeFileStreaming(bigPath, big);
    await createStore(store, { packSize: 1 << 20 });
    // A twin of the empty store (same keys, so the same chunks): what an uninterrupted backup adds.
    const scratch = join(tmp.dir, 'scratch');
    await cp(store, scratch, { recursive: true });
    earlierSnap = (await backupBuffer(store, earlier, { when: 'before' })).snapshot;
    packBytesBefore = await packBytes(store);
    const t0 = Date.now();
    full = await cliBackupJson(scratch, bigPath);
    typicalMs = Date.now() - t0;
    console.log(`uninterrupted backup: ${typicalMs} ms, ${full.bytesAdded} bytes added`);
    expect(full.bytesAdded).toBeGreaterThan(48 * MiB);
    // bytesAdded is what was written: every pack, index file and the snapshot (many packs upload
    // while index files are written: a lost update would show here)
    const written = (await storeFiles(scratch, '')).filter((f) => /^(packs|index|snapshots)\//.test(f.path));
    expect(full.bytesAdded).toBe(written.reduce((s, f) => s + f.size, 0));
  }, 180_000);
  afterAll(async () => tmp?.cleanup());

  /** After a kill: `check` exits 0 (warnings allowed) and the earlier snapshot restores. */
  async function expectStoreSound(): Promise<string> {
    const [check, restored] = await Promise.all([runCli(['store', 'check', '--store', store]), restoreToBuffer(store, earlierSnap)]);
    expect(check.stderr).not.toMatch(/^error:/m);
    expect(check.code).toBe(0);
    expect(restored.equals(earlier)).toBe(true);
    return check.stderr;
  }

  it('killed while packs are being uploaded: the uploaded packs stay as orphans, check passes with a warning', async () => {
    const start = (await storeFiles(store, 'packs/')).length;
    const run = spawnCli(['store', 'backup', '--store', store, bigPath, '--json']);
    let exited = false;
    void run.done.then(() => (exited = true));
    // kill once 3 new packs are stored: fewer than the 32 after which an index file is written
    while (!exited && (await storeFiles(store, 'packs/')).length < start + 3) await new Promise((r) => setTimeout(r, 20));
    run.child.kill('SIGKILL');
    const res = await run.done;
    expect(res.signal).toBe('SIGKILL');
    const orphans = await orphanPacks(store);
    rounds.push({ delay: -1, outcome: `killed after ${orphans.length} packs`, packs: start + orphans.length });
    expect(orphans.length).toBeGreaterThanOrEqual(3);
    expect(orphans.length).toBeLessThan(32);
    const warnings = await expectStoreSound();
    expect(warnings).toContain(`warning: packs/${orphans[0]!.slice(0, 2)}/${orphans[0]}: not in any index`);
    expect(warnings).toMatch(/warning: locks\/[0-9a-f]+: /); // the killed writer's lock is left behind
  }, 180_000);

  it(`killed at ${ROUNDS} random points: after each kill check passes and the earlier snapshot restores`, async () => {
    const r = prng(SEED);
    for (let i = 0; i < ROUNDS; i++) {
      // one delay in each slice of [100 ms, typical duration]: early, middle and late kills
      const delay = Math.round(100 + ((typicalMs - 100) * (i + r())) / ROUNDS);
      const run = spawnCli(['store', 'backup', '--store', store, bigPath, '--json']);
      const timer = setTimeout(() => run.child.kill('SIGKILL'), delay);
      const res = await run.done;
      clearTimeout(timer);
      const packs = (await storeFiles(store, 'packs/')).length;
      if (res.code === 0) {
        rounds.push({ delay, outcome: 'completed before the kill', packs });
      } else {
        expect(res.signal).toBe('SIGKILL');
        rounds.push({ delay, outcome: 'killed', packs });
      }
      await expectStoreSound();
      if (res.code === 0) break; // nothing left to interrupt
    }
    console.log('rounds', JSON.stringify(rounds));
  }, 300_000);

  it('the backup, run again, completes, reuses the uploaded packs, restores identical and passes check --read-data', async () => {
    const orphans = await orphanPacks(store);
    const uploaded = (await packBytes(store)) - packBytesBefore;
    const again = await cliBackupJson(store, bigPath);
    console.log(`rerun: ${orphans.length} orphan packs, ${uploaded} pack bytes before; added ${again.bytesAdded}, recovered ${again.recoveredPacks}`);
    expect(again.bytesRead).toBe(big.length);
    expect(again.sha256).toBe(full.sha256);
    // every pack a killed run left unindexed is recovered, not uploaded again
    expect(again.recoveredPacks).toBe(orphans.length);
    // what the killed runs uploaded is not uploaded again: rerun + earlier uploads ~ one full backup
    expect(again.bytesAdded).toBeLessThan(full.bytesAdded - uploaded + 1 * MiB);
    expect(again.bytesAdded + uploaded).toBeGreaterThan(full.bytesAdded - 1 * MiB);
    expect(uploaded).toBeGreaterThan(2 * MiB); // at least the first round's packs
    expect(await orphanPacks(store)).toEqual([]);

    const [restored, check] = await Promise.all([
      runCli(['store', 'restore', '--store', store, again.snapshot.slice(0, 12), '--to', '-']),
      runCli(['store', 'check', '--store', store, '--read-data']),
    ]);
    expect(restored.code).toBe(0);
    expect(restored.stdout.length).toBe(big.length);
    expect(restored.stdout.equals(big)).toBe(true);
    expect(check.stderr).not.toMatch(/^error:/m);
    expect(check.code).toBe(0);
    // the earlier snapshot and the completed one(s) are all listed
    const ids = await withRepo(store, (repo) => repo.listSnapshotIds());
    expect(ids).toContain(earlierSnap);
    expect(ids).toContain(again.snapshot);
  }, 300_000);
});
