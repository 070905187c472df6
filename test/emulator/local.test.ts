// `scw-kloset local --json` as a user runs it, and a restarted local Scaleway keeping its state.
import { spawn } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ListBucketsCommand } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, Block, Jobs } from '@scaleway/sdk';
import type { LocalScaleway } from '../../emulator/local.js';
import { GB, s3Client, sdkClients, startTestScaleway, waitFor } from './helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'emulator-local-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('scw-kloset local --json', () => {
  it('prints one JSON line, answers the SDK, and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [join(root, 'bin', 'scw-kloset.js'), 'local', '--json', '--fast', '--dir', join(tmp, 'cli')], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const lines: string[] = [];
    const rl = createInterface({ input: child.stdout });
    const first = await new Promise<string>((resolve, reject) => {
      rl.on('line', (l) => {
        lines.push(l);
        if (lines.length === 1) resolve(l);
      });
      void exited.then((code) => reject(new Error(`exited ${code} before printing: ${stderr}`)));
    });
    const info = JSON.parse(first) as Record<string, string>;
    for (const k of ['apiUrl', 's3Endpoint', 'sqsEndpoint', 'accessKey', 'secretKey', 'projectId', 'region', 'zone', 'bucket']) {
      expect(typeof info[k], k).toBe('string');
    }
    expect(info.accessKey).toMatch(/^SCW[A-Z0-9]{17}$/);
    expect(info.region).toBe('fr-par');
    expect(info.zone).toBe('fr-par-1');

    const client = createClient({
      accessKey: info.accessKey!,
      secretKey: info.secretKey!,
      defaultProjectId: info.projectId!,
      defaultRegion: 'fr-par',
      defaultZone: 'fr-par-1',
      apiURL: info.apiUrl!,
    });
    const block = new Block.v1alpha1.API(client);
    const jobs = new Jobs.v1alpha1.API(client);
    const v = await block.createVolume({ name: 'from-cli', fromEmpty: { size: GB } });
    expect((await block.getVolume({ volumeId: v.id })).name).toBe('from-cli');
    expect((await jobs.listJobDefinitions({})).totalCount).toBe(0);

    const s3 = s3Client({ s3Endpoint: info.s3Endpoint, region: 'fr-par', accessKey: info.accessKey, secretKey: info.secretKey } as LocalScaleway);
    const buckets = await s3.send(new ListBucketsCommand({}));
    expect(buckets.Buckets?.map((b) => b.Name)).toContain(info.bucket);
    s3.destroy();
    const sqs = new SQSClient({
      endpoint: info.sqsEndpoint,
      region: 'fr-par',
      credentials: { accessKeyId: info.accessKey!, secretAccessKey: info.secretKey! },
    });
    const q = await sqs.send(new GetQueueUrlCommand({ QueueName: 'scw-kloset-tasks' }));
    expect(q.QueueUrl).toBeTruthy();
    sqs.destroy();

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(lines).toHaveLength(1);
  });
});

describe('persistence', () => {
  it('a restarted local Scaleway with the same dir keeps volumes, snapshots, credentials and content', async () => {
    const dir = join(tmp, 'persist');
    let local: LocalScaleway = await startTestScaleway({ dir });
    let api = sdkClients(local);
    const v = await local.emulator.seedVolume({ name: 'kept', size: GB });
    await local.emulator.writeVolume(v.id, [{ offset: 12345, data: Buffer.from('persisted') }]);
    const s = await api.block.createSnapshot({ volumeId: v.id, name: 'kept-snap' });
    await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
    const creds = { accessKey: local.accessKey, secretKey: local.secretKey, projectId: local.projectId };
    await local.stop();

    local = await startTestScaleway({ dir });
    try {
      expect({ accessKey: local.accessKey, secretKey: local.secretKey, projectId: local.projectId }).toEqual(creds);
      api = sdkClients(local);
      expect((await api.block.getVolume({ volumeId: v.id })).name).toBe('kept');
      expect((await api.block.getSnapshot({ snapshotId: s.id })).status).toBe('available');
      const fh = await open(local.emulator.snapshotPath(s.id), 'r');
      const buf = Buffer.alloc(9);
      await fh.read(buf, 0, 9, 12345);
      await fh.close();
      expect(buf.toString()).toBe('persisted');
    } finally {
      await local.stop();
    }
  });
});
