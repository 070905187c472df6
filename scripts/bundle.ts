// Bundles the five Scaleway Functions and the Serverless Job with esbuild, for Node 22 on linux x64
// (glibc), into dist/:
//
//   dist/package.json                       {"type": "module"}: the .js bundles below are ES modules
//   dist/functions/<name>.js                one self-contained ES module per function, exporting `handle`
//   dist/node_modules/@mongodb-js/zstd*     the native zstd binding the function bundles load at run time
//   dist/job/main.mjs                       the job entry
//   dist/job/node_modules/@mongodb-js/zstd* the same binding, for the job image (jobs/Dockerfile)
//
// The directory is `dist`, not `.build`: serverless-scaleway-functions checks a handler by splitting
// it on "." and requires exactly two parts, so `.build/functions/x.handle` is refused at deploy time.
//
// `@mongodb-js/zstd` is a napi module whose JS wrapper picks its `.node` file from a platform package
// (`@mongodb-js/zstd-linux-x64-gnu` on Scaleway): it cannot be bundled, so it stays external and both
// packages are copied next to the bundles, where Node's resolution finds them. `hash-wasm` inlines its
// WASM in JS and is bundled like any other package.
//
// Usage: npx tsx scripts/bundle.ts
import { build, type BuildOptions } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const OUT = join(ROOT, 'dist');
export const FUNCTIONS = ['trigger-export', 'poll-export', 'ship-to-kloset', 'restore-upload', 'import-volume'] as const;
/** The packages that stay outside the bundles and are copied into dist/ instead. */
const NATIVE_PACKAGES = ['@mongodb-js/zstd', '@mongodb-js/zstd-linux-x64-gnu'];

// ES module output of bundled CommonJS packages (the AWS SDK, ...) still calls `require` for Node's
// built-ins: give the module a real one. The alias avoids clashing with the sources' own imports.
const BANNER = [
  "import { createRequire as __kloset_createRequire } from 'node:module';",
  'const require = __kloset_createRequire(import.meta.url);',
].join('\n');

const COMMON: BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  minify: true,
  sourcemap: false,
  // Marks subpaths too (`@mongodb-js/zstd/bindings`, loaded through createRequire in lib/kloset).
  external: ['@mongodb-js/zstd'],
  banner: { js: BANNER },
  logLevel: 'warning',
  absWorkingDir: ROOT,
};

function copyNativePackages(destNodeModules: string): void {
  for (const name of NATIVE_PACKAGES) {
    const src = join(ROOT, 'node_modules', name);
    if (!existsSync(join(src, 'package.json'))) {
      const hint =
        name === '@mongodb-js/zstd-linux-x64-gnu'
          ? ' (npm installs it only on linux x64; on another machine run ' +
            '`npm install --no-save --os=linux --cpu=x64 --libc=glibc @mongodb-js/zstd-linux-x64-gnu@' +
            zstdVersion() +
            '`)'
          : '';
      throw new Error(`bundle: ${name} is not installed in node_modules${hint}`);
    }
    const dest = join(destNodeModules, name);
    mkdirSync(dirname(dest), { recursive: true });
    cpSync(src, dest, { recursive: true, filter: (p) => !/\.(md|d\.ts)$/.test(p) || p.endsWith('LICENSE.md') });
  }
}

function zstdVersion(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules/@mongodb-js/zstd/package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
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
  copyNativePackages(join(OUT, 'node_modules'));
  copyNativePackages(join(OUT, 'job', 'node_modules'));

  const functions = Object.fromEntries(FUNCTIONS.map((f) => [f, join(OUT, 'functions', `${f}.js`)]));
  const job = join(OUT, 'job', 'main.mjs');
  const sizes: Record<string, number> = {};
  for (const path of [...Object.values(functions), job, join(OUT, 'node_modules')]) {
    sizes[relative(ROOT, path)] = sizeOf(path);
  }
  return { functions, job, sizes };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    const started = Date.now();
    const { sizes } = await bundle();
    for (const [path, size] of Object.entries(sizes)) console.log(`${human(size).padStart(11)}  ${path}`);
    console.log(`bundled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  }
}
