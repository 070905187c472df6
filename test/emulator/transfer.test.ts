// Export to and import from Object Storage through the real SDK, checked with qemu-img; seeding a
// volume with a real ext4 filesystem and changing it "the next day".
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Errors } from '@scaleway/sdk-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalScaleway } from '../../emulator/local.js';
import { buildExt4Image, ext4WriteFiles } from '../../emulator/seed.js';
import { createLuksQcow2 } from '../qcow2/helpers.js';
import { s3Client, sdkClients, startTestScaleway, waitFor } from './helpers.js';

const execFileP = promisify(execFile);
let local: LocalScaleway;
let api: ReturnType<typeof sdkClients>;
let s3: S3Client;
let tmp: string;

beforeAll(async () => {
  local = await startTestScaleway();
  api = sdkClients(local);
  s3 = s3Client(local);
  tmp = await mkdtemp(join(tmpdir(), 'emulator-transfer-'));
});
afterAll(async () => {
  s3?.destroy();
  await local?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const qemuImg = (...args: string[]) => execFileP('qemu-img', args);

async function download(key: string, path: string): Promise<void> {
  const out = await s3.send(new GetObjectCommand({ Bucket: local.bucket, Key: key }));
  await pipeline(out.Body as Readable, createWriteStream(path));
}

async function upload(path: string, key: string): Promise<void> {
  await new Upload({
    client: s3,
    params: { Bucket: local.bucket, Key: key, Body: createReadStream(path) },
    partSize: 8 * 1024 * 1024,
  }).done();
}

async function exportSnapshotOfVolume(volumeId: string, key: string): Promise<string> {
  const s = await api.block.createSnapshot({ volumeId, name: key });
  await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
  const e = await api.block.exportSnapshotToObjectStorage({ snapshotId: s.id, bucket: local.bucket, key });
  expect(e.status).toBe('exporting');
  const done = await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status !== 'exporting');
  expect(done.status).toBe('available');
  const head = await s3.send(new HeadObjectCommand({ Bucket: local.bucket, Key: key }));
  expect(head.ContentLength).toBeGreaterThan(0);
  const file = join(tmp, key.replace(/\//g, '_'));
  await download(key, file);
  return file;
}

async function importError(path: string, key: string): Promise<unknown> {
  await upload(path, key);
  return api.block.importSnapshotFromObjectStorage({ bucket: local.bucket, key, name: `imp-${key}` }).catch((e: unknown) => e);
}

describe('export', () => {
  it('writes a QCOW2 that qemu-img accepts, equal to the volume, and follows "the next day"', async () => {
    const v = await local.emulator.seedVolume({
      name: 'ext4-vol',
      ext4: { sizeMiB: 950, files: { 'etc/hostname': 'emulated\n', 'data/blob.bin': { size: 3 * 1024 * 1024 } } },
    });
    expect(v.status).toBe('available');
    expect(v.size).toBe(1_000_000_000); // 950 MiB of content rounds up to whole GB
    const volumePath = local.emulator.volumePath(v.id);
    // Sparse: the file's allocated blocks are far below its size.
    const st = await stat(volumePath);
    expect(st.blocks * 512).toBeLessThan(st.size / 10);

    const day1 = await exportSnapshotOfVolume(v.id, 'exports/day1.qcow2');
    await qemuImg('check', '-f', 'qcow2', day1);
    const info = JSON.parse((await qemuImg('info', '--output=json', day1)).stdout) as { 'virtual-size': number; format: string };
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(v.size);
    const same = await qemuImg('compare', '-f', 'qcow2', '-F', 'raw', day1, volumePath);
    expect(same.stdout).toContain('Images are identical');

    // The next day: a file changes inside the filesystem and some raw blocks are overwritten.
    await ext4WriteFiles(volumePath, { 'etc/motd': 'day two\n', 'data/blob.bin': { size: 3 * 1024 * 1024, seed: 'day2' } });
    await local.emulator.writeVolume(v.id, [{ offset: 999_000_000, data: Buffer.from('written the next day') }]);
    // Still a clean filesystem, with the new file in it.
    await execFileP('e2fsck', ['-fn', volumePath], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
    const motd = await execFileP('debugfs', ['-R', 'cat /etc/motd', volumePath], {
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    });
    expect(motd.stdout).toBe('day two\n');
    const day2 = await exportSnapshotOfVolume(v.id, 'exports/day2.qcow2');
    await qemuImg('check', '-f', 'qcow2', day2);
    expect((await qemuImg('compare', '-f', 'qcow2', '-F', 'raw', day2, volumePath)).stdout).toContain('Images are identical');
    const differ = await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', day1, day2).catch((e: { code: number }) => e);
    expect((differ as { code: number }).code).toBe(1);
  });
});

describe('import', () => {
  it('imports a good image into a snapshot, then a volume with that content', async () => {
    const raw = join(tmp, 'source.raw');
    await buildExt4Image(raw, { sizeMiB: 1024, files: { 'hello.txt': 'hello from an image\n', 'big.bin': { size: 12 * 1024 * 1024 } } });
    const image = join(tmp, 'source.qcow2');
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, image);
    await upload(image, 'imports/good.qcow2');

    const s = await api.block.importSnapshotFromObjectStorage({
      bucket: local.bucket,
      key: 'imports/good.qcow2',
      name: 'imported',
      tags: ['restore'],
    });
    expect(s.status).toBe('creating');
    expect(s.size).toBe(1024 * 1024 * 1024);
    expect(s.tags).toEqual(['restore']);
    const ready = await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status !== 'creating');
    expect(ready.status).toBe('available');
    expect((await qemuImg('compare', '-f', 'raw', '-F', 'raw', local.emulator.snapshotPath(s.id), raw)).stdout).toContain(
      'Images are identical',
    );

    const v = await api.block.createVolume({ name: 'from-import', fromSnapshot: { snapshotId: s.id, size: 2_000_000_000 } });
    expect(v.size).toBe(2_000_000_000);
    await waitFor(() => api.block.getVolume({ volumeId: v.id }), (x) => x.status === 'available');
    // The volume is larger than the image: identical on the image's range, zeros after (compare's default).
    expect((await qemuImg('compare', '-f', 'raw', '-F', 'raw', local.emulator.volumePath(v.id), raw)).stdout).toContain(
      'Images are identical',
    );
    expect((await stat(local.emulator.volumePath(v.id))).size).toBe(2_000_000_000);
  });

  it('rejects a file that is not a QCOW2 and a corrupt QCOW2 with invalid_request_error', async () => {
    const junk = join(tmp, 'junk.bin');
    await writeFile(junk, Buffer.alloc(256 * 1024, 7));
    const e1 = await importError(junk, 'imports/junk.bin');
    expect(e1).toBeInstanceOf(Errors.ScalewayError);
    expect((e1 as Errors.ScalewayError).constructor).toBe(Errors.ScalewayError);
    expect((e1 as Errors.ScalewayError).status).toBe(400);
    expect((e1 as Errors.ScalewayError).body).toMatchObject({ type: 'invalid_request_error' });

    const bad = join(tmp, 'corrupt.qcow2');
    await qemuImg('create', '-f', 'qcow2', bad, '1G');
    const fh = await open(bad, 'r+');
    await fh.write(Buffer.from([0, 0, 0, 99]), 0, 4, 20); // cluster_bits = 99
    await fh.close();
    const e2 = await importError(bad, 'imports/corrupt.qcow2');
    expect((e2 as Errors.ScalewayError).constructor).toBe(Errors.ScalewayError);
    expect((e2 as Errors.ScalewayError).body).toMatchObject({ type: 'invalid_request_error' });
  });

  it('rejects an encrypted image like Scaleway', async () => {
    const enc = join(tmp, 'enc.qcow2');
    await createLuksQcow2(enc, '1G');
    const err = await importError(enc, 'imports/enc.qcow2');
    expect((err as Errors.ScalewayError).constructor).toBe(Errors.ScalewayError);
    expect((err as Errors.ScalewayError).status).toBe(400);
    expect((err as Errors.ScalewayError).body).toEqual({
      message: 'The provided QCOW2 file is encrypted',
      type: 'invalid_request_error',
    });
  });

  it('rejects an image with a backing file like Scaleway', async () => {
    const base = join(tmp, 'base.qcow2');
    const over = join(tmp, 'overlay.qcow2');
    await qemuImg('create', '-f', 'qcow2', base, '1G');
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', over);
    const err = await importError(over, 'imports/overlay.qcow2');
    expect((err as Errors.ScalewayError).body).toMatchObject({ type: 'invalid_request_error' });
    expect((err as Errors.ScalewayError).rawMessage).toContain('has a backing chain');
  });

  it('rejects zstd-compressed images like Scaleway', async () => {
    const z = join(tmp, 'zstd.qcow2');
    await qemuImg('create', '-f', 'qcow2', '-o', 'compression_type=zstd', z, '1G');
    const err = await importError(z, 'imports/zstd.qcow2');
    expect((err as Errors.ScalewayError).body).toMatchObject({ type: 'invalid_request_error' });
    expect((err as Errors.ScalewayError).rawMessage).toContain('unsupported compression type');
  });

  it('rejects an import size smaller than the image', async () => {
    const img = join(tmp, 'two-gb.qcow2');
    await qemuImg('create', '-f', 'qcow2', img, '2G');
    await upload(img, 'imports/two-gb.qcow2');
    await expect(
      api.block.importSnapshotFromObjectStorage({ bucket: local.bucket, key: 'imports/two-gb.qcow2', name: 'small', size: 1_000_000_000 }),
    ).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
  });
});
