import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Qcow2FormatError,
  Qcow2TruncatedError,
  parseQcow2Header,
  readQcow2Info,
  scalewayImportProblem,
} from '../../lib/qcow2/index.js';
import { MiB, createLuksQcow2, makeTmpDir, qemuImg } from './helpers.js';

async function head(path: string, len = 4096): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

describe('QCOW2 header and Scaleway import rules', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await makeTmpDir()));
  afterAll(async () => cleanup?.());

  it('a plain image is importable and its header agrees with qemu-img info', async () => {
    const img = join(dir, 'plain.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '3G');
    const info = parseQcow2Header(await head(img));
    expect(scalewayImportProblem(info)).toBeNull();
    const q = JSON.parse((await qemuImg('info', '--output=json', img)).stdout);
    expect(info).toMatchObject({
      version: 3,
      virtualSize: q['virtual-size'],
      clusterSize: q['cluster-size'],
      clusterBits: 16,
      encrypted: false,
      compressionType: 'zlib',
      backingFile: null,
      l1Size: 6,
      headerLength: 112,
    });
    expect(info.refcountTableOffset % info.clusterSize).toBe(0);
    expect(info.refcountTableClusters).toBeGreaterThan(0);
    expect(await readQcow2Info(img)).toEqual(info);
  });

  it('a v2 image parses too', async () => {
    const img = join(dir, 'v2.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4k', img, '100M');
    const info = await readQcow2Info(img);
    expect(info).toMatchObject({ version: 2, clusterBits: 12, clusterSize: 4096, headerLength: 72, virtualSize: 100 * MiB });
    expect(scalewayImportProblem(info)).toBeNull();
  });

  it('a backing chain is rejected', async () => {
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    await qemuImg('create', '-f', 'qcow2', base, '64M');
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    const info = await readQcow2Info(top);
    expect(info.backingFile).toBe(base);
    expect(info.backingFormat).toBe('qcow2');
    expect(scalewayImportProblem(info)).toBe('has a backing chain');
  });

  it('a LUKS-encrypted image is rejected', async () => {
    const img = join(dir, 'luks.qcow2');
    await createLuksQcow2(img, '16M');
    const info = await readQcow2Info(img);
    expect(info.encrypted).toBe(true);
    expect(info.cryptMethod).toBe(2);
    expect(scalewayImportProblem(info)).toBe('The provided QCOW2 file is encrypted');
  });

  it('a legacy AES-encrypted header (crypt_method 1) is rejected', async () => {
    const img = join(dir, 'aes.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '16M');
    const buf = await head(img);
    buf.writeUInt32BE(1, 32);
    expect(scalewayImportProblem(parseQcow2Header(buf))).toBe('The provided QCOW2 file is encrypted');
  });

  it('a zstd image is rejected', async () => {
    const img = join(dir, 'zstd.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-o', 'compression_type=zstd', img, '16M');
    const info = await readQcow2Info(img);
    expect(info.compressionType).toBe('zstd');
    expect(scalewayImportProblem(info)).toBe('unsupported compression type');
  });

  it('non-QCOW2 data and truncated headers throw Qcow2FormatError', async () => {
    const rawFile = join(dir, 'not.raw');
    await writeFile(rawFile, Buffer.alloc(8192, 0x41));
    await expect(readQcow2Info(rawFile)).rejects.toBeInstanceOf(Qcow2FormatError);
    await expect(readQcow2Info(rawFile)).rejects.toThrow(/not a QCOW2/);
    expect(() => parseQcow2Header(Buffer.alloc(0))).toThrow(Qcow2FormatError);

    const img = join(dir, 'cut.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '16M');
    const first = await head(img, 4096);
    for (const len of [3, 50, 80]) expect(() => parseQcow2Header(first.subarray(0, len))).toThrow(Qcow2FormatError);
    const cutFile = join(dir, 'cut50.qcow2');
    await writeFile(cutFile, first.subarray(0, 50));
    await expect(readQcow2Info(cutFile)).rejects.toThrow(/truncated/);

    // Corrupt fields are caught, not silently accepted.
    const bad = Buffer.from(first);
    bad.writeUInt32BE(30, 20); // cluster_bits
    expect(() => parseQcow2Header(bad)).toThrow(/cluster_bits/);
    const v4 = Buffer.from(first);
    v4.writeUInt32BE(4, 4);
    expect(() => parseQcow2Header(v4)).toThrow(/version/);
  });

  it('a backing file name beyond the given buffer asks for more bytes; readQcow2Info reads them', async () => {
    const img = join(dir, 'farname.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '16M');
    const file = await readFile(img);
    const name = 'far-away-base.qcow2';
    file.writeUInt32BE(0, 8);
    file.writeUInt32BE(9000, 12); // backing_file_offset, still inside the 64 KiB first cluster
    file.writeUInt32BE(name.length, 16);
    file.write(name, 9000, 'latin1');
    await writeFile(img, file);
    let err: unknown;
    try {
      parseQcow2Header(file.subarray(0, 4096));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Qcow2TruncatedError);
    expect((err as Qcow2TruncatedError).needed).toBe(9000 + name.length);
    const info = await readQcow2Info(img);
    expect(info.backingFile).toBe(name);
    expect(scalewayImportProblem(info)).toBe('has a backing chain');
  });
});
