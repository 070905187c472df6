// The local Scaleway API server: Block Storage and Serverless Jobs for the real @scaleway/sdk,
// with fault injection and seeding, on 127.0.0.1.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { makeS3Client } from '../lib/scaleway/s3.js';
import { blockApi, MAX_SIZE, MIN_SIZE, ZONES } from './block.js';
import { Background, DEFAULT_TIMINGS, type EmulatorContext, type Timings } from './context.js';
import { Faults } from './faults.js';
import { createSparse, resize, sparseCopy, writeRanges, type RangeWrite } from './files.js';
import { ApiError, errors, isUuid, nowIso, readJsonBody, Router, sendJson, type RequestContext } from './http.js';
import { JobRunner, jobsApi } from './jobs.js';
import { State, type VolumeRecord } from './state.js';
import { buildExt4Image, type Ext4Files } from './seed.js';

export interface EmulatorOptions {
  /** Data directory: state.json and the sparse content files. Created if missing. */
  dir: string;
  /** The secret key that `X-Auth-Token` must carry. */
  secretKey: string;
  /** Default project of seeded volumes. */
  projectId: string;
  /** Object Storage reached by export and import (S3 API). */
  s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string };
  port?: number;
  timings?: Partial<Timings>;
  /** Working directory of job runs (default: the current directory). */
  jobsCwd?: string;
}

export interface SeedVolumeOptions {
  name?: string;
  /** A raw disk image copied (sparsely) as the volume's content. */
  fromFile?: string;
  /** Build an ext4 filesystem with these files as the volume's content (`mkfs.ext4 -d`). */
  ext4?: { files?: Ext4Files; dir?: string; sizeMiB?: number };
  /** Volume size in bytes (default: the content's size rounded up to whole GB, at least 1 GB). */
  size?: number;
  zone?: string;
  projectId?: string;
  tags?: string[];
  perfIops?: 5000 | 15000;
}

export interface EmulatorServer {
  /** http://127.0.0.1:PORT: the SDK's `apiURL`. */
  url: string;
  port: number;
  dir: string;
  faults: Faults;
  /** Creates an `available` volume with the given content, without going through the API. */
  seedVolume(opts: SeedVolumeOptions): Promise<VolumeRecord>;
  /** Overwrites byte ranges of a volume ("the next day" of a volume). */
  writeVolume(volumeId: string, writes: RangeWrite[]): Promise<void>;
  /** The sparse file holding a volume's content (read it, compare it; write through writeVolume). */
  volumePath(volumeId: string): string;
  snapshotPath(snapshotId: string): string;
  jobRunLogPath(jobRunId: string): string;
  /** Changes transition durations from now on (tests hold a resource in a transient state this way). */
  setTimings(timings: Partial<Timings>): void;
  /** Ends every pending transition wait now (the work itself, e.g. an upload, still has to finish). */
  fastForward(): void;
  stop(): Promise<void>;
}

const GB = 1_000_000_000;

export async function startEmulator(opts: EmulatorOptions): Promise<EmulatorServer> {
  const state = new State(opts.dir);
  const faults = new Faults();
  const background = new Background();
  const s3 = makeS3Client({ ...opts.s3, forcePathStyle: true });
  const ctx: EmulatorContext = {
    state,
    faults,
    s3,
    timings: { ...DEFAULT_TIMINGS, ...opts.timings },
    background,
    jobsCwd: opts.jobsCwd ?? process.cwd(),
  };
  recoverBlock(state);
  const runner = new JobRunner(ctx);
  runner.recover();

  const router = new Router();
  blockApi(router, ctx);
  jobsApi(router, ctx, runner);

  const admin = new Router();
  const server: Partial<EmulatorServer> = {};
  adminApi(admin, faults, server as EmulatorServer);

  const httpServer = createServer((req, res) => {
    void handle(req, res).catch((err) => {
      if (!res.headersSent) sendJson(res, 500, { message: String((err as Error)?.message ?? err), type: 'internal_error' });
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname;
    try {
      const token = req.headers['x-auth-token'];
      if (typeof token !== 'string' || token === '') throw errors.deniedAuthentication('invalid_argument');
      if (token !== opts.secretKey) throw errors.deniedAuthentication(isUuid(token) ? 'not_found' : 'invalid_argument');
      const isAdmin = path.startsWith('/_emulator/');
      const found = (isAdmin ? admin : router).match(method, path);
      if (!found) throw new ApiError(404, { message: `no such API path: ${method} ${path}`, type: 'not_found' });
      if ('allowed' in found) {
        throw new ApiError(405, { message: `method ${method} not allowed on ${path}`, type: 'method_not_allowed' });
      }
      if (!isAdmin) {
        const fault = faults.errorFor(method, path, found.route.action, found.route.resource);
        if (fault) throw fault;
      }
      const body = method === 'GET' || method === 'DELETE' ? {} : await readJsonBody(req);
      const rc: RequestContext = { method, path, params: found.params, query: url.searchParams, body, headers: req.headers };
      const result = await found.route.handler(rc);
      sendJson(res, result === null ? 204 : 200, result);
    } catch (err) {
      if (err instanceof ApiError) sendJson(res, err.status, err.body);
      else throw err;
    }
  }

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (httpServer.address() as AddressInfo).port;

  const seedVolume = async (o: SeedVolumeOptions): Promise<VolumeRecord> => {
    const zone = o.zone ?? 'fr-par-1';
    if (!ZONES.includes(zone)) throw new Error(`unknown zone ${zone}`);
    const id = randomUUID();
    const path = state.volumePath(id);
    if (o.fromFile) {
      await sparseCopy(o.fromFile, path);
    } else if (o.ext4) {
      await buildExt4Image(path, { sizeMiB: o.ext4.sizeMiB ?? 1024, files: o.ext4.files, dir: o.ext4.dir });
    } else {
      await createSparse(path, o.size ?? GB);
    }
    const contentSize = (await stat(path)).size;
    const size = o.size ?? Math.max(GB, Math.ceil(contentSize / GB) * GB);
    if (size < contentSize) {
      await rm(path, { force: true });
      throw new Error(`volume size ${size} is smaller than its content (${contentSize} bytes)`);
    }
    if (size < MIN_SIZE || size > MAX_SIZE) {
      await rm(path, { force: true });
      throw new Error('volume size must be between 1 GB and 10 TB');
    }
    if (size !== contentSize) await resize(path, size);
    const now = nowIso();
    const perf = o.perfIops ?? 5000;
    const v: VolumeRecord = {
      id,
      name: o.name ?? `vol-${id.slice(0, 8)}`,
      type: perf === 15000 ? 'sbs_15k' : 'sbs_5k',
      size,
      project_id: o.projectId ?? opts.projectId,
      created_at: now,
      updated_at: now,
      references: [],
      parent_snapshot_id: null,
      status: 'available',
      tags: o.tags ?? [],
      zone,
      specs: { perf_iops: perf, class: 'sbs' },
      last_detached_at: null,
    };
    state.volumes.set(id, v);
    state.save();
    return v;
  };

  Object.assign(server, {
    url: `http://127.0.0.1:${port}`,
    port,
    dir: opts.dir,
    faults,
    seedVolume,
    async writeVolume(volumeId: string, writes: RangeWrite[]) {
      const v = state.volumes.get(volumeId);
      if (!v) throw new Error(`no volume ${volumeId}`);
      await writeRanges(state.volumePath(volumeId), writes);
      v.updated_at = nowIso();
      state.save();
    },
    volumePath: (id: string) => state.volumePath(id),
    snapshotPath: (id: string) => state.snapshotPath(id),
    jobRunLogPath: (id: string) => state.jobRunLogPath(id),
    setTimings: (t: Partial<Timings>) => Object.assign(ctx.timings, t),
    fastForward: () => background.fastForward(),
    async stop() {
      runner.killAll();
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await background.stop();
      s3.destroy();
    },
  } satisfies EmulatorServer);
  return server as EmulatorServer;
}

/** After a restart: finish what was in flight as well as can be done. */
function recoverBlock(state: State): void {
  const now = nowIso();
  for (const v of [...state.volumes.values()]) {
    if (v.status === 'deleting') state.volumes.delete(v.id);
    else if (v.status === 'creating') Object.assign(v, { status: 'available', updated_at: now });
  }
  for (const s of [...state.snapshots.values()]) {
    if (s.status === 'deleting') state.snapshots.delete(s.id);
    // A snapshot of a volume was copied before its creation was answered; an interrupted import was not.
    else if (s.status === 'creating') Object.assign(s, { status: s.parent_volume ? 'available' : 'error', updated_at: now });
    // The object of an interrupted export is incomplete; Scaleway would have finished it.
    else if (s.status === 'exporting') Object.assign(s, { status: 'error', updated_at: now });
  }
  state.save();
}

function adminApi(admin: Router, faults: Faults, server: EmulatorServer): void {
  admin.add('GET', '/_emulator/faults', 'admin', 'emulator', () => faults.state());
  admin.add('POST', '/_emulator/faults', 'admin', 'emulator', (ctx) => {
    try {
      faults.apply(ctx.body);
    } catch (err) {
      throw errors.invalidRequest((err as Error).message);
    }
    return faults.state();
  });
  admin.add('DELETE', '/_emulator/faults', 'admin', 'emulator', () => {
    faults.clear();
    return null;
  });
  admin.add('POST', '/_emulator/volumes', 'admin', 'emulator', async (ctx) => {
    const b = ctx.body;
    const ext4 = b.ext4 as { size_mib?: number; dir?: string; files?: Record<string, string> } | undefined;
    try {
      return await server.seedVolume({
        name: typeof b.name === 'string' ? b.name : undefined,
        fromFile: typeof b.raw_file === 'string' ? b.raw_file : undefined,
        ext4: ext4 ? { sizeMiB: ext4.size_mib, dir: ext4.dir, files: ext4.files } : undefined,
        size: typeof b.size === 'number' ? b.size : undefined,
        zone: typeof b.zone === 'string' ? b.zone : undefined,
        projectId: typeof b.project_id === 'string' ? b.project_id : undefined,
        tags: Array.isArray(b.tags) ? b.tags.map(String) : undefined,
      });
    } catch (err) {
      throw errors.invalidRequest((err as Error).message);
    }
  });
  admin.add('POST', '/_emulator/volumes/{volumeId}/write', 'admin', 'emulator', async (ctx) => {
    const writes = ctx.body.writes;
    if (!Array.isArray(writes)) throw errors.invalidArguments('writes', 'required', 'is required');
    const parsed: RangeWrite[] = (writes as Record<string, unknown>[]).map((w) =>
      typeof w.data_base64 === 'string'
        ? { offset: Number(w.offset), data: Buffer.from(w.data_base64, 'base64') }
        : {
            offset: Number(w.offset),
            file: String(w.file),
            fileOffset: w.file_offset === undefined ? undefined : Number(w.file_offset),
            length: w.length === undefined ? undefined : Number(w.length),
          },
    );
    try {
      await server.writeVolume(ctx.params.volumeId!, parsed);
    } catch (err) {
      throw errors.invalidRequest((err as Error).message);
    }
    return null;
  });
  admin.add('GET', '/_emulator/volumes/{volumeId}/path', 'admin', 'emulator', (ctx) => ({
    path: server.volumePath(ctx.params.volumeId!),
  }));
}
