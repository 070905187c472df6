// Configuration of the pipeline: the resources (one Block Storage volume each, as in the product
// page) and the platform settings (queues, job definition, endpoints), validated with zod. Every
// problem is reported with its field name. Secrets are never literal values in configuration:
// they are `env:NAME` references resolved from the environment (Scaleway secrets arrive as env vars).
import { z } from 'zod';
import { Blockv1alpha1 } from '@scaleway/sdk-block';
import type { Endpoints } from '../scaleway/clients.js';

export const ZONES = (Blockv1alpha1.API.LOCALITY as { zones: string[] }).zones;

const uuid = (what: string) =>
  z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, `must be a UUID (${what})`);

const bucketName = z
  .string()
  .min(3, 'bucket names have 3 to 63 characters')
  .max(63, 'bucket names have 3 to 63 characters')
  .regex(/^[a-z0-9][a-z0-9.-]*[a-z0-9]$/, 'bucket names use lowercase letters, digits, dots and hyphens, and start and end with a letter or digit')
  .refine((b) => !b.includes('..'), 'bucket names have no two dots in a row')
  .refine((b) => !/^\d+\.\d+\.\d+\.\d+$/.test(b), 'a bucket name is not an IP address');

const cronField = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;
const cron = z
  .string()
  .refine((s) => {
    const f = s.trim().split(/\s+/);
    return f.length === 5 && f.every((x) => cronField.test(x));
  }, 'must be a 5-field cron expression in UTC, e.g. "0 3 * * *"');

/** A secret: `env:NAME`, resolved from the environment at load time. */
const secretRef = (fallbackEnv: string) =>
  z
    .string()
    .regex(/^env:[A-Za-z_][A-Za-z0-9_]*$/, 'must be an env:NAME reference (secrets are never written in configuration)')
    .default(`env:${fallbackEnv}`);

export const ResourceSchema = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1-63 lowercase letters, digits or hyphens'),
  accessKey: z.string().regex(/^SCW[A-Z0-9]{17}$/, 'must look like SCWXXXXXXXXXXXXXXXXX (a Scaleway access key)'),
  secretKey: secretRef('KLOSET_SECRET_KEY'),
  /** The Block Storage volume UUID (the product page's "endpoint"). */
  endpoint: uuid('the Block Storage volume id'),
  bucket: bucketName,
  projectId: uuid('the Scaleway project id'),
  zone: z.enum(ZONES as [string, ...string[]], { message: `must be one of ${ZONES.join(', ')}` }),
  environment: z.string().min(1).max(64).optional(),
  dataClass: z.string().min(1).max(64).optional(),
  /** Kloset store location: s3://bucket/prefix (or a directory, for local use). */
  store: z.string().min(1, 'must be a store location (s3://bucket/prefix or a directory)'),
  storePassphrase: secretRef('KLOSET_PASSPHRASE'),
  schedule: cron.optional(),
});

export type ResourceInput = z.input<typeof ResourceSchema>;
type ResourceParsed = z.output<typeof ResourceSchema>;

/** A validated resource with its secrets resolved. */
export interface Resource extends Omit<ResourceParsed, 'secretKey' | 'storePassphrase'> {
  secretKey: string;
  storePassphrase: string;
  /** `${name}`: the name of the env var each secret came from, for messages (never the value). */
  secretSources: { secretKey: string; storePassphrase: string };
}

export interface ConfigProblem {
  field: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p.field}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function issuesToProblems(issues: z.core.$ZodIssue[], prefix: string): ConfigProblem[] {
  return issues.map((i) => ({
    field: [prefix, ...i.path.map(String)].filter(Boolean).join('.'),
    message: /received undefined$/.test(i.message) ? 'is required' : i.message,
  }));
}

/** Validates resources (from JSON) and resolves their secrets; throws ConfigError listing every problem. */
export function parseResources(input: unknown, env: NodeJS.ProcessEnv = process.env): Resource[] {
  const parsed = z.array(z.unknown()).min(1, 'at least one resource is needed').safeParse(input);
  if (!parsed.success) throw new ConfigError(issuesToProblems(parsed.error.issues, 'resources'));
  const problems: ConfigProblem[] = [];
  const out: Resource[] = [];
  const names = new Set<string>();
  parsed.data.forEach((raw, i) => {
    const r = ResourceSchema.safeParse(raw);
    const label = `resources[${i}]${typeof (raw as { name?: unknown })?.name === 'string' ? ` (${(raw as { name: string }).name})` : ''}`;
    if (!r.success) {
      problems.push(...issuesToProblems(r.error.issues, label));
      return;
    }
    if (names.has(r.data.name)) problems.push({ field: `${label}.name`, message: `duplicate resource name "${r.data.name}"` });
    names.add(r.data.name);
    const resolve = (field: 'secretKey' | 'storePassphrase', ref: string) => {
      const name = ref.slice('env:'.length);
      const v = env[name];
      if (!v) problems.push({ field: `${label}.${field}`, message: `environment variable ${name} is not set` });
      return { value: v ?? '', name };
    };
    const secretKey = resolve('secretKey', r.data.secretKey);
    const passphrase = resolve('storePassphrase', r.data.storePassphrase);
    if (secretKey.value && !uuid('').safeParse(secretKey.value).success) {
      problems.push({ field: `${label}.secretKey`, message: `${secretKey.name} must hold a Scaleway secret key (a UUID)` });
    }
    const resource = { ...r.data, secretSources: { secretKey: secretKey.name, storePassphrase: passphrase.name } } as Resource;
    // Secrets are not enumerable: JSON.stringify, logs and spreads of a resource never carry them.
    Object.defineProperty(resource, 'secretKey', { value: secretKey.value, enumerable: false });
    Object.defineProperty(resource, 'storePassphrase', { value: passphrase.value, enumerable: false });
    out.push(resource);
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

export interface PlatformConfig {
  endpoints: Endpoints;
  sqs: { accessKeyId: string; secretAccessKey: string } | null;
  shipQueueUrl?: string;
  importQueueUrl?: string;
  jobDefinitionId?: string;
  /** Images up to this size are streamed by the function itself; larger ones by the Serverless Job. */
  inlineMaxBytes: number;
  /** Per-stage deadlines in seconds (overrides). */
  deadlines: Partial<Record<string, number>>;
}

const PlatformSchema = z.object({
  KLOSET_API_URL: z.url().optional(),
  KLOSET_S3_ENDPOINT: z.url().optional(),
  KLOSET_SQS_ENDPOINT: z.url().optional(),
  KLOSET_SQS_ACCESS_KEY: z.string().min(1).optional(),
  KLOSET_SQS_SECRET_KEY: z.string().min(1).optional(),
  KLOSET_SHIP_QUEUE_URL: z.url().optional(),
  KLOSET_IMPORT_QUEUE_URL: z.url().optional(),
  KLOSET_JOB_DEFINITION_ID: uuid('the job definition id').optional(),
  KLOSET_INLINE_MAX_BYTES: z.coerce.number().int().min(0).default(1024 ** 3),
  KLOSET_STAGE_DEADLINES: z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (!s) return {};
      try {
        return z.record(z.string(), z.number().positive()).parse(JSON.parse(s));
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be a JSON object of stage name -> seconds' });
        return z.NEVER;
      }
    }),
});

export function platformFromEnv(env: NodeJS.ProcessEnv = process.env): PlatformConfig {
  const p = PlatformSchema.safeParse(env);
  if (!p.success) throw new ConfigError(issuesToProblems(p.error.issues, ''));
  const e = p.data;
  return {
    endpoints: { apiUrl: e.KLOSET_API_URL, s3Endpoint: e.KLOSET_S3_ENDPOINT, sqsEndpoint: e.KLOSET_SQS_ENDPOINT },
    sqs: e.KLOSET_SQS_ACCESS_KEY && e.KLOSET_SQS_SECRET_KEY ? { accessKeyId: e.KLOSET_SQS_ACCESS_KEY, secretAccessKey: e.KLOSET_SQS_SECRET_KEY } : null,
    shipQueueUrl: e.KLOSET_SHIP_QUEUE_URL,
    importQueueUrl: e.KLOSET_IMPORT_QUEUE_URL,
    jobDefinitionId: e.KLOSET_JOB_DEFINITION_ID,
    inlineMaxBytes: e.KLOSET_INLINE_MAX_BYTES,
    deadlines: e.KLOSET_STAGE_DEADLINES,
  };
}

/** Resources from KLOSET_RESOURCES (JSON) or the JSON file named by KLOSET_RESOURCES_FILE. */
export async function resourcesFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<Resource[]> {
  let text = env.KLOSET_RESOURCES;
  if (!text && env.KLOSET_RESOURCES_FILE) {
    const { readFile } = await import('node:fs/promises');
    text = await readFile(env.KLOSET_RESOURCES_FILE, 'utf8');
  }
  if (!text) throw new ConfigError([{ field: 'KLOSET_RESOURCES', message: 'not set (a JSON array of resources, or KLOSET_RESOURCES_FILE)' }]);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([{ field: 'KLOSET_RESOURCES', message: `not valid JSON: ${(err as Error).message}` }]);
  }
  return parseResources(json, env);
}
