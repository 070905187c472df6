// A store in a local directory. Writes go to tmp/ and are renamed into place, so a crash (kill -9,
// power loss after fsync) never leaves a half-written object under its final name.
import { promises as fsp, constants as fsc } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { type Backend, type ObjectInfo, ObjectNotFoundError, rangeBuffer, ShortReadError } from '../backend.js';

const TMP_DIR = 'tmp';

export class FsBackend implements Backend {
  readonly location: string;
  private readonly knownDirs = new Set<string>();

  constructor(private readonly root: string) {
    this.location = path.resolve(root);
  }

  private file(key: string): string {
    if (key.includes('..') || key.startsWith('/')) throw new Error(`invalid object key: ${key}`);
    return path.join(this.root, key);
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.file(key));
    } catch (err) {
      throw mapNotFound(err, key);
    }
  }

  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.file(key), fsc.O_RDONLY);
    } catch (err) {
      throw mapNotFound(err, key);
    }
    try {
      const buf = rangeBuffer(length, into);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got < length) throw new ShortReadError(key, offset, length, got);
      return buf;
    } finally {
      await fh.close();
    }
  }

  async put(key: string, data: Buffer | readonly Buffer[]): Promise<void> {
    const dest = this.file(key);
    await this.ensureDir(path.dirname(dest));
    await this.ensureDir(path.join(this.root, TMP_DIR));
    const tmp = path.join(this.root, TMP_DIR, `${path.basename(key)}.${randomBytes(6).toString('hex')}`);
    const fh = await fsp.open(tmp, 'wx');
    try {
      if (Buffer.isBuffer(data)) await fh.writeFile(data);
      else await writeAll(fh, data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, dest);
  }

  async stat(key: string): Promise<ObjectInfo | null> {
    try {
      const st = await fsp.stat(this.file(key));
      return { key, size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Keys are "dir/sub/name": walk the directory that holds the prefix, skip tmp/.
    const slash = prefix.lastIndexOf('/');
    const baseKey = slash >= 0 ? prefix.slice(0, slash) : '';
    yield* this.walk(baseKey, prefix);
  }

  private async *walk(dirKey: string, prefix: string): AsyncIterable<ObjectInfo> {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fsp.readdir(dirKey ? this.file(dirKey) : this.root, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const key = dirKey ? `${dirKey}/${e.name}` : e.name;
      if (!dirKey && e.name === TMP_DIR) continue;
      if (e.isDirectory()) {
        if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) yield* this.walk(key, prefix);
      } else if (e.isFile() && key.startsWith(prefix)) {
        const st = await fsp.stat(this.file(key));
        yield { key, size: st.size };
      }
    }
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.file(key), { force: true });
  }

  async close(): Promise<void> {}

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true });
    this.knownDirs.add(dir);
  }
}

/** writev in batches (IOV_MAX is 1024), resuming after short writes. */
async function writeAll(fh: fsp.FileHandle, parts: readonly Buffer[]): Promise<void> {
  for (let i = 0; i < parts.length; i += 512) {
    let batch = parts.slice(i, i + 512);
    while (batch.length > 0) {
      let { bytesWritten } = await fh.writev(batch);
      while (batch.length > 0 && bytesWritten >= batch[0]!.length) {
        bytesWritten -= batch[0]!.length;
        batch = batch.slice(1);
      }
      if (batch.length > 0 && bytesWritten > 0) batch[0] = batch[0]!.subarray(bytesWritten);
    }
  }
}

function mapNotFound(err: unknown, key: string): unknown {
  return (err as NodeJS.ErrnoException).code === 'ENOENT' ? new ObjectNotFoundError(key) : err;
}
