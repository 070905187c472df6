// Refusals over HTTP: private functions without (or with a wrong) X-Auth-Token, malformed bodies,
// invalid fields, unknown resources and snapshots, a volume that does not exist, wrong methods.
// Each is refused with the right status and changes nothing: no run record, no Block snapshot.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalPlatform, LocalResource } from '../../emulator/platform.js';
import { allSnapshots, allVolumes, makeImage, runObjects, startPlatform, stagingObjects, tempDir } from './helpers.js';

describe('HTTP refusals change nothing', () => {
  let plat: LocalPlatform;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let resources: LocalResource[];

  beforeAll(async () => {
    tmp = await tempDir();
    plat = await startPlatform();
    const img = join(tmp.dir, 'small.img');
    await makeImage(img, 16, { 'etc/hostname': 'small\n' });
    const vol = await plat.local.emulator.seedVolume({ name: 'small', fromFile: img });
    resources = [
      { name: 'web', volumeId: vol.id },
      // A resource whose volume does not exist in its zone.
      { name: 'ghost', volumeId: randomUUID() },
    ];
    await plat.setResources(resources);
  });

  afterAll(async () => {
    await plat?.stop();
    await tmp?.remove();
  });

  const world = async () => ({
    runs: await runObjects(plat),
    staging: await stagingObjects(plat),
    snapshots: (await allSnapshots(plat)).map((s) => s.id).sort(),
    volumes: (await allVolumes(plat)).map((v) => v.id).sort(),
  });

  /** Calls, checks the status, and checks that nothing changed in the bucket or in Block Storage. */
  async function refused(name: string, body: unknown, opts: Parameters<LocalPlatform['functions']['call']>[2], status: number) {
    const before = await world();
    const res = await plat.functions.call(name, body, opts);
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    expect(await world()).toEqual(before);
    return res.body;
  }

  const restoreBody = (over: Record<string, unknown> = {}, target: Record<string, unknown> = {}) => ({
    resource: 'web',
    snapshot: 'abcd1234',
    target: { volumeName: 'restored', ...target },
    ...over,
  });

  it('without a token or with a wrong one: 401, before the function runs', async () => {
    for (const name of ['trigger-export', 'restore-upload', 'poll-export', 'ship-to-kloset', 'import-volume']) {
      for (const token of [null, '', randomUUID(), `${plat.local.secretKey}x`]) {
        const body = await refused(name, name === 'restore-upload' ? restoreBody() : { resource: 'web' }, { token }, 401);
        expect(JSON.stringify(body)).toMatch(/X-Auth-Token/);
      }
    }
  });

  it('a body that is not JSON: 400', async () => {
    for (const name of ['trigger-export', 'restore-upload']) {
      const body = await refused(name, undefined, { raw: '{"resource": "web"' }, 400);
      expect(body.error).toMatch(/JSON/);
    }
  });

  it('missing or invalid fields: 400 naming each field', async () => {
    const fields = async (name: string, body: unknown) => {
      const b = await refused(name, body, {}, 400);
      return (b.problems as { field: string; message: string }[]).map((p) => p.field).sort();
    };
    expect(await fields('trigger-export', {})).toEqual(['resource']);
    expect(await fields('trigger-export', { resource: 'web', trigger: 'hourly' })).toEqual(['trigger']);
    expect(await fields('trigger-export', { resource: 'web', idempotencyKey: 'has spaces' })).toEqual(['idempotencyKey']);
    expect(await fields('restore-upload', {})).toEqual(['resource', 'snapshot', 'target']);
    expect(await fields('restore-upload', restoreBody({}, { zone: 'fr-par-9' }))).toEqual(['target.zone']);
    expect(await fields('restore-upload', restoreBody({}, { perfIops: 7000 }))).toEqual(['target.perfIops']);
    expect(await fields('restore-upload', restoreBody({}, { size: -5 }))).toEqual(['target.size']);
    expect(await fields('restore-upload', restoreBody({}, { volumeName: '' }))).toEqual(['target.volumeName']);
    expect(await fields('restore-upload', restoreBody({ snapshot: 'not-hex!' }))).toEqual(['snapshot']);
    expect(await fields('restore-upload', restoreBody({ snapshot: 'abcd' }, { zone: 'nowhere', perfIops: 1 }))).toEqual(['target.perfIops', 'target.zone']);
    // A zone of another region than the staging bucket's: Scaleway imports only from its region.
    expect(await fields('restore-upload', restoreBody({}, { zone: 'nl-ams-1' }))).toEqual(['target.zone']);
    // Queue messages are validated too (a malformed message is not retried into a second run).
    expect(await fields('ship-to-kloset', { type: 'import', runId: 'x', resource: 'web' })).toEqual(['type']);
    expect(await fields('import-volume', { type: 'import', resource: 'web' })).toEqual(['runId']);
  });

  it('an unknown resource, run or snapshot: 404 naming the field', async () => {
    const field = async (name: string, body: unknown) => {
      const b = await refused(name, body, {}, 404);
      return b.problems.map((p: { field: string }) => p.field);
    };
    expect(await field('trigger-export', { resource: 'nope' })).toEqual(['resource']);
    expect(await field('restore-upload', restoreBody({ resource: 'nope' }))).toEqual(['resource']);
    expect(await field('restore-upload', restoreBody({ snapshot: 'abcdef0123' }))).toEqual(['snapshot']);
    expect(await field('ship-to-kloset', { type: 'ship', runId: 'web-backup-none', resource: 'web' })).toEqual(['runId']);
    expect(await field('import-volume', { type: 'import', runId: 'web-restore-none', resource: 'web' })).toEqual(['runId']);
  });

  it('a resource whose volume does not exist: 422 naming endpoint, no run', async () => {
    const b = await refused('trigger-export', { resource: 'ghost' }, {}, 422);
    expect(b.problems[0].field).toBe('endpoint');
    expect(b.problems[0].message).toMatch(/not found in zone fr-par-1/);
    // The same through a cron tick.
    await refused('trigger-export', { resource: 'ghost', trigger: 'cron' }, {}, 422);
  });

  it('GET and other methods: 405', async () => {
    for (const name of ['trigger-export', 'restore-upload', 'poll-export']) {
      for (const method of ['GET', 'DELETE', 'PATCH']) await refused(name, undefined, { method }, 405);
    }
  });

  it('the same valid request is accepted (the refusals above were not for want of a working set-up)', async () => {
    const before = await runObjects(plat);
    const res = await plat.functions.call('trigger-export', { resource: 'web' });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect((await runObjects(plat)).length).toBeGreaterThan(before.length);
  });
});
