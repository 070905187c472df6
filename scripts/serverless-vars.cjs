// Values for serverless.yml computed from the operator's environment, loaded by Serverless 3 through
// `${file(./scripts/serverless-vars.cjs):<key>}`. CommonJS because Serverless 3 `require`s it.
//
// - env: the plain KLOSET_* variables; optional ones are left out when unset (the functions'
//   config schema rejects empty strings).
// - secret: KLOSET_SECRET_KEY, KLOSET_PASSPHRASE, KLOSET_SQS_SECRET_KEY plus every other `env:NAME`
//   that a resource in KLOSET_RESOURCES references.
// - triggerExportEvents: one cron trigger per resource with a schedule, input
//   {"resource": name, "trigger": "cron"}.
// - shipQueue / importQueue: the queue names (last path segment of the queue URLs) for SQS triggers.
//
// `serverless deploy` refuses to start while a required variable is missing or invalid, naming every
// problem. Other commands (`package`, `print`) build with placeholders: the zip does not depend on
// these values, and `serverless deploy` packages again with the real ones.
'use strict';

const REQUIRED_ENV = [
  'KLOSET_RESOURCES',
  'KLOSET_SHIP_QUEUE_URL',
  'KLOSET_IMPORT_QUEUE_URL',
  'KLOSET_JOB_DEFINITION_ID',
  'KLOSET_SQS_ACCESS_KEY',
];
const OPTIONAL_ENV = [
  'KLOSET_API_URL',
  'KLOSET_S3_ENDPOINT',
  'KLOSET_SQS_ENDPOINT',
  'KLOSET_INLINE_MAX_BYTES',
  'KLOSET_STAGE_DEADLINES',
];
const REQUIRED_SECRETS = ['KLOSET_SECRET_KEY', 'KLOSET_PASSPHRASE', 'KLOSET_SQS_SECRET_KEY'];
const PLACEHOLDER = 'unset-at-package-time';

// What serverless-scaleway-functions 0.5.0 accepts at deploy time (checked against its validator):
// each of the 5 cron fields is `*`, `N`, `N-N`, `N/N` or `N,N,...` (no `*/N`); queue and trigger names.
const CRON_FIELD = /^(\*|\d+|\d+[-/]\d+|(\d+,)+\d+)$/;
const QUEUE_NAME = /^[a-zA-Z0-9-_.]{2,80}$/;

function command() {
  // argv: node, .../bin/serverless(.js), <command> [options]
  return process.argv.slice(2).find((a) => !a.startsWith('-')) ?? '';
}

function compute(env = process.env, strict = command() === 'deploy') {
  const problems = [];
  const value = (name) => {
    const v = env[name];
    if (v === undefined || v === '') {
      problems.push(`${name} is not set`);
      return PLACEHOLDER;
    }
    return v;
  };

  const out = { env: {}, secret: {}, triggerExportEvents: [], shipQueue: 'unset-ship-queue', importQueue: 'unset-import-queue' };
  for (const name of REQUIRED_ENV) out.env[name] = value(name);
  for (const name of OPTIONAL_ENV) if (env[name]) out.env[name] = env[name];
  for (const name of REQUIRED_SECRETS) out.secret[name] = value(name);

  let resources = [];
  if (env.KLOSET_RESOURCES) {
    try {
      resources = JSON.parse(env.KLOSET_RESOURCES);
      if (!Array.isArray(resources)) throw new Error('not a JSON array');
    } catch (err) {
      problems.push(`KLOSET_RESOURCES is not a JSON array of resources: ${err.message}`);
      resources = [];
    }
  }
  for (const [i, r] of resources.entries()) {
    const label = `KLOSET_RESOURCES[${i}]${r && typeof r.name === 'string' ? ` (${r.name})` : ''}`;
    if (!r || typeof r !== 'object' || typeof r.name !== 'string') {
      problems.push(`${label}: a resource needs a name`);
      continue;
    }
    for (const field of ['secretKey', 'storePassphrase']) {
      const ref = r[field];
      if (ref === undefined) continue; // defaults to KLOSET_SECRET_KEY / KLOSET_PASSPHRASE
      const m = typeof ref === 'string' ? /^env:([A-Za-z_][A-Za-z0-9_]*)$/.exec(ref) : null;
      if (!m) {
        problems.push(`${label}.${field} must be an env:NAME reference`);
        continue;
      }
      if (/^SCW_/i.test(m[1])) problems.push(`${label}.${field}: ${m[1]} starts with SCW_, reserved on Scaleway Functions`);
      else if (!(m[1] in out.secret)) out.secret[m[1]] = value(m[1]);
    }
    if (r.schedule !== undefined) {
      const fields = String(r.schedule).trim().split(/\s+/);
      if (fields.length !== 5 || !fields.every((f) => CRON_FIELD.test(f))) {
        problems.push(
          `${label}.schedule "${r.schedule}": serverless-scaleway-functions accepts 5 fields of *, N, N-N, N/N or N,N (write "0,15,30,45" rather than "*/15")`,
        );
        continue;
      }
      // trigger: 'cron' lets trigger-export map overlapping ticks of one minute to one run.
      out.triggerExportEvents.push({ schedule: { rate: fields.join(' '), input: { resource: r.name, trigger: 'cron' } } });
    }
  }

  const queueName = (name) => {
    const url = env[name];
    if (!url) return null;
    let last;
    try {
      last = new URL(url).pathname.split('/').filter(Boolean).pop();
    } catch {
      last = undefined;
    }
    if (!last || !QUEUE_NAME.test(last)) {
      problems.push(`${name} (${url}) does not end with a queue name`);
      return null;
    }
    return last;
  };
  out.shipQueue = queueName('KLOSET_SHIP_QUEUE_URL') ?? out.shipQueue;
  out.importQueue = queueName('KLOSET_IMPORT_QUEUE_URL') ?? out.importQueue;

  if (problems.length && strict) {
    throw new Error(`serverless deploy needs these environment variables fixed:\n  - ${problems.join('\n  - ')}`);
  }
  return out;
}

module.exports = async () => compute();
module.exports.compute = compute;
