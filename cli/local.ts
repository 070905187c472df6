// `scw-kloset local`: runs the whole local Scaleway (Block Storage + Jobs API, S3, SQS) until
// SIGINT/SIGTERM, after printing the endpoints and credentials to use.
import type { Command } from 'commander';
import { UserError } from './errors.js';
import { FAST_TIMINGS } from '../emulator/context.js';
import type { ErrorRule } from '../emulator/faults.js';

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UserError(`invalid port: ${value}`);
  return n;
}

/** `STATUS:SHARE[:METHOD[:PATH_REGEX]]`, e.g. `429:0.2` or `503:0.5:POST:/export`. */
function parseFault(spec: string, previous: ErrorRule[] = []): ErrorRule[] {
  const [status, share, method, ...path] = spec.split(':');
  const rule: ErrorRule = {
    status: Number(status),
    share: share === undefined || share === '' ? 1 : Number(share),
    method: method || undefined,
    path: path.length ? path.join(':') : undefined,
  };
  if (!(rule.status === 429 || (rule.status >= 500 && rule.status <= 599))) {
    throw new UserError(`--fault: status must be 429 or 5xx in "${spec}"`);
  }
  if (!(rule.share! >= 0 && rule.share! <= 1)) throw new UserError(`--fault: share must be within 0..1 in "${spec}"`);
  return [...previous, rule];
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`not a whole number >= 0: ${value}`);
  return n;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function registerLocalCommand(program: Command): void {
  program
    .command('local')
    .description('Run a local Scaleway (Block Storage and Serverless Jobs APIs, S3, SQS) until interrupted')
    .option('--dir <dir>', 'data directory kept across restarts (default: a temporary directory)')
    .option('--port <port>', 'port of the Scaleway API (default: any free port)', parsePort)
    .option('--s3-port <port>', 'port of the S3/SQS server (default: any free port)', parsePort)
    .option('--json', 'print exactly one JSON line with the endpoints and credentials')
    .option('--fast', 'short transition times (50 ms) instead of a few seconds')
    .option('--fault <spec>', 'answer a share of calls with an error: STATUS:SHARE[:METHOD[:PATH_REGEX]] (repeatable)', parseFault)
    .option('--fail-exports <n>', 'the next N snapshot exports end in error', parseCount)
    .option('--slow-exports <ms>', 'exports take at least this many more milliseconds', parseCount)
    .option('--deny <action>', 'answer permissions_denied to an action, e.g. exportSnapshotToObjectStorage (repeatable)', collect)
    .action(async (opts: {
      dir?: string;
      port?: number;
      s3Port?: number;
      json?: boolean;
      fast?: boolean;
      fault?: ErrorRule[];
      failExports?: number;
      slowExports?: number;
      deny?: string[];
    }) => {
      const { startLocalScaleway } = await import('../emulator/local.js');
      let local;
      try {
        local = await startLocalScaleway({
          dir: opts.dir,
          port: opts.port,
          s3Port: opts.s3Port,
          timings: opts.fast ? FAST_TIMINGS : undefined,
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'EADDRINUSE') throw new UserError(`port already in use: ${e.message}`);
        throw err;
      }
      const faults = local.emulator.faults;
      for (const rule of opts.fault ?? []) faults.addErrors(rule);
      if (opts.failExports !== undefined) faults.failNextExports(opts.failExports);
      if (opts.slowExports !== undefined) faults.slowExports(opts.slowExports);
      for (const action of opts.deny ?? []) faults.denyAction(action);

      const info = {
        apiUrl: local.apiUrl,
        s3Endpoint: local.s3Endpoint,
        sqsEndpoint: local.sqsEndpoint,
        accessKey: local.accessKey,
        secretKey: local.secretKey,
        projectId: local.projectId,
        organizationId: local.organizationId,
        region: local.region,
        zone: local.zone,
        bucket: local.bucket,
        queueUrls: local.queueUrls,
        dir: local.dir,
        adminUrl: `${local.apiUrl}/_emulator`,
      };
      if (opts.json) {
        process.stdout.write(JSON.stringify(info) + '\n');
      } else {
        process.stdout.write(
          [
            'Local Scaleway is running.',
            `  Scaleway API (apiURL)   ${info.apiUrl}`,
            `  S3 endpoint             ${info.s3Endpoint}`,
            `  SQS endpoint            ${info.sqsEndpoint}`,
            `  region / zone           ${info.region} / ${info.zone}`,
            `  staging bucket          ${info.bucket}`,
            ...Object.entries(info.queueUrls).map(([name, url]) => `  queue ${name.padEnd(17)} ${url}`),
            `  access key              ${info.accessKey}`,
            `  secret key              ${info.secretKey}`,
            `  project id              ${info.projectId}`,
            `  data directory          ${info.dir}`,
            `  faults (admin)          ${info.adminUrl}/faults  (X-Auth-Token: the secret key)`,
            '',
            'In a shell:',
            `  export SCW_ACCESS_KEY=${info.accessKey} SCW_SECRET_KEY=${info.secretKey}`,
            `  export SCW_DEFAULT_PROJECT_ID=${info.projectId} SCW_DEFAULT_REGION=${info.region} SCW_DEFAULT_ZONE=${info.zone}`,
            `  export SCW_API_URL=${info.apiUrl} KLOSET_S3_ENDPOINT=${info.s3Endpoint}`,
            '',
            'For `scw-kloset backup/restore/runs` (resources in a JSON file, see the README):',
            `  export KLOSET_API_URL=${info.apiUrl} KLOSET_S3_ENDPOINT=${info.s3Endpoint} KLOSET_SECRET_KEY=${info.secretKey}`,
            `  export AWS_ACCESS_KEY_ID=${info.accessKey} AWS_SECRET_ACCESS_KEY=${info.secretKey} KLOSET_PASSPHRASE=...`,
            '',
            'Press Ctrl-C to stop.',
            '',
          ].join('\n'),
        );
      }

      await new Promise<void>((resolve) => {
        const onSignal = () => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
      if (!opts.json) process.stderr.write('Stopping the local Scaleway...\n');
      await local.stop();
      process.exit(0);
    });
}
