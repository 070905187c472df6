// Configuration validation: every problem reported with its field name; secrets resolved from the
// environment, never literal, and never serialized with a resource.
import { describe, expect, it } from 'vitest';
import { ConfigError, parseResources, platformFromEnv, resourcesFromEnv, type ResourceInput } from '../../lib/pipeline/config.js';

const SECRET = '0b7e5b1c-6b0a-4c5e-9d47-1c1d1e1f2a3b';
const PASSPHRASE = 'correct horse battery staple';
const ENV = { KLOSET_SECRET_KEY: SECRET, KLOSET_PASSPHRASE: PASSPHRASE };

const good: ResourceInput = {
  name: 'web',
  accessKey: 'SCWABCDEFGHJKMNPQRST',
  endpoint: '11111111-2222-4333-8444-555555555555',
  bucket: 'my-staging-bucket',
  projectId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee',
  zone: 'fr-par-1',
  environment: 'production',
  dataClass: 'critical',
  store: 's3://my-store/kloset',
  schedule: '0 3 * * *',
};

function problems(input: unknown, env: NodeJS.ProcessEnv = ENV): { field: string; message: string }[] {
  try {
    parseResources(input, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

const fieldsOf = (input: unknown, env?: NodeJS.ProcessEnv) => problems(input, env).map((p) => p.field).sort();

describe('parseResources', () => {
  it('accepts a valid resource and resolves its secrets from the environment', () => {
    const [r] = parseResources([good], ENV);
    expect(r).toMatchObject({ name: 'web', zone: 'fr-par-1', environment: 'production', dataClass: 'critical' });
    expect(r!.secretKey).toBe(SECRET);
    expect(r!.storePassphrase).toBe(PASSPHRASE);
    expect(r!.secretSources).toEqual({ secretKey: 'KLOSET_SECRET_KEY', storePassphrase: 'KLOSET_PASSPHRASE' });
  });

  it('resolves named env references', () => {
    const [r] = parseResources([{ ...good, secretKey: 'env:WEB_SECRET', storePassphrase: 'env:WEB_PASS' }], { WEB_SECRET: SECRET, WEB_PASS: 'other' });
    expect(r!.secretKey).toBe(SECRET);
    expect(r!.storePassphrase).toBe('other');
  });

  it('never serializes secrets', () => {
    const [r] = parseResources([good], ENV);
    for (const text of [JSON.stringify(r), JSON.stringify({ ...r }), JSON.stringify([r]), String(Object.values(r!))]) {
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(PASSPHRASE);
    }
    expect(Object.keys(r!)).not.toContain('secretKey');
    expect(Object.keys(r!)).not.toContain('storePassphrase');
  });

  it('reports each malformed field by name, all at once', () => {
    const bad = {
      ...good,
      name: 'Web Server',
      accessKey: 'AKIAIOSFODNN7EXAMPLE',
      endpoint: 'not-a-uuid',
      bucket: 'Bad_Bucket',
      projectId: '1234',
      zone: 'fr-par-9',
      schedule: 'every day',
    };
    expect(fieldsOf([bad])).toEqual(
      ['accessKey', 'bucket', 'endpoint', 'name', 'projectId', 'schedule', 'zone'].map((f) => `resources[0] (Web Server).${f}`),
    );
    const msgs = Object.fromEntries(problems([bad]).map((p) => [p.field.replace(/^.*\./, ''), p.message]));
    expect(msgs.endpoint).toMatch(/UUID/);
    expect(msgs.zone).toMatch(/fr-par-1/);
    expect(msgs.accessKey).toMatch(/SCW/);
  });

  it('applies the bucket name rules', () => {
    for (const bucket of ['ab', 'a'.repeat(64), 'UPPER', '-leading', 'trailing-', 'two..dots', '192.168.1.10', 'under_score']) {
      expect(fieldsOf([{ ...good, bucket }]), bucket).toEqual(['resources[0] (web).bucket']);
    }
    for (const bucket of ['abc', 'a'.repeat(63), 'my.bucket-1', '1bucket']) expect(() => parseResources([{ ...good, bucket }], ENV), bucket).not.toThrow();
  });

  it('checks the access key format', () => {
    for (const accessKey of ['SCW123', 'scwabcdefghjkmnpqrst', 'SCWABCDEFGHJKMNPQRST1', 'XYZABCDEFGHJKMNPQRST']) {
      expect(fieldsOf([{ ...good, accessKey }]), accessKey).toEqual(['resources[0] (web).accessKey']);
    }
  });

  it('refuses literal secrets: they must be env:NAME references', () => {
    const p = problems([{ ...good, secretKey: SECRET, storePassphrase: PASSPHRASE }]);
    expect(p.map((x) => x.field).sort()).toEqual(['resources[0] (web).secretKey', 'resources[0] (web).storePassphrase']);
    for (const x of p) {
      expect(x.message).toMatch(/env:NAME/);
      // The message does not repeat the secret it refused.
      expect(x.message).not.toContain(SECRET);
      expect(x.message).not.toContain(PASSPHRASE);
    }
  });

  it('reports missing environment variables by field and variable name', () => {
    const p = problems([{ ...good, secretKey: 'env:MISSING_SECRET' }], { KLOSET_PASSPHRASE: PASSPHRASE });
    expect(p).toEqual([{ field: 'resources[0] (web).secretKey', message: 'environment variable MISSING_SECRET is not set' }]);
    expect(fieldsOf([good], {})).toEqual(['resources[0] (web).secretKey', 'resources[0] (web).storePassphrase']);
    // A secret key that is not a Scaleway secret key (a UUID).
    expect(fieldsOf([good], { ...ENV, KLOSET_SECRET_KEY: 'hunter2' })).toEqual(['resources[0] (web).secretKey']);
    expect(JSON.stringify(problems([good], { ...ENV, KLOSET_SECRET_KEY: 'hunter2' }))).not.toContain('hunter2');
  });

  it('reports required fields, duplicates, and problems of several resources together', () => {
    expect(fieldsOf([{ name: 'x' }])).toEqual(
      ['accessKey', 'bucket', 'endpoint', 'projectId', 'store', 'zone'].map((f) => `resources[0] (x).${f}`),
    );
    for (const p of problems([{ name: 'x' }])) expect(p.message, p.field).toMatch(p.field.endsWith('.zone') ? /must be one of fr-par-1/ : /^is required$/);
    expect(fieldsOf([good, { ...good }])).toEqual(['resources[1] (web).name']);
    expect(fieldsOf([good, { ...good, name: 'db', zone: 'mars-1' }, { ...good, name: 'api', bucket: 'a..b' }])).toEqual([
      'resources[1] (db).zone',
      'resources[2] (api).bucket',
    ]);
    expect(fieldsOf([])).toEqual(['resources']);
    expect(fieldsOf({ not: 'an array' })).toEqual(['resources']);
  });

  it('reads resources from KLOSET_RESOURCES, naming it when missing or not JSON', async () => {
    const one = await resourcesFromEnv({ ...ENV, KLOSET_RESOURCES: JSON.stringify([good]) });
    expect(one.map((r) => r.name)).toEqual(['web']);
    for (const env of [{ ...ENV }, { ...ENV, KLOSET_RESOURCES: '[{' }]) {
      const err = await resourcesFromEnv(env).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems.map((p) => p.field)).toEqual(['KLOSET_RESOURCES']);
    }
  });
});

describe('platformFromEnv', () => {
  it('has defaults', () => {
    const p = platformFromEnv({});
    expect(p.inlineMaxBytes).toBe(1024 ** 3);
    expect(p.deadlines).toEqual({});
    expect(p.sqs).toBeNull();
  });

  it('parses settings', () => {
    const p = platformFromEnv({
      KLOSET_API_URL: 'http://127.0.0.1:1234',
      KLOSET_SQS_ACCESS_KEY: 'SCWABCDEFGHJKMNPQRST',
      KLOSET_SQS_SECRET_KEY: SECRET,
      KLOSET_SHIP_QUEUE_URL: 'https://sqs.mnq.fr-par.scaleway.com/project/ship',
      KLOSET_JOB_DEFINITION_ID: '11111111-2222-4333-8444-555555555555',
      KLOSET_INLINE_MAX_BYTES: '0',
      KLOSET_STAGE_DEADLINES: '{"exporting": 60}',
    });
    expect(p.endpoints.apiUrl).toBe('http://127.0.0.1:1234');
    expect(p.sqs).toEqual({ accessKeyId: 'SCWABCDEFGHJKMNPQRST', secretAccessKey: SECRET });
    expect(p.inlineMaxBytes).toBe(0);
    expect(p.deadlines).toEqual({ exporting: 60 });
  });

  it('reports every malformed setting by its variable name', () => {
    let err: unknown;
    try {
      platformFromEnv({
        KLOSET_API_URL: 'not a url',
        KLOSET_SHIP_QUEUE_URL: 'queue',
        KLOSET_JOB_DEFINITION_ID: 'job-1',
        KLOSET_INLINE_MAX_BYTES: '-1',
        KLOSET_STAGE_DEADLINES: '{"exporting": -5}',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.field).sort()).toEqual([
      'KLOSET_API_URL',
      'KLOSET_INLINE_MAX_BYTES',
      'KLOSET_JOB_DEFINITION_ID',
      'KLOSET_SHIP_QUEUE_URL',
      'KLOSET_STAGE_DEADLINES',
    ]);
    expect(() => platformFromEnv({ KLOSET_STAGE_DEADLINES: 'soon' })).toThrow(/KLOSET_STAGE_DEADLINES: must be a JSON object/);
  });
});
