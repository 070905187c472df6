// `scw-kloset store ...`: init, backup, restore, ls, show, check, passwd.
import { type Command, Option } from 'commander';
import {
  Archiver,
  checkStore,
  DEFAULT_KDF,
  initStore,
  IntegrityError,
  type KdfParams,
  matchesFilter,
  NotAStoreError,
  ObjectNotFoundError,
  ShortReadError,
  openStore,
  type Repository,
  Restorer,
  SnapshotNotFoundError,
  type Snapshot,
  StoreExistsError,
  WrongPassphraseError,
  UnsupportedFormatError,
  BlobWorkers,
} from '../lib/kloset/store.js';
import { openImageSink, openImageSource } from '../lib/kloset/io.js';
import { type S3Options, s3OptionsFromEnv } from '../lib/scaleway/s3-location.js';
import { UserError } from './errors.js';
import { readPassphrase } from './passphrase.js';
import { byteProgress } from './progress.js';

interface StoreOpts {
  store?: string;
  s3Endpoint?: string;
  s3Region?: string;
}

function withStoreOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--store <location>', 'store location: a directory or s3://bucket/prefix').env('KLOSET_STORE'))
    .addOption(new Option('--s3-endpoint <url>', 'S3 endpoint for s3:// locations (default: Scaleway, from the region)').env('KLOSET_S3_ENDPOINT'))
    .addOption(new Option('--s3-region <region>', 'S3 region for s3:// locations').env('KLOSET_S3_REGION'));
}

function s3Options(o: StoreOpts): S3Options {
  const env = s3OptionsFromEnv();
  return { ...env, endpoint: o.s3Endpoint ?? env.endpoint, region: o.s3Region ?? env.region };
}

function storeLocation(o: StoreOpts): string {
  if (!o.store) throw new UserError('missing --store <dir|s3://bucket/prefix> (or KLOSET_STORE)');
  return o.store;
}

/** Turns the store's known failures into one-line messages with the right exit code. */
async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (
      err instanceof WrongPassphraseError ||
      err instanceof UnsupportedFormatError ||
      err instanceof NotAStoreError ||
      err instanceof StoreExistsError ||
      err instanceof SnapshotNotFoundError
    ) {
      throw new UserError(err.message);
    }
    // Damage found while reading: a verification failure (exit 1), not a crash.
    if (err instanceof IntegrityError || err instanceof ObjectNotFoundError || err instanceof ShortReadError) throw new UserError(err.message, 1);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError((err as Error).message);
    throw err;
  }
}

/** Opens the store; `moveData` (backup, restore) starts the worker threads while the key is derived. */
async function open(o: StoreOpts, moveData = false): Promise<Repository> {
  const location = storeLocation(o);
  const passphrase = await readPassphrase();
  if (moveData) BlobWorkers.shared().warm();
  return guard(() => openStore(location, passphrase, s3Options(o)));
}

function collectTag(value: string, prev: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new UserError(`--tag wants key=value, got "${value}"`);
  return { ...prev, [value.slice(0, eq)]: value.slice(eq + 1) };
}

function positiveInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new UserError(`${name} must be a positive integer, got "${v}"`);
    return n;
  };
}

const short = (id: string) => id.slice(0, 12);
const MiB = 1024 * 1024;

export function registerStoreCommands(program: Command): void {
  const store = program.command('store').description('work with a Kloset store directly: init, backup, restore, ls, check');

  withStoreOptions(store.command('init'))
    .description('create an encrypted store')
    .option('--kdf-memory <MiB>', 'Argon2id memory in MiB (lower is weaker; for tests)', positiveInt('--kdf-memory'))
    .option('--kdf-iterations <n>', 'Argon2id iterations (lower is weaker; for tests)', positiveInt('--kdf-iterations'))
    .option('--json', 'print the result as JSON')
    .action(async (o: StoreOpts & { kdfMemory?: number; kdfIterations?: number; json?: boolean }) => {
      const location = storeLocation(o);
      const passphrase = await readPassphrase({ confirm: true });
      const kdf: KdfParams = { ...DEFAULT_KDF, m: (o.kdfMemory ?? DEFAULT_KDF.m / 1024) * 1024, t: o.kdfIterations ?? DEFAULT_KDF.t };
      const config = await guard(() => initStore(location, passphrase, { kdf, s3: s3Options(o) }));
      if (o.json) process.stdout.write(`${JSON.stringify({ store: location, id: config.id })}\n`);
      else process.stderr.write(`created store ${config.id} at ${location}\n`);
    });

  withStoreOptions(store.command('backup'))
    .description('back up an image (a file, - for stdin, or s3://bucket/key) into a new snapshot')
    .argument('<source>', 'image to back up: a file, - for stdin, or s3://bucket/key')
    .option('--tag <key=value>', 'tag the snapshot (repeatable)', collectTag, {})
    .option('--volume-id <uuid>', 'source volume id')
    .option('--volume-name <name>', 'source volume name')
    .option('--zone <zone>', 'source zone, e.g. fr-par-1')
    .option('--project-id <uuid>', 'source Scaleway project id')
    .option('--environment <env>', 'SLA environment, e.g. production')
    .option('--data-class <class>', 'SLA data class, e.g. critical')
    .option('--json', 'print the result as one JSON object on stdout')
    .action(async (source: string, o: StoreOpts & Record<string, string | undefined> & { tag: Record<string, string>; json?: boolean }) => {
      const repo = await open(o, true);
      const input = await guard(() => openImageSource(source, s3Options(o)));
      const bar = byteProgress('backup ', input.size);
      try {
        const result = await guard(() =>
          new Archiver(repo).backup(input.stream, {
            meta: {
              source: { volumeId: o.volumeId, name: o.volumeName, zone: o.zone, projectId: o.projectId, path: source },
              environment: o.environment,
              dataClass: o.dataClass,
              tags: o.tag,
            },
            onProgress: (p) => bar.update(p.bytesRead),
          }),
        );
        bar.stop();
        if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
        else {
          process.stderr.write(
            `snapshot ${result.snapshot}\n  read ${(result.bytesRead / MiB).toFixed(1)} MiB, added ${(result.bytesAdded / MiB).toFixed(1)} MiB to the store (${result.chunks} chunks; ${result.blobsAdded} new blobs, counting the chunk lists)\n`,
          );
        }
      } finally {
        bar.stop();
        await input.close();
        await repo.backend.close();
      }
    });

  withStoreOptions(store.command('restore'))
    .description('restore a snapshot to a file, - for stdout, or s3://bucket/key, verifying every blob and the image SHA-256')
    .argument('<snapshot>', 'snapshot id or a unique prefix of one')
    .requiredOption('--to <target>', 'where to write the image: a file, - for stdout, or s3://bucket/key')
    .option('--parallel <n>', 'ranged pack reads in flight', positiveInt('--parallel'), 8)
    .action(async (prefix: string, o: StoreOpts & { to: string; parallel: number }) => {
      const repo = await open(o, true);
      try {
        const id = await guard(() => repo.resolveSnapshotId(prefix));
        const snap = await guard(() => repo.loadSnapshot(id));
        const sink = await guard(() => openImageSink(o.to, snap.imageSize, s3Options(o)));
        const bar = byteProgress('restore', snap.imageSize);
        try {
          await guard(() => new Restorer(repo, o.parallel).restore(id, sink, (p) => bar.update(p.bytesWritten, p.total)));
          await sink.commit();
        } catch (err) {
          await sink.abort();
          throw err;
        } finally {
          bar.stop();
        }
        if (o.to !== '-') process.stderr.write(`restored snapshot ${short(id)} to ${o.to} (${snap.imageSize} bytes, SHA-256 verified)\n`);
      } finally {
        await repo.backend.close();
      }
    });

  withStoreOptions(store.command('ls'))
    .description('list snapshots')
    .option('--tag <key=value>', 'only snapshots with this tag (repeatable)', collectTag, {})
    .option('--volume <id|name>', 'only snapshots of this volume')
    .option('--environment <env>', 'only this SLA environment')
    .option('--data-class <class>', 'only this SLA data class')
    .option('--json', 'print a JSON array')
    .action(async (o: StoreOpts & { tag: Record<string, string>; volume?: string; environment?: string; dataClass?: string; json?: boolean }) => {
      const repo = await open(o);
      try {
        const snaps = (await guard(() => repo.listSnapshots())).filter((s) =>
          matchesFilter(s, { tags: o.tag, volume: o.volume, environment: o.environment, dataClass: o.dataClass }),
        );
        if (o.json) process.stdout.write(`${JSON.stringify(snaps.map(publicSnapshot))}\n`);
        else process.stdout.write(formatTable(snaps));
      } finally {
        await repo.backend.close();
      }
    });

  withStoreOptions(store.command('show'))
    .description('print one snapshot record as JSON')
    .argument('<snapshot>', 'snapshot id or a unique prefix of one')
    .action(async (prefix: string, o: StoreOpts) => {
      const repo = await open(o);
      try {
        const snap = await guard(async () => repo.loadSnapshot(await repo.resolveSnapshotId(prefix)));
        process.stdout.write(`${JSON.stringify(publicSnapshot(snap), null, 2)}\n`);
      } finally {
        await repo.backend.close();
      }
    });

  withStoreOptions(store.command('check'))
    .description('verify the store: structure and indexes; with --read-data, decrypt and verify every blob')
    .option('--read-data', 'read, decrypt and verify every blob of every pack')
    .option('--json', 'print the report as JSON')
    .action(async (o: StoreOpts & { readData?: boolean; json?: boolean }) => {
      const repo = await open(o);
      const bar = byteProgress('check  ', undefined);
      try {
        const report = await checkStore(repo, { readData: o.readData, onProgress: (d, t) => bar.update(d, t) });
        bar.stop();
        if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
        else {
          for (const w of report.warnings) process.stderr.write(`warning: ${w.object}: ${w.message}\n`);
          for (const e of report.errors) process.stderr.write(`error: ${e.object}: ${e.message}\n`);
          process.stderr.write(
            `${report.errors.length === 0 ? 'no errors' : `${report.errors.length} error(s)`}: ${report.snapshots} snapshots, ${report.packs} packs, ${report.blobs} blobs, ${report.indexFiles} index files${o.readData ? `, ${(report.bytesRead / MiB).toFixed(1)} MiB read` : ''}\n`,
          );
        }
        if (report.errors.length > 0) process.exitCode = 1;
      } finally {
        bar.stop();
        await repo.backend.close();
      }
    });

  withStoreOptions(store.command('passwd'))
    .description('change the passphrase (new one from KLOSET_NEW_PASSPHRASE or a prompt); no data is rewritten')
    .action(async (o: StoreOpts) => {
      const repo = await open(o);
      try {
        const next = await readPassphrase({ confirm: true, envName: 'KLOSET_NEW_PASSPHRASE', what: 'New passphrase' });
        await repo.changePassphrase(next);
        process.stderr.write('passphrase changed\n');
      } finally {
        await repo.backend.close();
      }
    });
}

function publicSnapshot(s: Snapshot) {
  const { content, ...rest } = s;
  return { ...rest, chunks: content.chunks };
}

function formatTable(snaps: Snapshot[]): string {
  const rows = [['ID', 'TIME', 'VOLUME', 'ZONE', 'ENV', 'CLASS', 'SIZE', 'ADDED', 'TAGS']];
  for (const s of snaps) {
    rows.push([
      short(s.id),
      s.startTime.replace('T', ' ').slice(0, 19),
      s.source.name ?? s.source.volumeId ?? s.source.path ?? '',
      s.source.zone ?? '',
      s.environment ?? '',
      s.dataClass ?? '',
      `${(s.imageSize / MiB).toFixed(1)} MiB`,
      `${(s.bytesAdded / MiB).toFixed(1)} MiB`,
      Object.entries(s.tags).map(([k, v]) => `${k}=${v}`).join(','),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}
