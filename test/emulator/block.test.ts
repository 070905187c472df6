// Block Storage through the real @scaleway/sdk over HTTP: success paths, errors, transient states,
// pagination, authentication.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Errors } from '@scaleway/sdk-client';
import type { LocalScaleway } from '../../emulator/local.js';
import { GB, sdkClients, startTestScaleway, TEST_TIMINGS, waitFor } from './helpers.js';

let local: LocalScaleway;
let api: ReturnType<typeof sdkClients>;

beforeAll(async () => {
  local = await startTestScaleway();
  api = sdkClients(local);
});
afterAll(async () => {
  await local?.stop();
});

const MISSING = '11111111-2222-4333-8444-555555555555';

async function availableVolume(name: string, size = GB, tags: string[] = []) {
  const v = await api.block.createVolume({ name, fromEmpty: { size }, tags });
  return waitFor(() => api.block.getVolume({ volumeId: v.id }), (x) => x.status === 'available');
}

describe('volumes', () => {
  it('creates an empty volume that goes creating -> available', async () => {
    const v = await api.block.createVolume({ name: 'vol-a', fromEmpty: { size: 2 * GB }, perfIops: 15000, tags: ['t1'] });
    expect(v.status).toBe('creating');
    expect(v.size).toBe(2 * GB);
    expect(v.type).toBe('sbs_15k');
    expect(v.specs).toEqual({ perfIops: 15000, class: 'sbs' });
    expect(v.projectId).toBe(local.projectId);
    expect(v.zone).toBe('fr-par-1');
    expect(v.createdAt).toBeInstanceOf(Date);
    expect(v.tags).toEqual(['t1']);
    const done = await waitFor(() => api.block.getVolume({ volumeId: v.id }), (x) => x.status !== 'creating');
    expect(done.status).toBe('available');
  });

  it('updates name, tags, perf and size (enlarge only)', async () => {
    const v = await availableVolume('vol-upd');
    const u = await api.block.updateVolume({ volumeId: v.id, name: 'vol-upd2', tags: ['x', 'y'], perfIops: 15000, size: 3 * GB });
    expect(u.name).toBe('vol-upd2');
    expect(u.tags).toEqual(['x', 'y']);
    expect(u.type).toBe('sbs_15k');
    expect(u.size).toBe(3 * GB);
    await expect(api.block.updateVolume({ volumeId: v.id, size: 2 * GB })).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
  });

  it('rejects sizes outside 1 GB..10 TB and a missing source', async () => {
    await expect(api.block.createVolume({ name: 'tiny', fromEmpty: { size: 1000 } })).rejects.toBeInstanceOf(
      Errors.InvalidArgumentsError,
    );
    await expect(api.block.createVolume({ name: 'none' })).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
  });

  it('deletes a volume: deleting, then not found', async () => {
    const v = await availableVolume('vol-del');
    await api.block.deleteVolume({ volumeId: v.id });
    const d = await api.block.getVolume({ volumeId: v.id }).catch((e: unknown) => e);
    if (!(d instanceof Errors.ResourceNotFoundError)) expect((d as { status: string }).status).toBe('deleting');
    await waitFor(
      () => api.block.getVolume({ volumeId: v.id }).then(() => false, (e: unknown) => e instanceof Errors.ResourceNotFoundError),
      (gone) => gone,
    );
  });

  it('answers ResourceNotFoundError for unknown ids', async () => {
    const err = await api.block.getVolume({ volumeId: MISSING }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Errors.ResourceNotFoundError);
    expect((err as Errors.ResourceNotFoundError).resource).toBe('volume');
    expect((err as Errors.ResourceNotFoundError).resourceId).toBe(MISSING);
    await expect(api.block.getSnapshot({ snapshotId: MISSING })).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
    await expect(api.block.deleteVolume({ volumeId: MISSING })).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
    await expect(api.block.createSnapshot({ volumeId: MISSING })).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
    await expect(api.block.createVolume({ fromSnapshot: { snapshotId: MISSING } })).rejects.toBeInstanceOf(
      Errors.ResourceNotFoundError,
    );
  });

  it('lists with filters and pagination (page, page_size, total_count)', async () => {
    for (let i = 0; i < 5; i++) await api.block.createVolume({ name: `pg-${i}`, fromEmpty: { size: GB }, tags: ['paged', `n${i}`] });
    const p1 = await api.block.listVolumes({ tags: ['paged'], pageSize: 2, page: 1 });
    const p3 = await api.block.listVolumes({ tags: ['paged'], pageSize: 2, page: 3 });
    expect(p1.totalCount).toBe(5);
    expect(p1.volumes.map((v) => v.name)).toEqual(['pg-0', 'pg-1']);
    expect(p3.volumes.map((v) => v.name)).toEqual(['pg-4']);
    const all = await api.block.listVolumes({ tags: ['paged'], pageSize: 2 }).all();
    expect(all.map((v) => v.name)).toEqual(['pg-0', 'pg-1', 'pg-2', 'pg-3', 'pg-4']);
    const desc = await api.block.listVolumes({ tags: ['paged'], orderBy: 'name_desc' });
    expect(desc.volumes[0]!.name).toBe('pg-4');
    expect((await api.block.listVolumes({ tags: ['paged', 'n3'] })).volumes.map((v) => v.name)).toEqual(['pg-3']);
    expect((await api.block.listVolumes({ name: 'pg-2' })).totalCount).toBe(1);
    expect((await api.block.listVolumes({ projectId: MISSING })).totalCount).toBe(0);
    await expect(api.block.listVolumes({ pageSize: 101 })).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);
  });

  it('serves the GA path /block/v1 too', async () => {
    const v = await api.blockV1.createVolume({ name: 'ga', fromEmpty: { size: GB } });
    expect((await api.block.getVolume({ volumeId: v.id })).name).toBe('ga');
    expect((await api.blockV1.listVolumes({ name: 'ga', includeDeleted: false })).totalCount).toBe(1);
  });
});

describe('snapshots', () => {
  it('creates, gets, lists, updates and deletes snapshots; volumes from snapshots', async () => {
    const v = await availableVolume('snap-src', 2 * GB);
    const s = await api.block.createSnapshot({ volumeId: v.id, name: 'snap-1', tags: ['daily'] });
    expect(s.status).toBe('creating');
    expect(s.size).toBe(2 * GB);
    expect(s.parentVolume).toMatchObject({ id: v.id, name: 'snap-src', type: 'sbs_5k' });
    expect(s.class).toBe('sbs');
    const ready = await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
    expect(ready.name).toBe('snap-1');

    const s2 = await api.block.createSnapshot({ volumeId: v.id, name: 'snap-2' });
    const byVolume = await api.block.listSnapshots({ volumeId: v.id });
    expect(byVolume.totalCount).toBe(2);
    expect((await api.block.listSnapshots({ volumeId: v.id, pageSize: 1, page: 2 })).snapshots[0]!.id).toBe(s2.id);
    expect((await api.block.listSnapshots({ tags: ['daily'] })).snapshots.map((x) => x.id)).toEqual([s.id]);
    expect((await api.block.listSnapshots({ name: 'snap-2' })).snapshots.map((x) => x.id)).toEqual([s2.id]);
    expect((await api.block.listSnapshots({ projectId: local.projectId, volumeId: v.id })).totalCount).toBe(2);

    const u = await api.block.updateSnapshot({ snapshotId: s.id, name: 'snap-1b', tags: ['weekly'] });
    expect(u.name).toBe('snap-1b');
    expect(u.tags).toEqual(['weekly']);

    const restored = await api.block.createVolume({ name: 'restored', fromSnapshot: { snapshotId: s.id, size: 3 * GB } });
    expect(restored.parentSnapshotId).toBe(s.id);
    expect(restored.size).toBe(3 * GB);
    await expect(
      api.block.createVolume({ name: 'smaller', fromSnapshot: { snapshotId: s.id, size: GB } }),
    ).rejects.toBeInstanceOf(Errors.InvalidArgumentsError);

    await waitFor(() => api.block.getSnapshot({ snapshotId: s2.id }), (x) => x.status === 'available');
    await api.block.deleteSnapshot({ snapshotId: s2.id });
    await waitFor(
      () => api.block.getSnapshot({ snapshotId: s2.id }).then(() => false, (e: unknown) => e instanceof Errors.ResourceNotFoundError),
      (gone) => gone,
    );
  });

  it('answers TransientStateError on resources in a transient state', async () => {
    // Transitions wait until fastForward(): the resources stay transient while the test pokes them.
    local.emulator.setTimings({ volumeCreateMs: 600_000, snapshotCreateMs: 600_000 });
    const v = await api.block.createVolume({ name: 'busy', fromEmpty: { size: GB } });
    // Still creating: any operation but get/list conflicts.
    const err = await api.block.createSnapshot({ volumeId: v.id }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Errors.TransientStateError);
    expect((err as Errors.TransientStateError).currentState).toBe('creating');
    expect((err as Errors.TransientStateError).resource).toBe('volume');
    await expect(api.block.deleteVolume({ volumeId: v.id })).rejects.toBeInstanceOf(Errors.TransientStateError);
    await expect(api.block.updateVolume({ volumeId: v.id, name: 'x' })).rejects.toBeInstanceOf(Errors.TransientStateError);

    local.emulator.fastForward();
    await waitFor(() => api.block.getVolume({ volumeId: v.id }), (x) => x.status === 'available');
    const s = await api.block.createSnapshot({ volumeId: v.id });
    await expect(api.block.updateSnapshot({ snapshotId: s.id, name: 'x' })).rejects.toBeInstanceOf(Errors.TransientStateError);
    await expect(api.block.deleteSnapshot({ snapshotId: s.id })).rejects.toBeInstanceOf(Errors.TransientStateError);
    await expect(
      api.block.exportSnapshotToObjectStorage({ snapshotId: s.id, bucket: local.bucket, key: 'busy.qcow2' }),
    ).rejects.toBeInstanceOf(Errors.TransientStateError);
    await expect(api.block.createVolume({ fromSnapshot: { snapshotId: s.id } })).rejects.toBeInstanceOf(
      Errors.TransientStateError,
    );
    local.emulator.setTimings(TEST_TIMINGS);
    local.emulator.fastForward();
    await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
  });

  it('export to a missing bucket and import of a missing object answer ResourceNotFoundError', async () => {
    const v = await availableVolume('nb');
    const s = await api.block.createSnapshot({ volumeId: v.id });
    await waitFor(() => api.block.getSnapshot({ snapshotId: s.id }), (x) => x.status === 'available');
    await expect(
      api.block.exportSnapshotToObjectStorage({ snapshotId: s.id, bucket: 'no-such-bucket', key: 'k' }),
    ).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
    await expect(
      api.block.importSnapshotFromObjectStorage({ bucket: local.bucket, key: 'no/such/object.qcow2', name: 'imp' }),
    ).rejects.toBeInstanceOf(Errors.ResourceNotFoundError);
  });
});

describe('authentication', () => {
  it('answers DeniedAuthenticationError to a wrong secret key', async () => {
    const wrong = sdkClients(local, '00000000-0000-4000-8000-000000000001');
    const err = await wrong.block.listVolumes({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Errors.DeniedAuthenticationError);
    expect((err as Errors.DeniedAuthenticationError).status).toBe(401);
    await expect(wrong.jobs.listJobDefinitions({})).rejects.toBeInstanceOf(Errors.DeniedAuthenticationError);
  });

  it('answers 401 denied_authentication without a token', async () => {
    const res = await fetch(`${local.apiUrl}/block/v1alpha1/zones/fr-par-1/volumes`);
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toMatchObject({ type: 'denied_authentication', method: 'api_key', reason: 'invalid_argument' });
  });

  it('answers with Content-Type exactly application/json', async () => {
    const res = await fetch(`${local.apiUrl}/block/v1alpha1/zones/fr-par-1/volumes`, {
      headers: { 'X-Auth-Token': local.secretKey },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
  });
});
