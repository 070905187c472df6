// One place that builds S3 clients for Scaleway Object Storage and S3-compatible servers.
import { S3Client } from '@aws-sdk/client-s3';

export { type S3Options, s3OptionsFromEnv, parseS3Url } from './s3-location.js';
import type { S3Options } from './s3-location.js';

export function makeS3Client(opts: S3Options = {}): S3Client {
  const region = opts.region ?? 'fr-par';
  const endpoint = opts.endpoint ?? `https://s3.${region}.scw.cloud`;
  return new S3Client({
    endpoint,
    region,
    forcePathStyle: opts.forcePathStyle ?? true,
    credentials:
      opts.accessKeyId && opts.secretAccessKey
        ? { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey }
        : undefined,
    // SDK >= 3.729 adds CRC checksums by default, which S3-compatible stores (Scaleway included) reject.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 5,
  });
}
