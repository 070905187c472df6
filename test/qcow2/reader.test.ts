import { randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qcow2FormatError, qcow2ToRawFile, readQcow2Info } from '../../lib/qcow2/index.js';
import { GiB, KiB, MiB, makeSparseFile, makeTmpDir, qemuImg, qemuImgStatus, standardRegions, textBytes } from './helpers.js';

describe('qcow2ToRawFile on images made by qemu-img', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let raw: string;
  let rawBytes: Buffer;
  const size = 20 * MiB + 64 * KiB + 1536; // not a multiple of any cluster size used below

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTmpDir());
    raw = join(dir, 'src.raw');
    await makeSparseFile(raw, size, [...standardRegions(size), { offset: 14 * MiB + 7, data: textBytes(300 * KiB, 2) }]);
    rawBytes = await readFile(raw);
  });
  afterAll(async () => cleanup?.());

  const variants: { name: string; args: string[]; expect?: { version?: 2 | 3; clusterSize?: number; compressionType?: 'zlib' | 'zstd' } }[] = [
    { name: 'default', args: [], expect: { version: 3, clusterSize: 64 * KiB } },
    { name: 'zlib compressed (-c)', args: ['-c'] },
    { name: '512 KiB clusters', args: ['-o', 'cluster_size=512k'], expect: { clusterSize: 512 * KiB } },
    { name: 'v2 (compat=0.10)', args: ['-o', 'compat=0.10'], expect: { version: 2 } },
    { name: 'v2 compressed with 4 KiB clusters', args: ['-c', '-o', 'compat=0.10,cluster_size=4k'], expect: { version: 2, clusterSize: 4 * KiB } },
    { name: '512-byte clusters', args: ['-o', 'cluster_size=512'], expect: { clusterSize: 512 } },
    { name: '2 MiB clusters, compressed', args: ['-c', '-o', 'cluster_size=2M'], expect: { clusterSize: 2 * MiB } },
    { name: 'zstd compressed', args: ['-c', '-o', 'compression_type=zstd'], expect: { compressionType: 'zstd' } },
  ];

  for (const v of variants) {
    it(`reads back ${v.name} byte-identical`, async () => {
      const img = join(dir, `${v.name.replace(/\W+/g, '_')}.qcow2`);
      const out = `${img}.raw`;
      await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', ...v.args, raw, img);
      const info = await readQcow2Info(img);
      for (const [k, val] of Object.entries(v.expect ?? {})) expect(info[k as keyof typeof info]).toBe(val);
      if (v.args.includes('-c')) {
        // Make sure the test really exercises compressed clusters.
        const { stdout } = await qemuImg('check', img);
        expect(stdout).not.toMatch(/ 0\.00% compressed clusters/);
      }
      expect(await qcow2ToRawFile(img, out)).toEqual({ virtualSize: size });
      const back = await readFile(out);
      expect(back.length).toBe(size);
      expect(back.equals(rawBytes)).toBe(true);
      // Sparse: no more space than the source's non-zero clusters at this image's cluster size.
      const cs = info.clusterSize;
      let nonZero = 0;
      for (let off = 0; off < size; off += cs) if (rawBytes.subarray(off, off + cs).some((b) => b !== 0)) nonZero++;
      expect((await stat(out)).blocks * 512).toBeLessThanOrEqual(nonZero * cs + 64 * KiB);
    });
  }

  it('reads zero-flag clusters (v3) as zeros', async () => {
    // qemu-img never writes zero-flag clusters on convert, so set the flag by hand on guest cluster 0.
    const img = join(dir, 'zflag.qcow2');
    const out = join(dir, 'zflag.raw');
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, img);
    const info = await readQcow2Info(img);
    const buf = await readFile(img);
    const l2 = Number(buf.readBigUInt64BE(info.l1TableOffset) & 0x00fffffffffffe00n);
    buf[l2 + 7] |= 1; // zero flag on guest cluster 0 (which holds random data in the source)
    await writeFile(img, buf);
    await qcow2ToRawFile(img, out);
    const expected = Buffer.from(rawBytes);
    expected.fill(0, 0, 64 * KiB);
    const back = await readFile(out);
    expect(back.equals(expected)).toBe(true);
    // qemu agrees that the cluster now reads as zeros.
    const { stdout } = await qemuImg('map', '--output=json', img);
    expect(JSON.parse(stdout)[0]).toMatchObject({ start: 0, zero: true });
  });

  it('reads L2 tables and data clusters at host offsets past 2 GiB and 4 GiB', async () => {
    // Regression: offsets with bit 31 set must not turn negative in 32-bit JS bit operations. The image stays
    // small on disk: the moved clusters are written into a sparse file.
    const src = join(dir, 'far-src.raw');
    const img = join(dir, 'far.qcow2');
    const out = join(dir, 'far.raw');
    const payload = randomBytes(2 * 64 * KiB);
    await makeSparseFile(src, 4 * MiB, [{ offset: 0, data: payload }]);
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', src, img);
    const info = await readQcow2Info(img);
    const file = await readFile(img);
    const oldL2 = Number(file.readBigUInt64BE(info.l1TableOffset) & 0x00fffffffffffe00n);
    const l2 = Buffer.from(file.subarray(oldL2, oldL2 + info.clusterSize));
    const newL2 = 6 * GiB; // high word 1, low word bit 31 set
    const newData = [3 * GiB, 5 * GiB]; // low word bit 31 set; high word 1
    const COPIED = 1n << 63n;
    const fh = await open(img, 'r+');
    try {
      for (let j = 0; j < 2; j++) {
        const oldData = Number(l2.readBigUInt64BE(j * 8) & 0x00fffffffffffe00n);
        await fh.write(file, oldData, info.clusterSize, newData[j]);
        l2.writeBigUInt64BE(BigInt(newData[j]) | COPIED, j * 8);
      }
      await fh.write(l2, 0, l2.length, newL2);
      const l1e = Buffer.alloc(8);
      l1e.writeBigUInt64BE(BigInt(newL2) | COPIED);
      await fh.write(l1e, 0, 8, info.l1TableOffset);
    } finally {
      await fh.close();
    }
    await qcow2ToRawFile(img, out);
    expect((await readFile(out)).equals(await readFile(src))).toBe(true);
    expect((await qemuImgStatus('compare', '-f', 'raw', '-F', 'qcow2', src, img)).code).toBe(0);
  });

  it('refuses encrypted images and images with a backing file', async () => {
    // Creating a real LUKS image costs seconds of PBKDF benchmarking (header.test.ts does it once); a header with
    // crypt_method = 2 (LUKS) is what the reader looks at.
    const enc = join(dir, 'enc.qcow2');
    await qemuImg('create', '-f', 'qcow2', enc, '4M');
    const encBytes = await readFile(enc);
    encBytes.writeUInt32BE(2, 32);
    await writeFile(enc, encBytes);
    await expect(qcow2ToRawFile(enc, join(dir, 'enc.raw'))).rejects.toThrow(/encrypted/);
    await expect(qcow2ToRawFile(enc, join(dir, 'enc.raw'))).rejects.toBeInstanceOf(Qcow2FormatError);

    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    await qemuImg('create', '-f', 'qcow2', base, '4M');
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await expect(qcow2ToRawFile(top, join(dir, 'top.raw'))).rejects.toThrow(/backing file/);
  });
});
