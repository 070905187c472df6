// Bundles the five Scaleway Functions and the Serverless Job with esbuild, for Node 22 on linux x64
// (glibc), into dist/:
//
//   dist/package.json                  {"type": "module"}: the .js bundles below are ES modules
//   dist/functions/<name>.js           one self-contained ES module per function, exporting `handle`
//   dist/node_modules/<native>         the native packages the function bundles load at run time
//   dist/job/main.mjs                  the job entry
//   dist/job/node_modules/<native>     the same packages, for the job image (jobs/Dockerfile)
//
// The directory is `dist`, not `.build`: serverless-scaleway-functions checks a handler by splitting
// it on "." and requires exactly two parts, so `.build/functions/x.handle` is refused at deploy time.
//
// The natives are N-API addons: they cannot be bundled, so they stay external and only what they
// load at run time is copied next to the bundles, where Node's resolution finds them (lib/kloset
// resolves them with createRequire(import.meta.url) and hands the absolute paths to its workers):
//
// - `zstd-napi`: package.json, dist/ (its JS API), binding.js and build/Release/binding.node; not the
//   C sources (deps/, src/) nor the build's objects. It has no platform package on npm: its install
//   script downloads a prebuilt binding from its GitHub release or, failing that, compiles libzstd
//   with node-gyp (python3, make, g++). Either way build/Release/binding.node is built for the machine
//   that ran `npm ci`, so bundle on linux x64 glibc: checked below. It is N-API (ABI-stable across
//   Node versions), so one built under Node 20 here loads on Scaleway's node22 runtime too; what it
//   does depend on is the glibc it was linked against, which the script prints.
// - `@napi-rs/blake-hash` (keyed BLAKE3): a JS loader that picks its `.node` file from a platform
//   package, `@napi-rs/blake-hash-linux-x64-gnu` on Scaleway; both are copied.
// - `argon2` (node-argon2, the passphrase KDF): argon2.cjs, package.json, LICENSE and one `.node`
//   file; not the C sources, binding.gyp, the other platforms' prebuilds nor the build's objects.
//   argon2.cjs loads its binding through `node-gyp-build`, which takes build/Release/*.node when
//   there is one and only then prebuilds/<platform>-<arch>/ (glibc or musl by tag). Its npm package
//   carries prebuilds/linux-x64/argon2.glibc.node, but that file (0.45.1) declares Node-API 10, which
//   Node has from 22.14 on: Node 20.20 crashes loading it (SIGSEGV in napi_module_register_by_symbol,
//   no JS error; see nodejs/node#57233). Its install script tries the prebuild first and, when that
//   fails, compiles build/Release/argon2.node for the Node that runs `npm ci` (Node-API 9 under
//   Node 20, which every Node 22 loads). What is shipped is the one file node-gyp-build picks in
//   node_modules/argon2 on the bundling machine, at the same relative path, so node-gyp-build picks
//   it in the bundle too (no other .node file is there to prefer); the script checks it is linux x64
//   glibc and that this Node loads it, and prints which one it is.
//   With it, argon2's run-time dependencies: `@phc/format` (index.js) and `node-gyp-build`
//   (index.js, node-gyp-build.js); not `node-addon-api` (headers, build time) nor `cross-env`
//   (install script).
//
// Usage: npx tsx scripts/bundle.ts
import { build, type BuildOptions } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const OUT = join(ROOT, 'dist');
export const FUNCTIONS = ['trigger-export', 'poll-export', 'ship-to-kloset', 'restore-upload', 'import-volume'] as const;
/** The zstd binding's compiled addon, relative to its package. */
export const ZSTD_BINDING = 'build/Release/binding.node';
const BLAKE_PLATFORM = '@napi-rs/blake-hash-linux-x64-gnu';

/** The packages that stay outside the bundles and are copied into dist/ instead: what of each. */
export const NATIVE_PACKAGES: Record<string, string[]> = {
  'zstd-napi': ['package.json', 'LICENSE', 'NOTICE', 'binding.js', 'dist', ZSTD_BINDING],
  '@napi-rs/blake-hash': ['package.json', 'LICENSE', 'index.js'],
  [BLAKE_PLATFORM]: ['package.json', 'blake.linux-x64-gnu.node'],
  // + the binding argon2Binding() names.
  argon2: ['package.json', 'LICENSE', 'argon2.cjs'],
  '@phc/format': ['package.json', 'license', 'index.js'],
  'node-gyp-build': ['package.json', 'LICENSE', 'index.js', 'node-gyp-build.js'],
};

/**
 * The `.node` file of argon2 that node-gyp-build picks in node_modules/argon2 on this machine,
 * relative to the package: build/Release/argon2.node when its install script compiled one, else
 * prebuilds/linux-x64/argon2.glibc.node. The only one shipped.
 */
let argon2Picked: string | undefined;
export function argon2Binding(): string {
  if (argon2Picked) return argon2Picked;
  const dir = join(ROOT, 'node_modules', 'argon2');
  const gypBuild = createRequire(join(dir, 'argon2.cjs'))('node-gyp-build') as { path(dir: string): string };
  let picked: string;
  try {
    picked = relative(dir, gypBuild.path(dir));
  } catch (err) {
    throw new Error(`bundle: node-gyp-build finds no binding in node_modules/argon2: ${err instanceof Error ? err.message.trim() : err}`);
  }
  if (!/^(build\/Release\/[^/]+|prebuilds\/linux-x64\/[^/]*glibc[^/]*)\.node$/.test(picked)) {
    throw new Error(
      `bundle: node-gyp-build picks node_modules/argon2/${picked}, not a linux x64 glibc binding; ` +
        'run `npm ci` and the bundle on linux x64 with glibc (and without ARGON2_PREBUILD, LIBC, npm_config_arch set)',
    );
  }
  return (argon2Picked = picked);
}

// ES module output of bundled CommonJS packages (the AWS SDK, ...) still calls `require` for Node's
// built-ins: give the module a real one. The alias avoids clashing with the sources' own imports.
const BANNER = [
  "import { createRequire as __kloset_createRequire } from 'node:module';",
  'const require = __kloset_createRequire(import.meta.url);',
].join('\n');

export const COMMON: BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  minify: true,
  sourcemap: false,
  // A package name marks its subpaths too (`zstd-napi/binding`, loaded through createRequire in
  // lib/kloset, which esbuild does not follow anyway: this keeps a static import external as well).
  external: Object.keys(NATIVE_PACKAGES),
  banner: { js: BANNER },
  logLevel: 'warning',
  absWorkingDir: ROOT,
};

function version(name: string): string {
  return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * Refuses a binding that is not a linux x64 glibc ELF (npm ci on macOS, Windows, arm64 or Alpine
 * builds one for that machine); returns the newest glibc symbol version it needs.
 */
function checkLinuxBinding(path: string, what: string): string {
  const elf = readFileSync(path);
  const where = 'run `npm ci` and the bundle on linux x64 with glibc (for example in a node:22 container)';
  // ELF magic, 64-bit class, e_machine 62 (x86-64).
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf.readUInt16LE(18) !== 62) {
    throw new Error(`bundle: ${relative(ROOT, path)} is not a linux x64 binary: ${what} was built for another platform; ${where}`);
  }
  const text = elf.toString('latin1');
  if (/libc\.musl|ld-musl/.test(text)) throw new Error(`bundle: ${relative(ROOT, path)} is linked against musl, not glibc; ${where}`);
  const glibc = [...text.matchAll(/GLIBC_2\.(\d+)/g)].map((m) => Number(m[1]));
  return glibc.length ? `2.${Math.max(...glibc)}` : 'any';
}

/**
 * Loads `path` in a child Node (this one): an addon built for a newer Node-API than the runtime's
 * can kill the process (SIGSEGV) instead of throwing.
 */
function checkLoads(path: string): void {
  const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', path], { encoding: 'utf8', timeout: 30_000 });
  if (r.status === 0) return;
  const why = r.signal ? `killed by ${r.signal}` : (r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? `exit ${r.status}`);
  throw new Error(
    `bundle: ${relative(ROOT, path)} does not load on Node ${process.versions.node} (Node-API ${process.versions.napi}): ${why}; ` +
      'a prebuild for a newer Node-API crashes older Nodes: run `npm rebuild argon2 --build-from-source` (needs python3, make, g++)',
  );
}

/** Copies the native packages; returns notes to print. */
function copyNativePackages(destNodeModules: string): string[] {
  const notes: string[] = [];
  for (const [name, listed] of Object.entries(NATIVE_PACKAGES)) {
    let files = listed;
    const src = join(ROOT, 'node_modules', name);
    if (!existsSync(join(src, 'package.json'))) {
      const hint =
        name === BLAKE_PLATFORM
          ? ' (npm installs it only on linux x64 glibc; on another machine run ' +
            `\`npm install --no-save --os=linux --cpu=x64 --libc=glibc ${BLAKE_PLATFORM}@${version('@napi-rs/blake-hash')}\`)`
          : '';
      throw new Error(`bundle: ${name} is not installed in node_modules${hint}`);
    }
    if (name === 'zstd-napi') {
      const binding = join(src, ZSTD_BINDING);
      if (!existsSync(binding)) {
        throw new Error(
          `bundle: node_modules/zstd-napi/${ZSTD_BINDING} is missing: its install script did not build it ` +
            '(install python3, make and g++, then run `npm rebuild zstd-napi`)',
        );
      }
      notes.push(`zstd-napi ${version(name)}: ${ZSTD_BINDING} is linux x64, needs glibc >= ${checkLinuxBinding(binding, name)}`);
    }
    if (name === 'argon2') {
      const binding = argon2Binding();
      files = [...listed, binding];
      const glibc = checkLinuxBinding(join(src, binding), name);
      checkLoads(join(src, binding));
      notes.push(
        `argon2 ${version(name)}: ${binding} (node-gyp-build's pick here) is linux x64, needs glibc >= ${glibc}, ` +
          `loads on Node ${process.versions.node}`,
      );
    }
    for (const file of files) {
      if (!existsSync(join(src, file))) throw new Error(`bundle: ${name} has no ${file}`);
      const dest = join(destNodeModules, name, file);
      mkdirSync(dirname(dest), { recursive: true });
      cpSync(join(src, file), dest, { recursive: true, filter: (p) => !/\.(d\.ts|map)$/.test(p) });
    }
  }
  return notes;
}

function sizeOf(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, entry) => sum + sizeOf(join(path, entry)), 0);
}

function human(bytes: number): string {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(2)} MiB`;
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

export interface BundleResult {
  functions: Record<string, string>;
  job: string;
  sizes: Record<string, number>;
  notes: string[];
}

export async function bundle(): Promise<BundleResult> {
  const missing = [...FUNCTIONS.map((f) => `functions/${f}.ts`), 'jobs/main.ts'].filter(
    (p) => !existsSync(join(ROOT, p)),
  );
  if (missing.length) throw new Error(`bundle: missing entry points: ${missing.join(', ')}`);

  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'package.json'), JSON.stringify({ type: 'module', private: true }, null, 2) + '\n');

  await build({
    ...COMMON,
    entryPoints: Object.fromEntries(FUNCTIONS.map((f) => [f, `functions/${f}.ts`])),
    outdir: join(OUT, 'functions'),
  });
  await build({
    ...COMMON,
    entryPoints: ['jobs/main.ts'],
    outfile: join(OUT, 'job', 'main.mjs'),
  });
  const notes = copyNativePackages(join(OUT, 'node_modules'));
  copyNativePackages(join(OUT, 'job', 'node_modules'));

  const functions = Object.fromEntries(FUNCTIONS.map((f) => [f, join(OUT, 'functions', `${f}.js`)]));
  const job = join(OUT, 'job', 'main.mjs');
  const natives = Object.keys(NATIVE_PACKAGES).map((name) => join(OUT, 'node_modules', name));
  const sizes: Record<string, number> = {};
  for (const path of [...Object.values(functions), job, join(OUT, 'node_modules'), ...natives]) {
    sizes[relative(ROOT, path)] = sizeOf(path);
  }
  return { functions, job, sizes, notes };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    const started = Date.now();
    const { sizes, notes } = await bundle();
    for (const [path, size] of Object.entries(sizes)) console.log(`${human(size).padStart(11)}  ${path}`);
    for (const note of notes) console.log(note);
    console.log(`bundled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  }
}
