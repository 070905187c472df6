// Bundles the five Scaleway Functions and the Serverless Job with esbuild, for Node 22 on linux x64
// (glibc), into dist/:
//
//   dist/package.json                  {"type": "module"}: the .js bundles below are ES modules
//   dist/functions/<name>.js           one self-contained ES module per function, exporting `handle`
//   dist/node_modules/<native>         the two native bindings the function bundles load at run time
//   dist/job/main.mjs                  the job entry
//   dist/job/node_modules/<native>     the same bindings, for the job image (jobs/Dockerfile)
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
//
// `hash-wasm` (Argon2id) inlines its WASM in JS and is bundled like any other package.
//
// Usage: npx tsx scripts/bundle.ts
import { build, type BuildOptions } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
};

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
 * Refuses a zstd binding that is not a linux x64 glibc ELF (npm ci on macOS, Windows, arm64 or
 * Alpine builds one for that machine); returns the newest glibc symbol version it needs.
 */
function checkZstdBinding(path: string): string {
  const elf = readFileSync(path);
  const where = 'run `npm ci` and the bundle on linux x64 with glibc (for example in a node:22 container)';
  // ELF magic, 64-bit class, e_machine 62 (x86-64).
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf.readUInt16LE(18) !== 62) {
    throw new Error(`bundle: ${relative(ROOT, path)} is not a linux x64 binary: zstd-napi was built for another platform; ${where}`);
  }
  const text = elf.toString('latin1');
  if (/libc\.musl|ld-musl/.test(text)) throw new Error(`bundle: ${relative(ROOT, path)} is linked against musl, not glibc; ${where}`);
  const glibc = [...text.matchAll(/GLIBC_2\.(\d+)/g)].map((m) => Number(m[1]));
  return glibc.length ? `2.${Math.max(...glibc)}` : 'any';
}

/** Copies the native packages; returns notes to print. */
function copyNativePackages(destNodeModules: string): string[] {
  const notes: string[] = [];
  for (const [name, files] of Object.entries(NATIVE_PACKAGES)) {
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
      notes.push(`zstd-napi ${version(name)}: ${ZSTD_BINDING} is linux x64, needs glibc >= ${checkZstdBinding(binding)}`);
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
  const sizes: Record<string, number> = {};
  for (const path of [...Object.values(functions), job, join(OUT, 'node_modules')]) {
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
