// Fault injection, from the JS API and the admin endpoint, seen through the real SDK.
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { Errors } from '@scaleway/sdk-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LocalScaleway } from '../../emulator/local.js';
import { GB, s3Client, sdkClients, startTestScaleway, waitFor } from './helpers.js';

let local: LocalScaleway;
let api: ReturnType<typeof sdkClients>;

beforeAll(async () => {
  local = await startTestScaleway();
  api = sdkClients(local);
});
afterEach(() => local.emulator.faults.clear());
afterAll(async () => {
  await local?.stop();
});

async function availableSnapshot(): Promise<string> {
  const v = await local.emulator.seedVolume({ size: GB });
  const s = await api.block.createSnapshot({ volumeId: v.id });
  await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
  return s.id;
}

describe('fault injection', () => {
  it('answers a share of calls with 429 as TooManyRequestsError', async () => {
    local.emulator.faults.addErrors({ status: 429, share: 1, method: 'GET', path: '/volumes' });
    const err = await api.block.listVolumes({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Errors.TooManyRequestsError);
    expect((err as Errors.TooManyRequestsError).status).toBe(429);
    // Other calls are untouched.
    expect((await api.block.listSnapshots({})).snapshots).toBeDefined();

    // A share: with a random source below and above the share.
    local.emulator.faults.clear();
    local.emulator.faults.addErrors({ status: 429, share: 0.5 });
    local.emulator.faults.random = () => 0.7;
    await expect(api.block.listVolumes({})).resolves.toBeDefined();
    local.emulator.faults.random = () => 0.2;
    await expect(api.block.listVolumes({})).rejects.toBeInstanceOf(Errors.TooManyRequestsError);
    local.emulator.faults.random = Math.random;
  });

  it('answers 5xx as ScalewayError, a limited number of times', async () => {
    local.emulator.faults.addErrors({ status: 503, count: 2 });
    for (let i = 0; i < 2; i++) {
      const err = await api.jobs.listJobDefinitions({}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Errors.ScalewayError);
      expect((err as Errors.ScalewayError).status).toBe(503);
    }
    await expect(api.jobs.listJobDefinitions({})).resolves.toBeDefined();
  });

  it('makes the next export end in error, without an object', async () => {
    const id = await availableSnapshot();
    local.emulator.faults.failNextExports(1);
    const e = await api.block.exportSnapshotToObjectStorage({ snapshotId: id, bucket: local.bucket, key: 'faults/failed.qcow2' });
    expect(e.status).toBe('exporting');
    const done = await waitFor(() => api.block.getSnapshot({ snapshotId: id }), (x) => x.status !== 'exporting');
    expect(done.status).toBe('error');
    const s3 = s3Client(local);
    await expect(s3.send(new HeadObjectCommand({ Bucket: local.bucket, Key: 'faults/failed.qcow2' }))).rejects.toThrow();
    s3.destroy();
  });

  it('slows exports down (the snapshot stays exporting meanwhile)', async () => {
    const id = await availableSnapshot();
    local.emulator.faults.slowExports(600_000);
    await api.block.exportSnapshotToObjectStorage({ snapshotId: id, bucket: local.bucket, key: 'faults/slow.qcow2' });
    expect((await api.block.getSnapshot({ snapshotId: id })).status).toBe('exporting');
    await expect(api.block.deleteSnapshot({ snapshotId: id })).rejects.toBeInstanceOf(Errors.TransientStateError);
    local.emulator.fastForward();
    const done = await waitFor(() => api.block.getSnapshot({ snapshotId: id }), (x) => x.status !== 'exporting');
    expect(done.status).toBe('available');
  });

  it('denies a named action with PermissionsDeniedError', async () => {
    const id = await availableSnapshot();
    local.emulator.faults.denyAction('exportSnapshotToObjectStorage');
    const err = await api.block
      .exportSnapshotToObjectStorage({ snapshotId: id, bucket: local.bucket, key: 'faults/denied.qcow2' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Errors.PermissionsDeniedError);
    expect((err as Errors.PermissionsDeniedError).list).toEqual([{ action: 'exportSnapshotToObjectStorage', resource: 'snapshot' }]);
    await expect(api.block.getSnapshot({ snapshotId: id })).resolves.toBeDefined();
  });

  it('is controllable over HTTP at /_emulator/faults', async () => {
    const post = (body: unknown) =>
      fetch(`${local.apiUrl}/_emulator/faults`, {
        method: 'POST',
        headers: { 'X-Auth-Token': local.secretKey, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    const res = await post({ errors: [{ status: 429, share: 1, path: '/job-definitions' }], deny_actions: ['createVolume'] });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    await expect(api.jobs.listJobDefinitions({})).rejects.toBeInstanceOf(Errors.TooManyRequestsError);
    await expect(api.block.createVolume({ fromEmpty: { size: GB } })).rejects.toBeInstanceOf(Errors.PermissionsDeniedError);
    const state = await (await fetch(`${local.apiUrl}/_emulator/faults`, { headers: { 'X-Auth-Token': local.secretKey } })).json();
    expect(state).toMatchObject({ deniedActions: ['createVolume'] });
    const del = await fetch(`${local.apiUrl}/_emulator/faults`, { method: 'DELETE', headers: { 'X-Auth-Token': local.secretKey } });
    expect(del.status).toBe(204);
    await expect(api.jobs.listJobDefinitions({})).resolves.toBeDefined();
    expect((await post({ errors: [{ status: 200 }] })).status).toBe(400);
  });

  it('seeds volumes and writes their blocks over HTTP', async () => {
    const res = await fetch(`${local.apiUrl}/_emulator/volumes`, {
      method: 'POST',
      headers: { 'X-Auth-Token': local.secretKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'seeded', size: GB, tags: ['seed'] }),
    });
    const v = (await res.json()) as { id: string; status: string };
    expect(v.status).toBe('available');
    expect((await api.block.getVolume({ volumeId: v.id })).tags).toEqual(['seed']);
    const w = await fetch(`${local.apiUrl}/_emulator/volumes/${v.id}/write`, {
      method: 'POST',
      headers: { 'X-Auth-Token': local.secretKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ writes: [{ offset: 4096, data_base64: Buffer.from('next day').toString('base64') }] }),
    });
    expect(w.status).toBe(204);
  });
});
