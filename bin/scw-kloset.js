#!/usr/bin/env node
// Entry point of the `scw-kloset` command. The sources are TypeScript: they are bundled with esbuild
// into node_modules/.cache/scw-kloset/, one build per state of the sources (their newest mtime), made
// when a source file changes (a fraction of a second). Running a bundle starts in a fraction of the time of compiling on the fly
// with tsx, and uses far less memory, which matters for the many short-lived commands of tests,
// benchmarks and job runs. Deployed functions and the job use their own bundles (scripts/bundle.ts).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// The AWS SDK warns that its 2027 releases will need Node 22; production runs on node22 already.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCES = ['cli', 'lib', 'emulator', 'functions', 'jobs'];
// Keyed by checkout: two checkouts sharing one node_modules (a link) must not share a bundle.
const cacheDir = join(root, 'node_modules', '.cache', 'scw-kloset', createHash('sha256').update(root).digest('hex').slice(0, 12));

function newestSource() {
  let newest = statSync(join(root, 'package.json')).mtimeMs;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of SOURCES) if (existsSync(join(root, d))) walk(join(root, d));
  return newest;
}

// One directory per state of the sources, never replaced: a command that is running keeps its bundle
// (its chunks load lazily) while a later one builds the next. Concurrent builders of the same state
// produce the same files; the first rename wins and the others use it.
async function build(outDir) {
  const { build } = await import('esbuild');
  const tmp = `${outDir}.${process.pid}.${Date.now()}`;
  await build({
    entryPoints: [join(root, 'cli', 'main.ts')],
    outdir: tmp,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'error',
  });
  try {
    renameSync(tmp, outDir);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another command built the same state first
  }
  // Builds of older states, unused for an hour, go.
  for (const e of readdirSync(cacheDir, { withFileTypes: true })) {
    const p = join(cacheDir, e.name);
    if (p !== outDir && e.isDirectory() && Date.now() - statSync(p).mtimeMs > 3600_000) rmSync(p, { recursive: true, force: true });
  }
}

const outDir = join(cacheDir, `build-${Math.floor(newestSource())}`);
const entry = join(outDir, 'main.mjs');
if (!existsSync(entry)) await build(outDir);
process.setSourceMapsEnabled?.(true);
await import(pathToFileURL(entry).href);
