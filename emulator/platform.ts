// The whole product running locally: the local Scaleway (Block, Jobs, S3, SQS), the five functions
// served like Scaleway serves them with their cron and queue triggers, the Serverless Job definition
// whose runs execute `scw-kloset job` as child processes, and a Kloset store in the local S3.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createWriteStream, existsSync } from 'node:fs';
import { createClient } from '@scaleway/sdk-client';
import { Jobsv1alpha1 } from '@scaleway/sdk-jobs';
import { initStore, StoreExistsError, type KdfParams } from '../lib/kloset/store.js';
import { Pipeline } from '../lib/pipeline/context.js';
import { jsonLogger, type Logger } from '../lib/pipeline/log.js';
import type { ResourceInput } from '../lib/pipeline/config.js';
import type { Handler } from '../lib/pipeline/handler.js';
import { handle as triggerExport } from '../functions/trigger-export.js';
import { handle as pollExport } from '../functions/poll-export.js';
import { handle as shipToKloset } from '../functions/ship-to-kloset.js';
import { handle as restoreUpload } from '../functions/restore-upload.js';
import { handle as importVolume } from '../functions/import-volume.js';
import { startLocalScaleway, type LocalScaleway } from './local.js';
import { startLocalFunctions, type LocalFunctions } from './functions.js';
import type { Timings } from './context.js';

/** The checkout (found upwards: this file may run from the CLI's bundle under node_modules/.cache). */
const REPO = (() => {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'bin', 'scw-kloset.js'))) return dir;
  }
  throw new Error('cannot find the scw-kloset checkout');
})();
export const STORE_BUCKET = 'scw-kloset-store';
export const QUEUES = { ship: 'scw-kloset-ship', import: 'scw-kloset-import', dlq: 'scw-kloset-dlq' };

/** A resource as the local platform needs it: the rest (keys, bucket, project, zone) is filled in. */
export interface LocalResource {
  name: string;
  volumeId: string;
  environment?: string;
  dataClass?: string;
  schedule?: string;
}

export interface LocalPlatformOptions {
  dir?: string;
  timings?: Partial<Timings>;
  passphrase?: string;
  kdf?: KdfParams;
  /** Images up to this size are streamed by the function; larger ones by the job (0: always the job). */
  inlineMaxBytes?: number;
  deadlines?: Record<string, number>;
  /** Where function logs go (default: a file in the platform's directory). */
  log?: Logger;
}

export interface LocalPlatform {
  local: LocalScaleway;
  functions: LocalFunctions;
  /** The environment the functions and the job run with (secrets included: local only). */
  env: Record<string, string>;
  storeLocation: string;
  jobDefinitionId: string;
  logFile?: string;
  /** Adds resources (volumes must exist) and restarts nothing: functions read them on the next call. */
  setResources(resources: LocalResource[]): Promise<void>;
  /** A pipeline over the same configuration, for inspection (run records, store). */
  pipeline(): Promise<Pipeline>;
  stop(): Promise<void>;
}

export async function startLocalPlatform(opts: LocalPlatformOptions = {}): Promise<LocalPlatform> {
  const local = await startLocalScaleway({
    dir: opts.dir,
    timings: opts.timings,
    buckets: ['scw-kloset-staging', STORE_BUCKET],
    queues: [QUEUES.ship, QUEUES.import, QUEUES.dlq],
    jobsCwd: REPO,
  });
  let logFile: string | undefined;
  let log = opts.log;
  if (!log) {
    logFile = path.join(local.dir, 'functions.log');
    const out = createWriteStream(logFile, { flags: 'a' });
    log = jsonLogger((line) => out.write(line));
  }
  const passphrase = opts.passphrase ?? 'local-scaleway-demo-passphrase';
  const storeLocation = `s3://${STORE_BUCKET}/kloset`;
  const s3 = { endpoint: local.s3Endpoint, region: local.region, accessKeyId: local.accessKey, secretAccessKey: local.secretKey };
  try {
    await initStore(storeLocation, passphrase, { kdf: opts.kdf, s3 });
  } catch (err) {
    if (!(err instanceof StoreExistsError)) throw err;
  }

  const env: Record<string, string> = {
    KLOSET_RESOURCES: '[]',
    KLOSET_SECRET_KEY: local.secretKey,
    KLOSET_PASSPHRASE: passphrase,
    KLOSET_API_URL: local.apiUrl,
    KLOSET_S3_ENDPOINT: local.s3Endpoint,
    KLOSET_SQS_ENDPOINT: local.sqsEndpoint,
    KLOSET_SQS_ACCESS_KEY: local.accessKey,
    KLOSET_SQS_SECRET_KEY: local.secretKey,
    KLOSET_SHIP_QUEUE_URL: local.queueUrls[QUEUES.ship]!,
    KLOSET_IMPORT_QUEUE_URL: local.queueUrls[QUEUES.import]!,
    KLOSET_INLINE_MAX_BYTES: String(opts.inlineMaxBytes ?? 0),
    KLOSET_STAGE_DEADLINES: JSON.stringify(opts.deadlines ?? {}),
  };

  const client = createClient({
    accessKey: local.accessKey,
    secretKey: local.secretKey,
    defaultProjectId: local.projectId,
    defaultRegion: local.region as 'fr-par',
    apiURL: local.apiUrl,
  });
  const jobs = new Jobsv1alpha1.API(client);
  const jobDefinition = await jobs.createJobDefinition({
    name: 'scw-kloset-ship',
    cpuLimit: 2000,
    memoryLimit: 2048,
    imageUri: 'local/scw-kloset-job:dev',
    command: `"${process.execPath}" "${path.join(REPO, 'bin/scw-kloset.js')}" job`,
    description: 'Streams QCOW2 images between the staging bucket and the Kloset store',
    jobTimeout: '86400s',
    environmentVariables: env,
  });
  env.KLOSET_JOB_DEFINITION_ID = jobDefinition.id;

  let resources: LocalResource[] = [];
  const toInput = (r: LocalResource): ResourceInput => ({
    name: r.name,
    accessKey: local.accessKey,
    endpoint: r.volumeId,
    bucket: local.bucket,
    projectId: local.projectId,
    zone: local.zone,
    environment: r.environment,
    dataClass: r.dataClass,
    store: storeLocation,
    schedule: r.schedule,
  });
  let pipelinePromise: Promise<Pipeline> | null = null;
  const pipeline = () => (pipelinePromise ??= Pipeline.fromEnv({ ...env }, log));
  const handlers: Record<string, Handler> = Object.fromEntries(
    Object.entries({
      'trigger-export': triggerExport,
      'poll-export': pollExport,
      'ship-to-kloset': shipToKloset,
      'restore-upload': restoreUpload,
      'import-volume': importVolume,
    }).map(([name, h]) => [name, h.withPipeline(pipeline)]),
  );
  const functions = await startLocalFunctions({
    handlers,
    privateToken: local.secretKey,
    crons: [{ function: 'poll-export', schedule: '* * * * *', input: {} }],
    queues: [
      { function: 'ship-to-kloset', queueUrl: env.KLOSET_SHIP_QUEUE_URL!, deadLetterQueueUrl: local.queueUrls[QUEUES.dlq] },
      { function: 'import-volume', queueUrl: env.KLOSET_IMPORT_QUEUE_URL!, deadLetterQueueUrl: local.queueUrls[QUEUES.dlq] },
    ],
    sqs: (await import('../lib/scaleway/clients.js')).makeSqsClient({
      endpoint: local.sqsEndpoint,
      region: local.region,
      accessKeyId: local.accessKey,
      secretAccessKey: local.secretKey,
    }),
    log,
  });

  return {
    local,
    functions,
    env,
    storeLocation,
    jobDefinitionId: jobDefinition.id,
    logFile,
    async setResources(list) {
      resources = list;
      env.KLOSET_RESOURCES = JSON.stringify(resources.map(toInput));
      pipelinePromise = null; // functions pick the new configuration up on their next call
      await jobs.updateJobDefinition({ jobDefinitionId: jobDefinition.id, environmentVariables: env });
    },
    pipeline,
    async stop() {
      await functions.stop();
      await local.stop();
    },
  };
}
