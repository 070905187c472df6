// Buckets and queues of the local Scaleway: the fauxqs S3/SQS server from npm, on loopback only.
// Limits (see README): in memory, single PUT bodies over ~11 MiB rejected (use multipart), no ListParts.
import { buildApp } from 'fauxqs';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { makeS3Client } from '../lib/scaleway/s3.js';

export interface ObjectStoreServer {
  /** http://127.0.0.1:PORT, for both S3 and SQS clients. */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  createBucket(name: string): Promise<void>;
  /** Creates a queue and returns its URL. */
  createQueue(name: string, attributes?: Record<string, string>): Promise<string>;
  stop(): Promise<void>;
}

export async function startObjectStore(opts: {
  port?: number;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  buckets?: string[];
} = {}): Promise<ObjectStoreServer> {
  const region = opts.region ?? 'fr-par';
  const app = buildApp({ logger: false, defaultRegion: region });
  const address = await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' });
  const endpoint = address.replace('localhost', '127.0.0.1');
  const accessKeyId = opts.accessKeyId ?? 'SCWLOCAL000000000000';
  const secretAccessKey = opts.secretAccessKey ?? '00000000-0000-4000-8000-000000000000';
  const s3 = makeS3Client({ endpoint, region, accessKeyId, secretAccessKey });
  const sqs = new SQSClient({ endpoint, region, credentials: { accessKeyId, secretAccessKey } });
  const server: ObjectStoreServer = {
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    async createBucket(name) {
      await s3.send(new CreateBucketCommand({ Bucket: name }));
    },
    async createQueue(name, attributes) {
      const out = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
      return out.QueueUrl!;
    },
    async stop() {
      s3.destroy();
      sqs.destroy();
      await app.close();
    },
  };
  for (const b of opts.buckets ?? []) await server.createBucket(b);
  return server;
}
