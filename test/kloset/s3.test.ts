// The S3 backend against a real S3-compatible server (fauxqs, started here): init, backup (from a
// file and from an S3 object), ls, restore to an S3 object, check --read-data, and a tampered object.
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startObjectStore, type ObjectStoreServer } from '../../emulator/objectstore.js';
import type { BackupResult } from '../../lib/kloset/archiver.js';
import { makeS3Client } from '../../lib/scaleway/s3.js';
import { FAST_KDF_ARGS, imageData, makeTmp, MiB, randomData, runCli, textData, writeFileStreaming } from '../helpers/kloset.js';

const LOCATION = 's3://b/some/prefix';

describe('S3 store (real S3-compatible server)', () => {
  let server: ObjectStoreServer;
  let s3: S3Client;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let env: Record<string, string>;
  const big = Buffer.concat([randomData(18 * MiB, 's3-big'), textData(2 * MiB + 4321, 3)]); // > 16 MiB: a 16 MiB pack
  const small = imageData(6 * MiB, 44);
  let bigPath: string;

  const cli = (args: string[]) => runCli(args, { env });
  const getObject = async (key: string) => {
    const out = await s3.send(new GetObjectCommand({ Bucket: 'b', Key: key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  };
  const listObjects = async (prefix: string) => {
    const out = await s3.send(new ListObjectsV2Command({ Bucket: 'b', Prefix: prefix }));
    return (out.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size! }));
  };

  beforeAll(async () => {
    server = await startObjectStore({ buckets: ['b'] });
    s3 = makeS3Client({ endpoint: server.endpoint, region: 'fr-par', accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey });
    env = {
      KLOSET_S3_ENDPOINT: server.endpoint,
      AWS_ACCESS_KEY_ID: server.accessKeyId,
      AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
      AWS_REGION: 'fr-par',
    };
    tmp = await makeTmp();
    bigPath = join(tmp.dir, 'big.img');
    await writeFileStreaming(bigPath, big);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'sources/small.qcow2', Body: small }));
  });
  afterAll(async () => {
    s3?.destroy();
    await server?.stop();
    await tmp?.cleanup();
  });

  let snapBig: BackupResult;
  let snapSmall: BackupResult;

  it('init, then backups from a file (multipart packs) and from an S3 object', async () => {
    const init = await cli(['store', 'init', '--store', LOCATION, ...FAST_KDF_ARGS]);
    expect(init.stderr).toMatch(/created store/);
    expect(init.code).toBe(0);
    const [a, b] = await Promise.all([
      cli(['store', 'backup', '--store', LOCATION, bigPath, '--json', '--tag', 'kind=big']),
      cli(['store', 'backup', '--store', LOCATION, 's3://b/sources/small.qcow2', '--json', '--tag', 'kind=small']),
    ]);
    // (stderr may carry the AWS SDK's Node 20 deprecation notice)
    expect(a.stderr).not.toMatch(/error/i);
    expect(b.stderr).not.toMatch(/error/i);
    expect([a.code, b.code]).toEqual([0, 0]);
    snapBig = JSON.parse(a.out) as BackupResult;
    snapSmall = JSON.parse(b.out) as BackupResult;
    expect(snapBig.bytesRead).toBe(big.length);
    expect(snapSmall.bytesRead).toBe(small.length);

    const objects = await listObjects('some/prefix/');
    const keys = objects.map((o) => o.key);
    expect(keys).toContain('some/prefix/config');
    expect(keys.filter((k) => k.startsWith('some/prefix/keys/'))).toHaveLength(1);
    expect(keys).toContain(`some/prefix/snapshots/${snapBig.snapshot}`);
    expect(keys.filter((k) => k.startsWith('some/prefix/index/')).length).toBeGreaterThanOrEqual(2);
    expect(keys.filter((k) => k.startsWith('some/prefix/locks/'))).toEqual([]);
    const packs = objects.filter((o) => o.key.startsWith('some/prefix/packs/'));
    // the default 16 MiB packs: at least one went up as a multipart upload (> 8 MiB)
    expect(packs.some((p) => p.size > 12 * MiB)).toBe(true);
    // nothing was written outside the prefix but the source object
    expect((await listObjects('')).filter((o) => !o.key.startsWith('some/prefix/')).map((o) => o.key)).toEqual(['sources/small.qcow2']);
  });

  it('ls, restore to an S3 object (multipart) and to stdout, check --read-data', async () => {
    const [ls, toS3, toStdout, check] = await Promise.all([
      cli(['store', 'ls', '--store', LOCATION, '--json', '--tag', 'kind=small']),
      cli(['store', 'restore', '--store', LOCATION, snapBig.snapshot.slice(0, 10), '--to', 's3://b/restored.qcow2']),
      cli(['store', 'restore', '--store', LOCATION, snapSmall.snapshot.slice(0, 10), '--to', '-']),
      cli(['store', 'check', '--store', LOCATION, '--read-data']),
    ]);
    expect(ls.code).toBe(0);
    const listed = JSON.parse(ls.out) as { id: string; source: { path?: string }; sha256: string }[];
    expect(listed.map((s) => s.id)).toEqual([snapSmall.snapshot]);
    expect(listed[0]!.source.path).toBe('s3://b/sources/small.qcow2');
    expect(toS3.stderr).toMatch(/restored snapshot/);
    expect(toS3.code).toBe(0);
    expect((await getObject('restored.qcow2')).equals(big)).toBe(true);
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout.equals(small)).toBe(true);
    expect(check.stderr).toMatch(/^no errors: 2 snapshots/m);
    expect(check.code).toBe(0);
  });

  it('a tampered S3 object is detected by check --read-data, which names it', async () => {
    const packs = (await listObjects('some/prefix/packs/')).sort((x, y) => x.size - y.size);
    const victim = packs[0]!; // the smallest: a single PUT puts it back
    const data = await getObject(victim.key);
    data[Math.floor(data.length / 2)]! ^= 0x40;
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: victim.key, Body: data }));
    const r = await cli(['store', 'check', '--store', LOCATION, '--read-data']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: ${victim.key.slice('some/prefix/'.length)}: `, 'm'));
  });
});
