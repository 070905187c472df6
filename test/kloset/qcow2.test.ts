// A real QCOW2 image made by qemu-img: backed up and restored through the CLI, then compared by qemu-img.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KiB, makeSparseFile, qemuImg, qemuImgStatus } from '../qcow2/helpers.js';
import { cliBackupJson, cliOk, createStore, makeTmp, MiB, randomData, textData } from '../helpers/kloset.js';

describe('a real QCOW2 image', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    tmp = await makeTmp();
  });
  afterAll(async () => tmp?.cleanup());

  it('qemu-img convert -O qcow2, back up, restore: qemu-img compare finds them identical', async () => {
    const raw = join(tmp.dir, 'disk.raw');
    const qcow2 = join(tmp.dir, 'disk.qcow2');
    const restored = join(tmp.dir, 'restored.qcow2');
    const store = join(tmp.dir, 'store');
    await makeSparseFile(raw, 32 * MiB, [
      { offset: 0, data: randomData(3 * MiB, 'qcow2-a') },
      { offset: 5 * MiB + 3 * KiB, data: textData(4 * MiB, 8) },
      { offset: 12 * MiB, data: Buffer.alloc(MiB, 0xee) },
      { offset: 20 * MiB + 512, data: randomData(2 * MiB + 77, 'qcow2-b') },
      { offset: 32 * MiB - 64 * KiB, data: randomData(64 * KiB, 'qcow2-c') },
    ]);
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2);
    await createStore(store);
    const original = await readFile(qcow2);
    const snap = await cliBackupJson(store, qcow2, ['--volume-name', 'disk']);
    expect(snap.bytesRead).toBe(original.length);
    await cliOk(['store', 'restore', '--store', store, snap.snapshot.slice(0, 8), '--to', restored]);
    expect((await readFile(restored)).equals(original)).toBe(true);
    const cmp = await qemuImgStatus('compare', '-f', 'qcow2', '-F', 'qcow2', qcow2, restored);
    expect(cmp.stdout).toMatch(/Images are identical/);
    expect(cmp.code).toBe(0);
    const vsRaw = await qemuImgStatus('compare', '-f', 'raw', '-F', 'qcow2', raw, restored);
    expect(vsRaw.code).toBe(0);
    const check = await qemuImgStatus('check', restored);
    expect(check.code).toBe(0);
  });
});
