// Block Storage API (`/block/v1alpha1/zones/{zone}/...` and its GA twin `/block/v1/...`): volumes and
// snapshots whose content are sparse files, export to and import from Object Storage as QCOW2.
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadBucketCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { EmulatorContext } from './context.js';
import { createSparse, resize, sparseCopy } from './files.js';
import {
  errors,
  isUuid,
  nowIso,
  optNumber,
  optString,
  optStringArray,
  orderBy,
  paginate,
  reqString,
  type RequestContext,
  type Router,
} from './http.js';
import type { SnapshotRecord, VolumeRecord } from './state.js';


/** A snapshot entering `creating`, as both snapshot creation and import make it. */
function newSnapshotRecord(
  fields: Pick<SnapshotRecord, 'id' | 'name' | 'parent_volume' | 'size' | 'project_id' | 'tags' | 'zone'>,
): SnapshotRecord {
  const now = nowIso();
  return { ...fields, created_at: now, updated_at: now, references: [], status: 'creating', class: 'sbs' };
}

export const ZONES = ['fr-par-1', 'fr-par-2', 'fr-par-3', 'nl-ams-1', 'nl-ams-2', 'nl-ams-3', 'pl-waw-1', 'pl-waw-2', 'pl-waw-3'];
export const MIN_SIZE = 1_000_000_000;
export const MAX_SIZE = 10_000_000_000_000;
const VOLUME_TRANSIENT = ['creating', 'deleting', 'resizing', 'snapshotting', 'updating'];
const SNAPSHOT_TRANSIENT = ['creating', 'deleting', 'exporting'];
const PERF_TYPES: Record<number, string> = { 5000: 'sbs_5k', 15000: 'sbs_15k' };
/**
 * Multipart part size of exports: fauxqs rejects request bodies over 11 MiB (so a part must stay
 * below that), and Scaleway allows 1000 parts; 8 MiB parts cover images up to ~8 GB locally.
 */
const EXPORT_PART_SIZE = 8 * 1024 * 1024;

// The QCOW2 library is loaded on first use (export, import).
const qcow2 = () => import('../lib/qcow2/index.js');

function zoneOf(ctx: RequestContext): string {
  const zone = ctx.params.zone!;
  if (!ZONES.includes(zone)) throw errors.invalidArguments('zone', 'constraint', `unknown zone ${zone}`);
  return zone;
}

function checkSize(name: string, size: number): void {
  if (!Number.isInteger(size) || size < MIN_SIZE || size > MAX_SIZE) {
    throw errors.invalidArguments(name, 'constraint', 'size must be between 1 GB and 10 TB');
  }
}

function checkTags(tags: string[] | undefined): void {
  if (tags && tags.some((t) => t.length === 0 || t.length > 128)) {
    throw errors.invalidArguments('tags', 'constraint', 'tags must be 1 to 128 characters');
  }
}

function checkProject(projectId: string | undefined): string {
  if (!projectId) throw errors.invalidArguments('project_id', 'required', 'is required');
  if (!isUuid(projectId)) throw errors.invalidArguments('project_id', 'format', 'must be a UUID');
  return projectId;
}

function withTags<T extends { tags: string[] }>(items: T[], query: URLSearchParams): T[] {
  const tags = query.getAll('tags');
  return tags.length ? items.filter((i) => tags.every((t) => i.tags.includes(t))) : items;
}

export function blockApi(router: Router, c: EmulatorContext): void {
  const { state, background, timings } = c;

  const getVolume = (zone: string, id: string): VolumeRecord => {
    const v = state.volumes.get(id);
    if (!v || v.zone !== zone) throw errors.notFound('volume', id);
    return v;
  };
  const getSnapshot = (zone: string, id: string): SnapshotRecord => {
    const s = state.snapshots.get(id);
    if (!s || s.zone !== zone) throw errors.notFound('snapshot', id);
    return s;
  };
  const notTransientVolume = (v: VolumeRecord) => {
    if (VOLUME_TRANSIENT.includes(v.status)) throw errors.transientState('volume', v.id, v.status);
  };
  const notTransientSnapshot = (s: SnapshotRecord) => {
    if (SNAPSHOT_TRANSIENT.includes(s.status)) throw errors.transientState('snapshot', s.id, s.status);
  };
  const setStatus = (rec: { status: string; updated_at: string }, from: string, to: string) => {
    if (rec.status !== from) return;
    rec.status = to;
    rec.updated_at = nowIso();
    state.save();
  };
  const snapshotView = (s: SnapshotRecord): SnapshotRecord => {
    // The parent volume's status is live while the volume exists.
    const v = s.parent_volume ? state.volumes.get(s.parent_volume.id) : undefined;
    return v && s.parent_volume ? { ...s, parent_volume: { ...s.parent_volume, name: v.name, status: v.status } } : s;
  };
  const removeLater = (kind: 'volume' | 'snapshot', id: string) =>
    background.later(timings.deleteMs, () => {
      if (kind === 'volume') state.volumes.delete(id);
      else state.snapshots.delete(id);
      state.save();
      void rm(kind === 'volume' ? state.volumePath(id) : state.snapshotPath(id), { force: true });
    });

  for (const version of ['v1alpha1', 'v1']) {
    const base = `/block/${version}/zones/{zone}`;

    router.add('GET', `${base}/volume-types`, 'listVolumeTypes', 'volume_type', (ctx) => {
      zoneOf(ctx);
      const types = Object.entries(PERF_TYPES).map(([iops, type]) => ({
        type,
        pricing: null,
        snapshot_pricing: null,
        specs: { perf_iops: Number(iops), class: 'sbs' },
      }));
      const { page, total } = paginate(types, ctx.query);
      return { volume_types: page, total_count: total };
    });

    // --- volumes ---
    router.add('POST', `${base}/volumes`, 'createVolume', 'volume', async (ctx) => {
      const zone = zoneOf(ctx);
      const b = ctx.body;
      const projectId = checkProject(optString(b, 'project_id'));
      const tags = optStringArray(b, 'tags') ?? [];
      checkTags(tags);
      const perfIops = optNumber(b, 'perf_iops') ?? 5000;
      const type = PERF_TYPES[perfIops];
      if (!type) throw errors.invalidArguments('perf_iops', 'constraint', 'must be 5000 or 15000');
      const fromEmpty = b.from_empty as Record<string, unknown> | undefined | null;
      const fromSnapshot = b.from_snapshot as Record<string, unknown> | undefined | null;
      if (!!fromEmpty === !!fromSnapshot) {
        throw errors.invalidArguments('from_empty', 'required', 'exactly one of from_empty, from_snapshot is required');
      }
      const id = randomUUID();
      let size: number;
      let parentSnapshotId: string | null = null;
      if (fromEmpty) {
        const s = optNumber(fromEmpty, 'size');
        if (s === undefined) throw errors.invalidArguments('from_empty.size', 'required', 'is required');
        checkSize('from_empty.size', s);
        size = s;
        await createSparse(state.volumePath(id), size);
      } else {
        const snapshotId = reqString(fromSnapshot!, 'snapshot_id');
        const snap = getSnapshot(zone, snapshotId);
        notTransientSnapshot(snap);
        if (snap.status !== 'available') throw errors.invalidRequest(`snapshot ${snap.id} is in status ${snap.status}`);
        const s = optNumber(fromSnapshot!, 'size');
        size = s ?? snap.size;
        checkSize('from_snapshot.size', size);
        if (size < snap.size) {
          throw errors.invalidArguments('from_snapshot.size', 'constraint', 'size can only be larger than the snapshot size');
        }
        await sparseCopy(state.snapshotPath(snap.id), state.volumePath(id));
        if (size !== snap.size) await resize(state.volumePath(id), size);
        parentSnapshotId = snap.id;
      }
      const now = nowIso();
      const v: VolumeRecord = {
        id,
        name: optString(b, 'name') || `vol-${id.slice(0, 8)}`,
        type,
        size,
        project_id: projectId,
        created_at: now,
        updated_at: now,
        references: [],
        parent_snapshot_id: parentSnapshotId,
        status: 'creating',
        tags,
        zone,
        specs: { perf_iops: perfIops, class: 'sbs' },
        last_detached_at: null,
      };
      state.volumes.set(id, v);
      state.save();
      background.later(timings.volumeCreateMs, () => setStatus(v, 'creating', 'available'));
      return v;
    });

    router.add('GET', `${base}/volumes/{volumeId}`, 'getVolume', 'volume', (ctx) =>
      getVolume(zoneOf(ctx), ctx.params.volumeId!),
    );

    router.add('GET', `${base}/volumes`, 'listVolumes', 'volume', (ctx) => {
      const zone = zoneOf(ctx);
      const q = ctx.query;
      let items = [...state.volumes.values()].filter((v) => v.zone === zone);
      const projectId = q.get('project_id');
      if (projectId) items = items.filter((v) => v.project_id === projectId);
      const name = q.get('name');
      if (name) items = items.filter((v) => v.name.includes(name));
      if (q.get('product_resource_id')) items = []; // no volume is attached to anything here
      items = withTags(items, q);
      const { page, total } = paginate(orderBy(items, q.get('order_by')), q);
      return { volumes: page, total_count: total };
    });

    router.add('PATCH', `${base}/volumes/{volumeId}`, 'updateVolume', 'volume', async (ctx) => {
      const v = getVolume(zoneOf(ctx), ctx.params.volumeId!);
      notTransientVolume(v);
      const b = ctx.body;
      const name = optString(b, 'name');
      const tags = optStringArray(b, 'tags');
      checkTags(tags);
      const perfIops = optNumber(b, 'perf_iops');
      const size = optNumber(b, 'size');
      if (perfIops !== undefined && !PERF_TYPES[perfIops]) {
        throw errors.invalidArguments('perf_iops', 'constraint', 'must be 5000 or 15000');
      }
      if (size !== undefined) {
        checkSize('size', size);
        if (size % 1_000_000_000 !== 0) throw errors.invalidArguments('size', 'constraint', 'granularity is 1 GB');
        if (size < v.size) throw errors.invalidArguments('size', 'constraint', 'a volume can only be enlarged');
        if (size > v.size) await resize(state.volumePath(v.id), size);
        v.size = size;
      }
      if (name !== undefined && name !== '') v.name = name;
      if (tags !== undefined) v.tags = tags;
      if (perfIops !== undefined) {
        v.specs = { ...v.specs, perf_iops: perfIops };
        v.type = PERF_TYPES[perfIops]!;
      }
      v.updated_at = nowIso();
      state.save();
      return v;
    });

    router.add('DELETE', `${base}/volumes/{volumeId}`, 'deleteVolume', 'volume', (ctx) => {
      const v = getVolume(zoneOf(ctx), ctx.params.volumeId!);
      notTransientVolume(v);
      if (v.status === 'in_use') throw errors.preconditionFailed('resource_still_in_use', 'the volume is attached');
      v.status = 'deleting';
      v.updated_at = nowIso();
      state.save();
      removeLater('volume', v.id);
      return null;
    });

    // --- snapshots ---
    router.add('POST', `${base}/snapshots`, 'createSnapshot', 'snapshot', async (ctx) => {
      const zone = zoneOf(ctx);
      const b = ctx.body;
      const projectId = checkProject(optString(b, 'project_id'));
      const volumeId = reqString(b, 'volume_id');
      const tags = optStringArray(b, 'tags') ?? [];
      checkTags(tags);
      const v = getVolume(zone, volumeId);
      notTransientVolume(v);
      if (v.status !== 'available' && v.status !== 'in_use') {
        throw errors.invalidRequest(`volume ${v.id} is in status ${v.status}`);
      }
      const id = randomUUID();
      // Point in time: the content is copied before answering (a reflink or a hole-aware copy).
      await sparseCopy(state.volumePath(v.id), state.snapshotPath(id));
      const s = newSnapshotRecord({
        id,
        name: optString(b, 'name') || `snp-${id.slice(0, 8)}`,
        parent_volume: { id: v.id, name: v.name, type: v.type, status: v.status },
        size: v.size,
        project_id: projectId,
        tags,
        zone,
      });
      state.snapshots.set(id, s);
      state.save();
      background.later(timings.snapshotCreateMs, () => setStatus(s, 'creating', 'available'));
      return snapshotView(s);
    });

    router.add('GET', `${base}/snapshots/{snapshotId}`, 'getSnapshot', 'snapshot', (ctx) =>
      snapshotView(getSnapshot(zoneOf(ctx), ctx.params.snapshotId!)),
    );

    router.add('GET', `${base}/snapshots`, 'listSnapshots', 'snapshot', (ctx) => {
      const zone = zoneOf(ctx);
      const q = ctx.query;
      let items = [...state.snapshots.values()].filter((s) => s.zone === zone);
      const projectId = q.get('project_id');
      if (projectId) items = items.filter((s) => s.project_id === projectId);
      const volumeId = q.get('volume_id');
      if (volumeId) items = items.filter((s) => s.parent_volume?.id === volumeId);
      const name = q.get('name');
      if (name) items = items.filter((s) => s.name.includes(name));
      items = withTags(items, q);
      const { page, total } = paginate(orderBy(items, q.get('order_by')), q);
      return { snapshots: page.map(snapshotView), total_count: total };
    });

    router.add('PATCH', `${base}/snapshots/{snapshotId}`, 'updateSnapshot', 'snapshot', (ctx) => {
      const s = getSnapshot(zoneOf(ctx), ctx.params.snapshotId!);
      notTransientSnapshot(s);
      const name = optString(ctx.body, 'name');
      const tags = optStringArray(ctx.body, 'tags');
      checkTags(tags);
      if (name !== undefined && name !== '') s.name = name;
      if (tags !== undefined) s.tags = tags;
      s.updated_at = nowIso();
      state.save();
      return snapshotView(s);
    });

    router.add('DELETE', `${base}/snapshots/{snapshotId}`, 'deleteSnapshot', 'snapshot', (ctx) => {
      const s = getSnapshot(zoneOf(ctx), ctx.params.snapshotId!);
      notTransientSnapshot(s);
      s.status = 'deleting';
      s.updated_at = nowIso();
      state.save();
      removeLater('snapshot', s.id);
      return null;
    });

    router.add(
      'POST',
      `${base}/snapshots/{snapshotId}/export-to-object-storage`,
      'exportSnapshotToObjectStorage',
      'snapshot',
      async (ctx) => {
        const s = getSnapshot(zoneOf(ctx), ctx.params.snapshotId!);
        const bucket = reqString(ctx.body, 'bucket');
        const key = reqString(ctx.body, 'key');
        notTransientSnapshot(s);
        if (s.status !== 'available') throw errors.invalidRequest(`snapshot ${s.id} is in status ${s.status}`);
        await checkBucket(c, bucket);
        // Checked again after the await: a concurrent export call may have started meanwhile, and
        // Scaleway accepts only one (the other gets transient_state).
        notTransientSnapshot(s);
        const fail = c.faults.takeExportFailure();
        const minMs = timings.exportMs + c.faults.exportDelayMs;
        s.status = 'exporting';
        s.updated_at = nowIso();
        state.save();
        background.run(
          async (signal) => {
            const waited = background.sleep(minMs);
            if (!fail) await uploadQcow2(c, state.snapshotPath(s.id), bucket, key, signal);
            await waited;
            setStatus(s, 'exporting', fail ? 'error' : 'available');
          },
          (err) => {
            process.emitWarning(`local Scaleway: export of snapshot ${s.id} failed: ${(err as Error).message}`);
            setStatus(s, 'exporting', 'error');
          },
        );
        return snapshotView(s);
      },
    );

    const importHandler = async (ctx: RequestContext) => {
      const zone = zoneOf(ctx);
      const b = ctx.body;
      const bucket = reqString(b, 'bucket');
      const key = reqString(b, 'key');
      const name = reqString(b, 'name');
      const projectId = checkProject(optString(b, 'project_id'));
      const tags = optStringArray(b, 'tags') ?? [];
      checkTags(tags);
      const wantedSize = optNumber(b, 'size');
      await checkBucket(c, bucket);
      const id = randomUUID();
      const tmp = state.tmpPath(`import-${id}.qcow2`);
      let virtualSize: number;
      try {
        await download(c, bucket, key, tmp);
        const q = await qcow2();
        let info;
        try {
          info = await q.readQcow2Info(tmp);
        } catch (err) {
          if (err instanceof q.Qcow2FormatError) {
            throw errors.invalidRequest(`The provided file is not a valid QCOW2 image: ${err.message}`);
          }
          throw err;
        }
        const problem = q.scalewayImportProblem(info) ?? q.qcow2ReadProblem(info);
        if (problem) throw errors.invalidRequest(problem);
        virtualSize = Number(info.virtualSize);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      const size = wantedSize ?? virtualSize;
      try {
        checkSize('size', size);
        if (size < virtualSize) throw errors.invalidArguments('size', 'constraint', 'size is smaller than the image');
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      const s = newSnapshotRecord({ id, name, parent_volume: null, size, project_id: projectId, tags, zone });
      state.snapshots.set(id, s);
      state.save();
      background.run(
        async () => {
          const waited = background.sleep(timings.importMs);
          try {
            const q = await qcow2();
            await q.qcow2ToRawFile(tmp, state.snapshotPath(id));
            await resize(state.snapshotPath(id), size);
          } finally {
            await rm(tmp, { force: true });
          }
          await waited;
          setStatus(s, 'creating', 'available');
        },
        (err) => {
          process.emitWarning(`local Scaleway: import into snapshot ${id} failed: ${(err as Error).message}`);
          setStatus(s, 'creating', 'error');
        },
      );
      return s;
    };
    router.add('POST', `${base}/snapshots/import-from-object-storage`, 'importSnapshotFromObjectStorage', 'snapshot', importHandler);
    if (version === 'v1alpha1') {
      router.add('POST', `${base}/snapshots/import-from-s3`, 'importSnapshotFromS3', 'snapshot', importHandler);
    }
  }
}

function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

async function checkBucket(c: EmulatorContext, bucket: string): Promise<void> {
  try {
    await c.s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch (err) {
    if (s3Status(err) === 404) throw errors.notFound('bucket', bucket);
    if (s3Status(err) === 403) throw errors.permissionsDenied('write', 'bucket');
    throw err;
  }
}

async function download(c: EmulatorContext, bucket: string, key: string, path: string): Promise<void> {
  try {
    await c.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  } catch (err) {
    if (s3Status(err) === 404) throw errors.notFound('object', `${bucket}/${key}`);
    throw err;
  }
  const out = await c.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  await pipeline(out.Body as Readable, createWriteStream(path));
}

async function uploadQcow2(c: EmulatorContext, rawPath: string, bucket: string, key: string, signal: AbortSignal) {
  const q = await qcow2();
  await stat(rawPath);
  const body = q.rawToQcow2Stream(rawPath);
  const upload = new Upload({
    client: c.s3,
    params: { Bucket: bucket, Key: key, Body: body, ContentType: 'application/octet-stream' },
    partSize: EXPORT_PART_SIZE,
    queueSize: 2,
    leavePartsOnError: false,
  });
  const abort = () => void upload.abort();
  signal.addEventListener('abort', abort, { once: true });
  try {
    await upload.done();
  } finally {
    signal.removeEventListener('abort', abort);
    body.destroy();
  }
}
