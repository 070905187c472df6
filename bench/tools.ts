// The two tools under test, driven through their command lines exactly as a user would run them.
import { join, resolve } from 'node:path';
import { BenchError, Measured, measure, run, tail } from './util.js';

export interface BackupResult {
  m: Measured;
  snapshot: string;
  /** The tool's own figure for bytes added to the store (see notes per tool). */
  reportedAdded: number;
  reportedRead: number;
}

export interface RestoreResult {
  m: Measured;
  /** Where the restored image ended up. */
  path: string;
}

export interface Tool {
  name: string;
  /** null when usable, otherwise why not. */
  unavailable(): Promise<string | null>;
  version(): Promise<string>;
  init(repo: string): Promise<Measured>;
  backup(repo: string, file: string): Promise<BackupResult>;
  restore(repo: string, snapshot: string, outDir: string, sourcePath: string): Promise<RestoreResult>;
  /** The cheapest command (print the version): the fixed cost of starting the tool. */
  startup(): Promise<Measured>;
  notes: string[];
}

const PASS = 'bench-passphrase-not-secret';

/** restic from the Debian package: local repository, default (auto) compression, local cache. */
export class Restic implements Tool {
  name = 'restic';
  notes = [
    'restic repository format v2 (the 0.14 default), compression "auto"',
    "restic's cache (RESTIC_CACHE_DIR) lives outside the repository and is not counted in stored bytes",
    'restic 0.14 reports data_added before compression (data_added_packed only exists from 0.17): compare the du deltas',
  ];
  constructor(private cacheDir: string) {}
  private env(): NodeJS.ProcessEnv {
    return { ...process.env, RESTIC_PASSWORD: PASS, RESTIC_CACHE_DIR: this.cacheDir, RESTIC_PROGRESS_FPS: '0.2' };
  }
  async unavailable(): Promise<string | null> {
    const r = await run('restic', ['version'], { allowFail: true }).catch(() => null);
    return r && r.code === 0 ? null : 'restic is not installed (apt-get install restic)';
  }
  async version(): Promise<string> {
    return (await run('restic', ['version'])).stdout.trim();
  }
  init(repo: string): Promise<Measured> {
    return measure('restic', ['-r', repo, 'init'], { env: this.env() });
  }
  startup(): Promise<Measured> {
    return measure('restic', ['version'], { env: this.env() });
  }
  async backup(repo: string, file: string): Promise<BackupResult> {
    const m = await measure('restic', ['-r', repo, 'backup', '--json', file], { env: this.env() });
    const summary = m.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((o) => o.message_type === 'summary');
    if (!summary) throw new BenchError(`restic backup printed no summary:\n${tail(m.stdout, 1000)}`);
    return {
      m,
      snapshot: String(summary.snapshot_id),
      reportedAdded: Number(summary.data_added),
      reportedRead: Number(summary.total_bytes_processed),
    };
  }
  async restore(repo: string, snapshot: string, outDir: string, sourcePath: string): Promise<RestoreResult> {
    const m = await measure('restic', ['-r', repo, 'restore', snapshot, '--target', outDir], { env: this.env() });
    return { m, path: join(outDir, resolve(sourcePath)) };
  }
}

/** scw-kloset's store, through the CLI contract of issue 2. */
export class Ours implements Tool {
  name = 'ours';
  notes: string[] = [];
  constructor(
    private cmd: string[],
    private label?: string,
  ) {}
  private env(): NodeJS.ProcessEnv {
    return { ...process.env, KLOSET_PASSPHRASE: PASS };
  }
  private m(args: string[]): Promise<Measured> {
    return measure(this.cmd[0], [...this.cmd.slice(1), ...args], { env: this.env() });
  }
  async unavailable(): Promise<string | null> {
    const r = await run(this.cmd[0], [...this.cmd.slice(1), 'store', 'backup', '--help'], {
      env: this.env(),
      allowFail: true,
    }).catch((e: Error) => ({ code: 1, stdout: '', stderr: e.message }));
    if (r.code !== 0 || !/--store/.test(r.stdout + r.stderr)) {
      return `\`${this.cmd.join(' ')} store backup --help\` failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}`;
    }
    return null;
  }
  async version(): Promise<string> {
    if (this.label) return `${this.cmd.join(' ')} @ ${this.label}`;
    const head = await run('git', ['log', '-1', '--format=%h %cs %s'], { allowFail: true });
    const store = await run('git', ['log', '-1', '--format=%h %cs', '--', 'lib/kloset', 'cli/store.ts'], { allowFail: true });
    const dirty = await run('git', ['status', '--porcelain', '--', 'lib/kloset', 'cli/store.ts'], { allowFail: true });
    return `${this.cmd.join(' ')} @ ${head.stdout.trim()}; store last changed ${store.stdout.trim() || '?'}${dirty.stdout.trim() ? ' (+ uncommitted changes)' : ''}`;
  }
  init(repo: string): Promise<Measured> {
    return this.m(['store', 'init', '--store', repo]);
  }
  startup(): Promise<Measured> {
    return this.m(['--version']);
  }
  async backup(repo: string, file: string): Promise<BackupResult> {
    const m = await this.m(['store', 'backup', '--store', repo, file, '--json']);
    let o: Record<string, unknown>;
    try {
      const text = m.stdout.trim();
      o = JSON.parse(text.startsWith('{') ? text : text.slice(text.lastIndexOf('\n{') + 1));
    } catch {
      throw new BenchError(`store backup --json did not print one JSON object:\n${tail(m.stdout, 1000)}`);
    }
    for (const k of ['snapshot', 'bytesRead', 'bytesAdded']) {
      if (!(k in o)) throw new BenchError(`store backup --json lacks "${k}": ${tail(m.stdout, 500)}`);
    }
    return { m, snapshot: String(o.snapshot), reportedAdded: Number(o.bytesAdded), reportedRead: Number(o.bytesRead) };
  }
  async restore(repo: string, snapshot: string, outDir: string): Promise<RestoreResult> {
    const path = join(outDir, 'restored.qcow2');
    const m = await this.m(['store', 'restore', '--store', repo, snapshot, '--to', path]);
    return { m, path };
  }
}
