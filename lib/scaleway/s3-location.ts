// S3 settings and s3:// URLs, without loading the AWS SDK (the CLI starts faster for local stores).

export interface S3Options {
  /** e.g. https://s3.fr-par.scw.cloud, or http://127.0.0.1:PORT for the local Scaleway. */
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style addressing (bucket in the path). Needed by local servers; works on Scaleway too. */
  forcePathStyle?: boolean;
}

/** Reads S3 settings from the environment: KLOSET_S3_* first, then the AWS SDK's usual names. */
export function s3OptionsFromEnv(env: NodeJS.ProcessEnv = process.env): S3Options {
  return {
    endpoint: env.KLOSET_S3_ENDPOINT ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL,
    region: env.KLOSET_S3_REGION ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION,
    accessKeyId: env.KLOSET_S3_ACCESS_KEY ?? env.AWS_ACCESS_KEY_ID,
    secretAccessKey: env.KLOSET_S3_SECRET_KEY ?? env.AWS_SECRET_ACCESS_KEY,
  };
}

/** Splits `s3://bucket/some/prefix` into bucket and prefix (no leading or trailing slash). */
export function parseS3Url(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m) throw new Error(`not an s3:// URL: ${url}`);
  return { bucket: m[1]!, key: m[2]!.replace(/\/+$/, '') };
}
