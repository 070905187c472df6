import { createHash } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qcow2ToRawFile, rawToQcow2File, rawToQcow2Stream, readQcow2Info } from '../../lib/qcow2/index.js';
import { KiB, MiB, TiB, makeSparseFile, makeTmpDir, qemuImg, qemuImgStatus, standardRegions } from './helpers.js';

const CS = 64 * KiB;

/** qemu-img check must exit 0 and report neither corruptions nor leaks. */
async function expectCleanCheck(path: string): Promise<void> {
  const r = await qemuImgStatus('check', '--output=json', path);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const check = JSON.parse(r.stdout);
  expect(check['check-errors']).toBe(0);
  expect(check.corruptions ?? 0).toBe(0);
  expect(check.leaks ?? 0).toBe(0);
}

/** Guest cluster indexes qemu reports as holding data. */
async function allocatedClusters(path: string): Promise<number[]> {
  const { stdout } = await qemuImg('map', '--output=json', path);
  const out: number[] = [];
  for (const e of JSON.parse(stdout) as { start: number; length: number; data: boolean }[]) {
    if (!e.data) continue;
    for (let c = e.start / CS; c < Math.ceil((e.start + e.length) / CS); c++) out.push(c);
  }
  return out;
}

/** Clusters of the raw file with at least one non-zero byte. */
async function nonZeroClusters(path: string): Promise<number[]> {
  const data = await readFile(path);
  const out: number[] = [];
  for (let off = 0; off < data.length; off += CS) {
    if (data.subarray(off, off + CS).some((b) => b !== 0)) out.push(off / CS);
  }
  return out;
}

async function sha256OfStream(s: NodeJS.ReadableStream): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of s) h.update(chunk as Buffer);
  return h.digest('hex');
}

describe('rawToQcow2File', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await makeTmpDir()));
  afterAll(async () => cleanup?.());

  it('writes an image qemu-img checks clean, compares identical and maps only non-zero clusters', async () => {
    const size = 24 * MiB + 4 * KiB + 512; // tail not aligned to the 64 KiB cluster
    const raw = join(dir, 'vol.raw');
    const img = join(dir, 'vol.qcow2');
    await makeSparseFile(raw, size, standardRegions(size));
    await rawToQcow2File(raw, img);

    await expectCleanCheck(img);
    const cmp = await qemuImgStatus('compare', '-f', 'raw', '-F', 'qcow2', raw, img);
    expect(cmp.stdout).toContain('Images are identical');
    expect(cmp.code).toBe(0);

    const info = JSON.parse((await qemuImg('info', '--output=json', img)).stdout);
    const ours = await readQcow2Info(img);
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(size);
    expect(ours.virtualSize).toBe(size);
    expect(info['cluster-size']).toBe(ours.clusterSize);
    expect(ours.clusterSize).toBe(CS);
    expect(ours.version).toBe(3);
    expect(info['format-specific'].data.compat).toBe('1.1');
    expect(info['format-specific'].data['compression-type']).toBe('zlib');

    const expected = await nonZeroClusters(raw);
    expect(await allocatedClusters(img)).toEqual(expected);
    // Only metadata plus the non-zero clusters take space: the explicit 1 MiB of zeros is not stored.
    expect((await stat(img)).size).toBeLessThan((expected.length + 8) * CS);

    // And our own reader gets the raw bytes back.
    const back = join(dir, 'back.raw');
    expect(await qcow2ToRawFile(img, back)).toEqual({ virtualSize: size });
    expect((await readFile(back)).equals(await readFile(raw))).toBe(true);
  });

  it('is deterministic and the stream emits the same bytes as the file version', async () => {
    const size = 8 * MiB + 3 * 512;
    const raw = join(dir, 'det.raw');
    await makeSparseFile(raw, size, standardRegions(size).filter((r) => r.offset + r.data.length <= size));
    const a = join(dir, 'det-a.qcow2');
    const b = join(dir, 'det-b.qcow2');
    await rawToQcow2File(raw, a);
    await rawToQcow2File(raw, b);
    const fileBytes = await readFile(a);
    expect(fileBytes.equals(await readFile(b))).toBe(true);
    const streamed = await sha256OfStream(rawToQcow2Stream(raw));
    expect(streamed).toBe(createHash('sha256').update(fileBytes).digest('hex'));
    await expectCleanCheck(a);
  });

  it('handles an all-zero volume and an empty-ish one', async () => {
    const raw = join(dir, 'zero.raw');
    const img = join(dir, 'zero.qcow2');
    await makeSparseFile(raw, 10 * MiB, []);
    await rawToQcow2File(raw, img);
    await expectCleanCheck(img);
    expect(await allocatedClusters(img)).toEqual([]);
    expect((await qemuImgStatus('compare', '-f', 'raw', raw, img)).code).toBe(0);
  });

  it('rounds a size that is not a multiple of 512 up, like qemu does for raw files', async () => {
    const raw = join(dir, 'odd.raw');
    const img = join(dir, 'odd.qcow2');
    const size = 1 * MiB + 100;
    await makeSparseFile(raw, size, [{ offset: size - 50, data: Buffer.from('tail bytes at the very end of the volume') }]);
    await rawToQcow2File(raw, img);
    await expectCleanCheck(img);
    const info = JSON.parse((await qemuImg('info', '--output=json', img)).stdout);
    expect(info['virtual-size']).toBe(1 * MiB + 512);
    expect((await qemuImgStatus('compare', '-f', 'raw', raw, img)).code).toBe(0);
  });

  it('supports a 1 TiB virtual size (sparse, a few written clusters) with a valid L1 and refcount structure', async () => {
    const raw = join(dir, 'tb.raw');
    const img = join(dir, 'tb.qcow2');
    // The raw file only holds the first 600 MiB; the rest of the 1 TiB reads as zeros.
    const rawSize = 600 * MiB + 130 * KiB;
    await makeSparseFile(raw, rawSize, [
      { offset: 0, data: Buffer.from('boot sector') },
      { offset: 513 * MiB + 5, data: Buffer.from('second L2 table') },
      { offset: 600 * MiB, data: Buffer.alloc(130 * KiB, 0xab) },
    ]);
    await rawToQcow2File(raw, img, { virtualSize: TiB });
    await expectCleanCheck(img);

    const info = await readQcow2Info(img);
    expect(info.virtualSize).toBe(TiB);
    expect(info.l1Size).toBe(TiB / (8192 * CS)); // 2048 L2 tables' worth of L1 entries
    expect(JSON.parse((await qemuImg('info', '--output=json', img)).stdout)['virtual-size']).toBe(TiB);
    const c600 = (600 * MiB) / CS;
    expect(await allocatedClusters(img)).toEqual([0, (513 * MiB) / CS, c600, c600 + 1, c600 + 2]);
    expect((await stat(img)).size).toBeLessThan(20 * CS);

    // Extending the raw file to 1 TiB is free (a hole); qemu-img compare skips holes on both sides.
    const fh = await open(raw, 'r+');
    await fh.truncate(TiB);
    await fh.close();
    expect((await qemuImgStatus('compare', '-f', 'raw', '-F', 'qcow2', raw, img)).code).toBe(0);

    // Reading back writes a sparse 1 TiB file with the data in place.
    const back = join(dir, 'tb-back.raw');
    await qcow2ToRawFile(img, back);
    const st = await stat(back);
    expect(st.size).toBe(TiB);
    expect(st.blocks * 512).toBeLessThan(4 * MiB);
    const rb = await open(back, 'r');
    const probe = Buffer.alloc(16);
    await rb.read(probe, 0, 16, 513 * MiB + 5);
    expect(probe.toString('latin1', 0, 15)).toBe('second L2 table');
    await rb.read(probe, 0, 16, 600 * MiB + 130 * KiB - 8);
    expect([...probe]).toEqual([...Array(8).fill(0xab), ...Array(8).fill(0)]);
    await rb.close();
  });

  it('refuses a virtual size smaller than the raw file', async () => {
    const raw = join(dir, 'small.raw');
    await makeSparseFile(raw, 2 * MiB, []);
    await expect(sha256OfStream(rawToQcow2Stream(raw, { virtualSize: MiB }))).rejects.toThrow(RangeError);
  });
});
