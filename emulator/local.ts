// The whole local Scaleway: the Block Storage + Jobs emulator and the S3/SQS object store (fauxqs),
// with the staging bucket and the queues created, and well-formed credentials.
import { randomInt, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Timings } from './context.js';
import { startObjectStore, type ObjectStoreServer } from './objectstore.js';
import { startEmulator, type EmulatorServer } from './server.js';

export const DEFAULT_BUCKET = 'scw-kloset-staging';
export const DEFAULT_QUEUES = ['scw-kloset-tasks'];

export interface Credentials {
  accessKey: string;
  secretKey: string;
  projectId: string;
  organizationId: string;
}

export interface LocalScalewayOptions {
  /** Data directory kept across restarts (volumes, snapshots, job runs, credentials). Default: a temp dir removed on stop. */
  dir?: string;
  /** Port of the API (default: any free port). */
  port?: number;
  /** Port of the S3/SQS server (default: any free port). */
  s3Port?: number;
  timings?: Partial<Timings>;
  /** Buckets to create (default: the staging bucket). The first one is `bucket`. */
  buckets?: string[];
  queues?: string[];
  /** Working directory of job runs (default: the current directory). */
  jobsCwd?: string;
}

export interface LocalScaleway extends Credentials {
  /** `apiURL` of the Scaleway SDK (no trailing slash). */
  apiUrl: string;
  s3Endpoint: string;
  sqsEndpoint: string;
  region: string;
  zone: string;
  bucket: string;
  buckets: string[];
  /** Queue name -> queue URL. */
  queueUrls: Record<string, string>;
  dir: string;
  emulator: EmulatorServer;
  objectStore: ObjectStoreServer;
  stop(): Promise<void>;
}

const KEY_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** Fresh credentials that the SDK's validation accepts. */
export function generateCredentials(): Credentials {
  let accessKey = 'SCW';
  for (let i = 0; i < 17; i++) accessKey += KEY_CHARS[randomInt(KEY_CHARS.length)];
  return { accessKey, secretKey: randomUUID(), projectId: randomUUID(), organizationId: randomUUID() };
}

function loadOrCreateCredentials(dir: string): Credentials {
  const file = join(dir, 'credentials.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Credentials;
  const creds = generateCredentials();
  writeFileSync(file, JSON.stringify(creds, null, 1) + '\n', { mode: 0o600 });
  return creds;
}

export async function startLocalScaleway(opts: LocalScalewayOptions = {}): Promise<LocalScaleway> {
  const temporary = !opts.dir;
  const dir = opts.dir ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), 'scw-kloset-local-'));
  mkdirSync(dir, { recursive: true });
  const creds = loadOrCreateCredentials(dir);
  const region = 'fr-par';
  const zone = 'fr-par-1';
  const buckets = opts.buckets ?? [DEFAULT_BUCKET];
  const objectStore = await startObjectStore({
    port: opts.s3Port,
    region,
    accessKeyId: creds.accessKey,
    secretAccessKey: creds.secretKey,
    buckets,
  });
  let emulator: EmulatorServer;
  const queueUrls: Record<string, string> = {};
  try {
    for (const q of opts.queues ?? DEFAULT_QUEUES) {
      // Scaleway's default retention is 60 s; the pipeline raises it, and so does this local queue.
      queueUrls[q] = await objectStore.createQueue(q, { MessageRetentionPeriod: '1209600' });
    }
    emulator = await startEmulator({
      dir: join(dir, 'emulator'),
      secretKey: creds.secretKey,
      projectId: creds.projectId,
      s3: { endpoint: objectStore.endpoint, region, accessKeyId: creds.accessKey, secretAccessKey: creds.secretKey },
      port: opts.port,
      timings: opts.timings,
      jobsCwd: opts.jobsCwd,
    });
  } catch (err) {
    await objectStore.stop();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    ...creds,
    apiUrl: emulator.url,
    s3Endpoint: objectStore.endpoint,
    sqsEndpoint: objectStore.endpoint,
    region,
    zone,
    bucket: buckets[0] ?? DEFAULT_BUCKET,
    buckets,
    queueUrls,
    dir,
    emulator,
    objectStore,
    stop() {
      stopped ??= (async () => {
        await emulator.stop();
        await objectStore.stop();
        if (temporary) await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
