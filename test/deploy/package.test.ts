// The deployable package: the esbuild bundles, the job bundle, and the zip `serverless package` writes
// offline without credentials. Checks that each function in the zip imports on its own (no
// node_modules above it) and exports `handle`; that store code bundled the same way backs up and
// restores next to the functions of the zip and next to the job bundle, loading the natives shipped
// there (zstd-napi, @napi-rs/blake-hash, argon2), and fails without them; that the job bundle fails
// cleanly without its environment; that the zip holds only what must ship; and that the resolved
// serverless.yml passes serverless-scaleway-functions' own deploy-time validation.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { build } from 'esbuild';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';
import { COMMON, NATIVE_PACKAGES, ZSTD_BINDING, argon2Binding } from '../../scripts/bundle.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FUNCTIONS = ['trigger-export', 'poll-export', 'ship-to-kloset', 'restore-upload', 'import-volume'];
const ENTRIES = [...FUNCTIONS.map((f) => `functions/${f}.ts`), 'jobs/main.ts'];
const ready = ENTRIES.every((p) => existsSync(join(ROOT, p)));
const require = createRequire(import.meta.url);
/** The argon2 binding shipped (node-gyp-build's pick in node_modules/argon2), relative to its package. */
const ARGON2_BINDING = ready ? argon2Binding() : '';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** The environment of a machine without Scaleway credentials or scw-kloset configuration. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(SCW_|KLOSET_)/.test(k)) env[k] = v;
  return { ...env, SLS_TELEMETRY_DISABLED: '1', SLS_NOTIFICATIONS_MODE: 'off', HOME: process.env.HOME ?? tmpdir(), ...extra };
}

interface ZipEntry {
  name: string;
  size: number;
  data: () => Buffer;
}

/** Reads a zip's central directory (stored and deflated entries; no zip64: the package is small). */
function readZip(buf: Buffer): ZipEntry[] {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('not a zip file (no end of central directory)');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const entries: ZipEntry[] = [];
  for (let i = 0; i < count; i++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error(`bad central directory entry at ${p}`);
    const method = buf.readUInt16LE(p + 10);
    const csize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    entries.push({
      name,
      size,
      data: () => {
        if (buf.readUInt32LE(local) !== 0x04034b50) throw new Error(`bad local header for ${name}`);
        const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
        const raw = buf.subarray(start, start + csize);
        if (method === 0) return Buffer.from(raw);
        if (method === 8) return inflateRawSync(raw);
        throw new Error(`${name}: unsupported compression method ${method}`);
      },
    });
  }
  return entries;
}

describe.skipIf(!ready)('deployable package', () => {
  let work: string;
  let zipPath: string;
  let entries: ZipEntry[];
  let unpacked: string;
  /** The store check (store-check.ts) bundled like the functions. */
  let storeCheck: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'scw-kloset-package-'));
    const bundled = await run(process.execPath, ['--import', 'tsx', 'scripts/bundle.ts']);
    if (bundled.code !== 0) throw new Error(`scripts/bundle.ts failed (${bundled.code}):\n${bundled.stdout}\n${bundled.stderr}`);
    // Offline, without credentials. Serverless 3 always writes .serverless/<service>.zip (its zip
    // service ignores --package), so this is the same file `npm run package` writes.
    zipPath = join(ROOT, '.serverless', 'scw-kloset.zip');
    rmSync(zipPath, { force: true });
    const packaged = await run(process.execPath, [require.resolve('serverless/bin/serverless.js'), 'package'], { env: cleanEnv() });
    if (packaged.code !== 0) throw new Error(`serverless package failed (${packaged.code}):\n${packaged.stdout}\n${packaged.stderr}`);
    entries = readZip(readFileSync(zipPath));
    unpacked = join(work, 'unpacked');
    for (const e of entries) {
      if (e.name.endsWith('/')) continue;
      mkdirSync(dirname(join(unpacked, e.name)), { recursive: true });
      writeFileSync(join(unpacked, e.name), e.data());
    }
    storeCheck = join(work, 'store-check.js');
    await build({ ...COMMON, entryPoints: [join(ROOT, 'test/deploy/store-check.ts')], outfile: storeCheck });
  }, 180_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('writes a zip far under 100 MiB holding the five handlers, the natives and nothing else', () => {
    const size = readFileSync(zipPath).length;
    expect(size).toBeGreaterThan(0);
    expect(size).toBeLessThan(100 * 1024 * 1024);
    const names = entries.map((e) => e.name);
    for (const f of FUNCTIONS) expect(names).toContain(`dist/functions/${f}.js`);
    expect(names).toContain(`dist/node_modules/zstd-napi/${ZSTD_BINDING}`);
    expect(names).toContain('dist/node_modules/zstd-napi/binding.js');
    expect(names).toContain('dist/node_modules/zstd-napi/dist/index.js');
    expect(names).toContain('dist/node_modules/@napi-rs/blake-hash/index.js');
    expect(names).toContain('dist/node_modules/@napi-rs/blake-hash-linux-x64-gnu/blake.linux-x64-gnu.node');
    // argon2: its JS, its licence and the one binding node-gyp-build picks (no sources, no other
    // platform's prebuild, no second .node it could prefer), and its two run-time dependencies.
    const under = (dir: string) =>
      names.filter((n) => n.startsWith(`dist/node_modules/${dir}/`)).map((n) => n.slice(`dist/node_modules/${dir}/`.length));
    expect(under('argon2').sort()).toEqual(['LICENSE', 'argon2.cjs', 'package.json', ARGON2_BINDING].sort());
    expect(under('@phc/format').sort()).toEqual(['index.js', 'license', 'package.json']);
    expect(under('node-gyp-build').sort()).toEqual(['LICENSE', 'index.js', 'node-gyp-build.js', 'package.json']);
    // Only what the natives load at run time: no C sources, no build objects, no nested node_modules.
    const natives = Object.keys(NATIVE_PACKAGES).map((n) => n.replace(/[/.-]/g, '\\$&')).join('|');
    for (const n of names) {
      expect(n).toMatch(new RegExp(`^(package\\.json|dist/package\\.json|dist/functions/[^/]+\\.js|dist/node_modules/(${natives})/.+)$`));
      expect(n).not.toMatch(/\/(deps|src|obj\.target|node_modules\/[^/]+\/node_modules)\/|\.(c|cc|h|gyp|a|d\.ts)$/);
    }
    // The Node runtime loads the handlers as ES modules.
    for (const pkg of ['package.json', 'dist/package.json']) {
      expect(JSON.parse(entries.find((e) => e.name === pkg)!.data().toString()).type).toBe('module');
    }
  });

  it('each function, unpacked from the zip alone, imports on Node and exports handle', async () => {
    const script = `
      const fns = ${JSON.stringify(FUNCTIONS)};
      const out = {};
      for (const f of fns) out[f] = typeof (await import('./dist/functions/' + f + '.js')).handle;
      console.log(JSON.stringify(out));`;
    const r = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: unpacked, env: cleanEnv() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    for (const f of FUNCTIONS) expect(out[f], f).toBe('function');
  });

  /** Runs the bundled store check from `bundleDir` (a store in a fresh directory under `work`). */
  async function checkStoreFrom(bundleDir: string): Promise<Result> {
    const script = join(bundleDir, 'store-check.js');
    cpSync(storeCheck, script);
    const store = mkdtempSync(join(work, 'store-'));
    return run(process.execPath, [script, store], { cwd: bundleDir, env: cleanEnv(), timeoutMs: 60_000 });
  }

  function expectStoreCheckOk(r: Result, nodeModules: string): void {
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out.restoredEqual).toBe(true);
    expect(out.sha256).toBe(true);
    // 2 MiB of text compressed: zstd ran (1 MiB random + packs and index stay ~1 MiB, zeros dedup).
    expect(out.bytesAdded as number).toBeLessThan(0.5 * (out.imageSize as number));
    expect(out.zstdFrom).toBe(join(nodeModules, 'zstd-napi/binding.js'));
    expect(out.blake3From).toBe(join(nodeModules, '@napi-rs/blake-hash/index.js'));
    expect(out.argon2From).toBe(join(nodeModules, 'argon2/argon2.cjs'));
    // The addons the process did load (argon2's for the KDF, zstd's on the workers too), all from here.
    expect((out.addons as string[]).slice().sort()).toEqual(
      [`argon2/${ARGON2_BINDING}`, '@napi-rs/blake-hash-linux-x64-gnu/blake.linux-x64-gnu.node', `zstd-napi/${ZSTD_BINDING}`]
        .map((p) => join(nodeModules, p))
        .sort(),
    );
  }

  it('store code bundled like the functions backs up and restores next to them, with the natives of the zip', async () => {
    expectStoreCheckOk(await checkStoreFrom(join(unpacked, 'dist/functions')), join(unpacked, 'dist/node_modules'));
  });

  it('... and next to the job bundle, copied alone as in its image, with the natives of dist/job', async () => {
    const app = join(work, 'job-natives');
    cpSync(join(ROOT, 'dist/job'), app, { recursive: true });
    expectStoreCheckOk(await checkStoreFrom(app), join(app, 'node_modules'));
  });

  it('fails, naming what is missing, without the zstd binding, the BLAKE3 platform package or the argon2 binding', async () => {
    const cases = [
      { remove: `zstd-napi/${ZSTD_BINDING}`, error: /binding\.node/ },
      // blake-hash 1.3.4's loader names the missing platform package.
      { remove: '@napi-rs/blake-hash-linux-x64-gnu', error: /Cannot find module '@napi-rs\/blake-hash-linux-x64-gnu'/ },
      // node-gyp-build's own message, naming the platform it looked for and argon2's directory.
      {
        remove: `argon2/${ARGON2_BINDING}`,
        error: /No native build was found for platform=linux arch=x64 [^\n]*libc=glibc[\s\S]*loaded from: \S*\/dist\/node_modules\/argon2\b/,
      },
    ];
    for (const c of cases) {
      const copy = mkdtempSync(join(work, 'broken-'));
      cpSync(join(unpacked, 'dist'), join(copy, 'dist'), { recursive: true });
      rmSync(join(copy, 'dist/node_modules', c.remove), { recursive: true });
      const r = await checkStoreFrom(join(copy, 'dist/functions'));
      expect(r.code, c.remove).not.toBe(0);
      expect(r.code, `${c.remove}: killed by the timeout`).not.toBeNull();
      expect(r.stderr, c.remove).toMatch(c.error);
    }
  });

  it('the job bundle, copied alone as in its image, fails cleanly naming what its environment lacks', async () => {
    const app = join(work, 'app');
    cpSync(join(ROOT, 'dist/job'), app, { recursive: true });
    const none = await run(process.execPath, ['main.mjs'], { cwd: app, env: cleanEnv(), timeoutMs: 30_000 });
    expect(none.code).not.toBe(0);
    expect(none.code).not.toBeNull();
    expect(none.stderr).toMatch(/KLOSET_RUN_ID/);
    expect(none.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    const noConfig = await run(process.execPath, ['main.mjs'], {
      cwd: app,
      env: cleanEnv({ KLOSET_RUN_ID: 'run-1', KLOSET_RESOURCE: 'demo', KLOSET_JOB_MODE: 'backup' }),
      timeoutMs: 30_000,
    });
    expect(noConfig.code).not.toBe(0);
    expect(noConfig.code).not.toBeNull();
    expect(noConfig.stderr).toMatch(/KLOSET_RESOURCES/);
    expect(noConfig.stderr).not.toMatch(/\n\s+at /);
  });

  it("the resolved serverless.yml passes serverless-scaleway-functions' deploy-time validation", async () => {
    const project = '11111111-2222-4333-8444-555555555555';
    const env = cleanEnv({
      KLOSET_RESOURCES: JSON.stringify([
        { name: 'db', schedule: '0 3 * * *', secretKey: 'env:DB_SECRET_KEY' },
        { name: 'web', schedule: '30 1,13 * * 1-5' },
        { name: 'adhoc' },
      ]),
      KLOSET_SHIP_QUEUE_URL: `https://sqs.mnq.fr-par.scaleway.com/project-${project}/scw-kloset-ship`,
      KLOSET_IMPORT_QUEUE_URL: `https://sqs.mnq.fr-par.scaleway.com/project-${project}/scw-kloset-import`,
      KLOSET_JOB_DEFINITION_ID: project,
      KLOSET_SQS_ACCESS_KEY: 'queues-access-key',
    });
    const printed = await run(process.execPath, [require.resolve('serverless/bin/serverless.js'), 'print', '--format', 'json'], { env });
    expect(printed.code, printed.stderr).toBe(0);
    const config = JSON.parse(printed.stdout.slice(printed.stdout.indexOf('{'))) as {
      provider: { runtime: string; env: Record<string, string>; secret: Record<string, string> };
      functions: Record<string, { handler: string; privacy: string; memoryLimit: number; events: unknown[] }>;
    };
    expect(Object.keys(config.functions).sort()).toEqual([...FUNCTIONS].sort());
    for (const f of FUNCTIONS) expect(config.functions[f]!.privacy).toBe('private');
    expect(config.functions['trigger-export']!.events).toEqual([
      { schedule: { rate: '0 3 * * *', input: { resource: 'db', trigger: 'cron' } } },
      { schedule: { rate: '30 1,13 * * 1-5', input: { resource: 'web', trigger: 'cron' } } },
    ]);
    expect(config.functions['poll-export']!.events).toEqual([{ schedule: { rate: '* * * * *', input: {} } }]);
    expect(config.functions['ship-to-kloset']!.events).toEqual([{ sqs: { name: 'ship-to-kloset', queue: 'scw-kloset-ship' } }]);
    expect(config.functions['import-volume']!.events).toEqual([{ sqs: { name: 'import-volume', queue: 'scw-kloset-import' } }]);
    expect(config.provider.env.KLOSET_SHIP_QUEUE_URL).toContain('scw-kloset-ship');
    expect(Object.keys(config.provider.env).some((k) => /^SCW_/.test(k))).toBe(false);
    expect(Object.keys(config.provider.secret).sort()).toEqual(['DB_SECRET_KEY', 'KLOSET_PASSPHRASE', 'KLOSET_SECRET_KEY', 'KLOSET_SQS_SECRET_KEY']);
    for (const k of Object.keys(config.provider.secret)) expect(config.provider.env).not.toHaveProperty(k);

    // The plugin validates handlers and triggers only at deploy time: run that validation here.
    const validate = require('serverless-scaleway-functions/shared/validate.js') as {
      validateApplications(this: unknown, errors: string[]): Promise<string[]>;
      validateNamespace(this: unknown, errors: string[]): Promise<string[]>;
    };
    const self = Object.assign(Object.create(validate) as object, {
      runtime: config.provider.runtime,
      serverless: { service: { functions: structuredClone(config.functions), custom: {}, provider: config.provider } },
    });
    const errors = await validate.validateNamespace.call(self, []);
    expect(await validate.validateApplications.call(self, errors)).toEqual([]);

    // ... which does refuse what the contract first proposed: a handler under `.build/` (it splits the
    // handler on "."), and a `*/15` cron (scripts/serverless-vars.cjs refuses it first, with the name).
    const refused = Object.assign(Object.create(validate) as object, {
      runtime: 'node22',
      serverless: {
        service: {
          functions: { f: { handler: '.build/functions/trigger-export.handle', events: [{ schedule: { rate: '*/15 * * * *' } }] } },
          custom: {},
        },
      },
    });
    const problems = (await validate.validateApplications.call(refused, [])).join('\n');
    expect(problems).toMatch(/Handler is malformatted/);
    expect(problems).toMatch(/Trigger Schedule is invalid: \*\/15/);
  });
});

describe('scripts/serverless-vars.cjs', () => {
  const vars = require('../../scripts/serverless-vars.cjs') as {
    compute(env: NodeJS.ProcessEnv, strict: boolean): {
      env: Record<string, string>;
      secret: Record<string, string>;
      triggerExportEvents: unknown[];
      shipQueue: string;
    };
  };
  const full = {
    KLOSET_RESOURCES: '[{"name":"a","schedule":"0 2 * * *"}]',
    KLOSET_SHIP_QUEUE_URL: 'https://sqs.mnq.fr-par.scaleway.com/project-x/ship',
    KLOSET_IMPORT_QUEUE_URL: 'https://sqs.mnq.fr-par.scaleway.com/project-x/import',
    KLOSET_JOB_DEFINITION_ID: '11111111-2222-4333-8444-555555555555',
    KLOSET_SQS_ACCESS_KEY: 'ak',
    KLOSET_SECRET_KEY: 'sk',
    KLOSET_PASSPHRASE: 'pp',
    KLOSET_SQS_SECRET_KEY: 'qsk',
  };

  it('refuses a deploy naming every missing variable, but packages with placeholders', () => {
    expect(() => vars.compute({ KLOSET_RESOURCES: '[]' }, true)).toThrow(/KLOSET_SHIP_QUEUE_URL is not set[\s\S]*KLOSET_PASSPHRASE is not set/);
    const loose = vars.compute({}, false);
    expect(loose.env.KLOSET_RESOURCES).toBe('unset-at-package-time');
    expect(loose.triggerExportEvents).toEqual([]);
    const ok = vars.compute(full, true);
    expect(ok.shipQueue).toBe('ship');
    expect(ok.env).not.toHaveProperty('KLOSET_API_URL'); // optional and unset: left out, not ""
  });

  it('refuses schedules and secret names the platform would refuse', () => {
    expect(() => vars.compute({ ...full, KLOSET_RESOURCES: '[{"name":"a","schedule":"*/15 * * * *"}]' }, true)).toThrow(/\*\/15/);
    expect(() => vars.compute({ ...full, KLOSET_RESOURCES: '[{"name":"a","storePassphrase":"env:SCW_PASS"}]', SCW_PASS: 'x' }, true)).toThrow(
      /SCW_PASS starts with SCW_/,
    );
    expect(() => vars.compute({ ...full, KLOSET_RESOURCES: '{' }, true)).toThrow(/KLOSET_RESOURCES is not a JSON array/);
  });
});
