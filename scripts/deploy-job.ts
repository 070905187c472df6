// Creates or updates the scw-kloset Serverless Job definition through the Jobs API (serverless-
// scaleway-functions cannot deploy jobs), then prints its id for KLOSET_JOB_DEFINITION_ID.
//
//   npx tsx scripts/deploy-job.ts --image rg.fr-par.scw.cloud/<namespace>/scw-kloset-job:<tag>
//       [--name scw-kloset-ship] [--cpu 2000] [--memory 4096]
//       [--secret KLOSET_PASSPHRASE=<secret-manager-id>[:<revision>]]...   (repeatable)
//   npx tsx scripts/deploy-job.ts --list
//
// Credentials of the operator (not of the functions): SCW_ACCESS_KEY, SCW_SECRET_KEY,
// SCW_DEFAULT_PROJECT_ID, SCW_DEFAULT_REGION (default fr-par); API URL from KLOSET_API_URL (or
// SCW_API_URL) when set, e.g. the local Scaleway.
//
// The definition is found by name in the project: a second run updates it in place (same id). Its
// environment is replaced by the KLOSET_* plain variables set in this shell (never secrets); the job
// timeout is 24 h. Secrets are attached as Secret Manager references (--secret), exposed to the job
// under the given env name. The functions start a run with only KLOSET_RUN_ID, KLOSET_RESOURCE and
// KLOSET_JOB_MODE, so the job needs KLOSET_SECRET_KEY and KLOSET_PASSPHRASE (and any other env:NAME
// its resources reference) from its definition. --plain-secrets copies them from this shell as plain
// variables instead, readable by anyone who can read the definition: for the local Scaleway only.
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { createClient, Jobs } from '@scaleway/sdk';

/** Plain (non-secret) variables copied from this shell into the job definition when set. */
export const JOB_PLAIN_ENV = [
  'KLOSET_RESOURCES',
  'KLOSET_API_URL',
  'KLOSET_S3_ENDPOINT',
  'KLOSET_SQS_ENDPOINT',
  'KLOSET_SHIP_QUEUE_URL',
  'KLOSET_IMPORT_QUEUE_URL',
  'KLOSET_SQS_ACCESS_KEY',
  'KLOSET_INLINE_MAX_BYTES',
  'KLOSET_STAGE_DEADLINES',
] as const;
/** Secret variables: only ever attached as Secret Manager references. */
export const JOB_SECRET_ENV = ['KLOSET_SECRET_KEY', 'KLOSET_PASSPHRASE', 'KLOSET_SQS_SECRET_KEY'] as const;

export const JOB_TIMEOUT = '86400s';
const NAME = /^[A-Za-z0-9-_]{3,50}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface SecretRef {
  envVarName: string;
  secretManagerId: string;
  secretManagerVersion: string;
}

export interface DeployJobOptions {
  image: string;
  name: string;
  cpu: number;
  memory: number;
  command: string;
  secrets: SecretRef[];
  /** Copy the secret variables from this shell as plain variables (local Scaleway only). */
  plainSecrets?: boolean;
}

type JobsApi = InstanceType<typeof Jobs.v1alpha1.API>;
type JobDefinition = Awaited<ReturnType<JobsApi['getJobDefinition']>>;

class UsageError extends Error {}

export function parseSecret(spec: string): SecretRef {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)=([0-9a-fA-F-]{36})(?::([A-Za-z0-9_-]+))?$/.exec(spec);
  if (!m || !UUID.test(m[2]!)) {
    throw new UsageError(`--secret ${spec}: expected ENV_NAME=<secret manager id (UUID)>[:<revision, default latest>]`);
  }
  if (/^SCW_SLS/i.test(m[1]!)) throw new UsageError(`--secret ${spec}: env names starting with SCW_SLS are reserved on Serverless Jobs`);
  return { envVarName: m[1]!, secretManagerId: m[2]!.toLowerCase(), secretManagerVersion: m[3] ?? 'latest' };
}

export function jobEnvironment(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of JOB_PLAIN_ENV) {
    const v = env[name];
    if (v) out[name] = v;
  }
  return out;
}

/** The secret variables the job needs: the defaults plus every env:NAME that KLOSET_RESOURCES references. */
export function secretNames(env: NodeJS.ProcessEnv = process.env): string[] {
  const names = new Set<string>(JOB_SECRET_ENV);
  try {
    const resources = JSON.parse(env.KLOSET_RESOURCES ?? '[]') as unknown;
    if (Array.isArray(resources)) {
      for (const r of resources as Record<string, unknown>[]) {
        for (const ref of [r?.secretKey, r?.storePassphrase]) {
          const m = typeof ref === 'string' ? /^env:([A-Za-z_][A-Za-z0-9_]*)$/.exec(ref) : null;
          if (m) names.add(m[1]!);
        }
      }
    }
  } catch {
    // KLOSET_RESOURCES is validated by the job itself; nothing more to collect here.
  }
  return [...names];
}

function operatorClient(env: NodeJS.ProcessEnv) {
  const missing = ['SCW_ACCESS_KEY', 'SCW_SECRET_KEY', 'SCW_DEFAULT_PROJECT_ID'].filter((n) => !env[n]);
  if (missing.length) throw new UsageError(`missing environment variable(s): ${missing.join(', ')} (the operator's Scaleway API key)`);
  const region = env.SCW_DEFAULT_REGION || 'fr-par';
  const apiURL = env.KLOSET_API_URL || env.SCW_API_URL;
  const client = createClient({
    accessKey: env.SCW_ACCESS_KEY!,
    secretKey: env.SCW_SECRET_KEY!,
    defaultProjectId: env.SCW_DEFAULT_PROJECT_ID!,
    defaultRegion: region as never,
    ...(apiURL ? { apiURL: apiURL.replace(/\/+$/, '') } : {}),
  });
  return { api: new Jobs.v1alpha1.API(client), projectId: env.SCW_DEFAULT_PROJECT_ID!, region };
}

export async function listDefinitions(api: JobsApi, projectId: string): Promise<JobDefinition[]> {
  return api.listJobDefinitions({ projectId, pageSize: 100 }).all();
}

async function syncSecrets(api: JobsApi, jobDefinitionId: string, wanted: SecretRef[], log: (s: string) => void): Promise<void> {
  if (wanted.length === 0) return;
  const { secrets: existing } = await api.listJobDefinitionSecrets({ jobDefinitionId });
  const toCreate: SecretRef[] = [];
  for (const w of wanted) {
    const cur = existing.find((s) => s.envVar?.name === w.envVarName);
    if (!cur) {
      toCreate.push(w);
    } else if (cur.secretManagerId !== w.secretManagerId) {
      await api.deleteJobDefinitionSecret({ jobDefinitionId, secretId: cur.secretId });
      toCreate.push(w);
    } else if (cur.secretManagerVersion !== w.secretManagerVersion) {
      await api.updateJobDefinitionSecret({
        jobDefinitionId,
        secretId: cur.secretId,
        secretManagerVersion: w.secretManagerVersion,
        envVarName: w.envVarName,
      });
      log(`secret ${w.envVarName}: revision ${w.secretManagerVersion}`);
    }
  }
  if (toCreate.length) {
    await api.createJobDefinitionSecrets({
      jobDefinitionId,
      secrets: toCreate.map((s) => ({
        secretManagerId: s.secretManagerId,
        secretManagerVersion: s.secretManagerVersion,
        envVarName: s.envVarName,
      })),
    });
    for (const s of toCreate) log(`secret ${s.envVarName}: ${s.secretManagerId} (${s.secretManagerVersion})`);
  }
}

/** Creates the definition, or updates the one with the same name; returns it and whether it was created. */
export async function deployJob(
  opts: DeployJobOptions,
  env: NodeJS.ProcessEnv = process.env,
  log: (s: string) => void = (s) => console.error(s),
): Promise<{ definition: JobDefinition; created: boolean }> {
  if (!NAME.test(opts.name)) throw new UsageError(`--name ${opts.name}: must match ${NAME}`);
  if (!opts.image) throw new UsageError('--image is required (e.g. rg.fr-par.scw.cloud/<namespace>/scw-kloset-job:<tag>)');
  if (!Number.isInteger(opts.cpu) || opts.cpu < 1 || opts.cpu > 6000) throw new UsageError('--cpu: 1 to 6000 mvCPU');
  if (!Number.isInteger(opts.memory) || opts.memory < 1 || opts.memory > 16384) throw new UsageError('--memory: 1 to 16384 MiB');
  const { api, projectId, region } = operatorClient(env);
  const environmentVariables = jobEnvironment(env);
  if (!environmentVariables.KLOSET_RESOURCES) log('warning: KLOSET_RESOURCES is not set: the job definition gets no resources');
  const unmapped = secretNames(env).filter((n) => !opts.secrets.some((s) => s.envVarName === n));
  if (opts.plainSecrets) {
    for (const n of unmapped) if (env[n]) environmentVariables[n] = env[n]!;
    log(`warning: --plain-secrets: ${unmapped.filter((n) => env[n]).join(', ') || 'nothing'} stored as plain variables in the definition`);
  } else if (unmapped.length) {
    log(`warning: no --secret for ${unmapped.join(', ')}: the job reads them from its definition's environment and will fail without them`);
  }
  const fields = {
    cpuLimit: opts.cpu,
    memoryLimit: opts.memory,
    imageUri: opts.image,
    command: opts.command,
    description: 'scw-kloset: streams QCOW2 images between the staging bucket and the Kloset store',
    environmentVariables,
    jobTimeout: JOB_TIMEOUT,
  };
  const existing = (await listDefinitions(api, projectId)).filter((d) => d.name === opts.name);
  if (existing.length > 1) {
    throw new Error(`${existing.length} job definitions are named ${opts.name} in project ${projectId}: ${existing.map((d) => d.id).join(', ')}; delete the extra ones`);
  }
  let definition: JobDefinition;
  let created: boolean;
  if (existing[0]) {
    definition = await api.updateJobDefinition({ jobDefinitionId: existing[0].id, name: opts.name, ...fields });
    created = false;
  } else {
    definition = await api.createJobDefinition({ name: opts.name, projectId, ...fields });
    created = true;
  }
  await syncSecrets(api, definition.id, opts.secrets, log);
  log(`${created ? 'created' : 'updated'} job definition ${definition.name} (${definition.id}) in ${region}: ${definition.imageUri}, ${definition.cpuLimit} mvCPU, ${definition.memoryLimit} MiB, timeout ${definition.jobTimeout ?? JOB_TIMEOUT}`);
  return { definition, created };
}

async function cli(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      image: { type: 'string' },
      name: { type: 'string', default: 'scw-kloset-ship' },
      cpu: { type: 'string', default: '2000' },
      memory: { type: 'string', default: '4096' },
      command: { type: 'string', default: '' },
      secret: { type: 'string', multiple: true, default: [] },
      list: { type: 'boolean', default: false },
      'plain-secrets': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      'usage: npx tsx scripts/deploy-job.ts --image <registry image> [--name scw-kloset-ship] [--cpu 2000] [--memory 4096]\n' +
        '         [--command "node main.mjs"] [--secret ENV_NAME=<secret-manager-id>[:<revision>]]... [--plain-secrets] [--json]\n' +
        '       npx tsx scripts/deploy-job.ts --list [--json]\n' +
        'env: SCW_ACCESS_KEY SCW_SECRET_KEY SCW_DEFAULT_PROJECT_ID [SCW_DEFAULT_REGION] [KLOSET_API_URL]; ' +
        `copied into the job: ${JOB_PLAIN_ENV.join(' ')} (when set)`,
    );
    return 0;
  }
  if (values.list) {
    const { api, projectId } = operatorClient(process.env);
    const defs = await listDefinitions(api, projectId);
    if (values.json) console.log(JSON.stringify(defs.map(({ id, name, imageUri, cpuLimit, memoryLimit, jobTimeout }) => ({ id, name, imageUri, cpuLimit, memoryLimit, jobTimeout }))));
    else for (const d of defs) console.log(`${d.id}  ${d.name}  ${d.imageUri}  ${d.cpuLimit} mvCPU  ${d.memoryLimit} MiB  ${d.jobTimeout ?? ''}`);
    return 0;
  }
  const { definition, created } = await deployJob({
    image: values.image ?? '',
    name: values.name,
    cpu: Number(values.cpu),
    memory: Number(values.memory),
    command: values.command,
    secrets: values.secret.map(parseSecret),
    plainSecrets: values['plain-secrets'],
  });
  if (values.json) console.log(JSON.stringify({ id: definition.id, name: definition.name, created }));
  else console.log(`KLOSET_JOB_DEFINITION_ID=${definition.id}`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    process.exitCode = await cli(process.argv.slice(2));
  } catch (err) {
    const e = err as Error & { status?: number; body?: unknown };
    console.error(`deploy-job: ${e instanceof UsageError ? '' : `${e.name}: `}${e.message}`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  }
}
