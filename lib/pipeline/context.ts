// Everything a stage needs, built once per function instance (or per CLI command / test): the
// validated resources, platform settings, clients, run stores, queues and a logger.
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { makeScalewayClients, makeSqsClient, regionOfZone, type ScalewayClients } from '../scaleway/clients.js';
import { type PlatformConfig, platformFromEnv, type Resource, resourcesFromEnv } from './config.js';
import { jsonLogger, type Logger } from './log.js';
import { RunStore, type Stage } from './runs.js';

/** Default time a stage may take before its run fails. Exports and streams of 1 TB take hours. */
export const DEFAULT_DEADLINES: Record<Exclude<Stage, 'done'>, number> = {
  snapshotting: 3600,
  exporting: 12 * 3600,
  shipping: 26 * 3600,
  uploading: 26 * 3600,
  importing: 12 * 3600,
  'creating-volume': 2 * 3600,
  cleaning: 3600,
};

export class UnknownResourceError extends Error {
  constructor(name: string, known: string[]) {
    super(`unknown resource "${name}" (configured: ${known.join(', ') || 'none'})`);
    this.name = 'UnknownResourceError';
  }
}

export interface QueueMessage {
  type: 'ship' | 'import';
  runId: string;
  resource: string;
}

export class Pipeline {
  private readonly clientCache = new Map<string, ScalewayClients>();
  private sqsClient: SQSClient | null = null;

  constructor(
    readonly resources: Resource[],
    readonly platform: PlatformConfig,
    readonly log: Logger = jsonLogger(),
  ) {}

  static async fromEnv(env: NodeJS.ProcessEnv = process.env, log?: Logger): Promise<Pipeline> {
    return new Pipeline(await resourcesFromEnv(env), platformFromEnv(env), log);
  }

  resource(name: string): Resource {
    const r = this.resources.find((x) => x.name === name);
    if (!r) throw new UnknownResourceError(name, this.resources.map((x) => x.name));
    return r;
  }

  clients(r: Resource): ScalewayClients {
    let c = this.clientCache.get(r.name);
    if (!c) {
      c = makeScalewayClients(
        { accessKey: r.accessKey, secretKey: r.secretKey, projectId: r.projectId, zone: r.zone },
        this.platform.endpoints,
        { onRetry: (err, attempt, waitMs) => this.log.warn('retrying Scaleway call', { resource: r.name, attempt, waitMs, error: (err as Error).message }) },
      );
      this.clientCache.set(r.name, c);
    }
    return c;
  }

  runs(r: Resource): RunStore {
    return new RunStore(this.clients(r).s3, r.bucket);
  }

  deadlineSeconds(stage: Stage): number {
    if (stage === 'done') return 0;
    return this.platform.deadlines[stage] ?? DEFAULT_DEADLINES[stage];
  }

  /**
   * Sends a stage message. Without a queue configured (the CLI on a machine without deployed
   * functions) nothing is sent: the caller drives the run itself (see follow.ts).
   */
  async send(queueUrl: string | undefined, message: QueueMessage): Promise<void> {
    if (!queueUrl) {
      this.log.info('no queue configured: the caller drives this stage', { type: message.type, runId: message.runId });
      return;
    }
    if (!this.sqsClient) {
      const r = this.resource(message.resource);
      const creds = this.platform.sqs;
      if (!creds) throw new Error('no Queues credentials (KLOSET_SQS_ACCESS_KEY / KLOSET_SQS_SECRET_KEY)');
      this.sqsClient = makeSqsClient({ endpoint: this.platform.endpoints.sqsEndpoint, region: regionOfZone(r.zone), ...creds });
    }
    await this.sqsClient.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(message) }));
  }
}
