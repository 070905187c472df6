// Scaleway clients for one resource: Block Storage (its zone), Serverless Jobs (its region), Object
// Storage (S3) and Queues (SQS). The same code talks to Scaleway or to the local Scaleway: only the
// endpoints differ.
// The split SDK packages: the umbrella @scaleway/sdk loads every Scaleway product at start-up.
import { createClient } from '@scaleway/sdk-client';
import { Blockv1alpha1 } from '@scaleway/sdk-block';
import { Jobsv1alpha1 } from '@scaleway/sdk-jobs';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { makeS3Client } from './s3.js';
import { retrying, type RetryOptions } from './retry.js';

export interface Endpoints {
  /** Scaleway API base URL (no trailing slash). Default https://api.scaleway.com. */
  apiUrl?: string;
  /** Object Storage endpoint. Default https://s3.<region>.scw.cloud. */
  s3Endpoint?: string;
  /** Queues endpoint. Default https://sqs.mnq.<region>.scaleway.com. */
  sqsEndpoint?: string;
}

export interface ScalewayCredentials {
  accessKey: string;
  secretKey: string;
  projectId: string;
  zone: string;
}

export interface ScalewayClients {
  region: string;
  zone: string;
  block: Blockv1alpha1.API;
  jobs: Jobsv1alpha1.API;
  s3: S3Client;
}

export function regionOfZone(zone: string): string {
  return zone.replace(/-\d+$/, '');
}

export function makeScalewayClients(creds: ScalewayCredentials, endpoints: Endpoints = {}, retry?: RetryOptions): ScalewayClients {
  const region = regionOfZone(creds.zone);
  const client = createClient({
    accessKey: creds.accessKey,
    secretKey: creds.secretKey,
    defaultProjectId: creds.projectId,
    defaultRegion: region as 'fr-par',
    defaultZone: creds.zone as 'fr-par-1',
    ...(endpoints.apiUrl ? { apiURL: endpoints.apiUrl.replace(/\/+$/, '') } : {}),
  });
  return {
    region,
    zone: creds.zone,
    block: retrying(new Blockv1alpha1.API(client), retry),
    jobs: retrying(new Jobsv1alpha1.API(client), retry),
    s3: makeS3Client({
      endpoint: endpoints.s3Endpoint,
      region,
      accessKeyId: creds.accessKey,
      secretAccessKey: creds.secretKey,
    }),
  };
}

export function makeSqsClient(opts: { endpoint?: string; region: string; accessKeyId: string; secretAccessKey: string }): SQSClient {
  return new SQSClient({
    endpoint: opts.endpoint ?? `https://sqs.mnq.${opts.region}.scaleway.com`,
    region: opts.region,
    credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
    maxAttempts: 5,
  });
}
