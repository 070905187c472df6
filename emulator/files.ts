// Sparse volume files: copies that keep holes, resizing, and byte-range writes. Never holds a
// volume in memory.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { copyFile, open, rm, truncate } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const CHUNK = 1024 * 1024;
const ZERO = Buffer.alloc(CHUNK);

/**
 * Copies `src` to `dst` keeping holes: a reflink where the filesystem has them (btrfs, xfs),
 * else GNU `cp --sparse=always` (SEEK_DATA/SEEK_HOLE, so a mostly empty 1 TB file is cheap),
 * else a JS copy that skips zero MiB chunks.
 */
export async function sparseCopy(src: string, dst: string): Promise<void> {
  try {
    // FICLONE_FORCE fails instead of falling back to a plain copy that would fill the holes.
    await copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE);
    return;
  } catch {
    // no reflink here
  }
  try {
    await execFileP('cp', ['--sparse=always', '--', src, dst]);
    return;
  } catch {
    await rm(dst, { force: true });
  }
  await jsSparseCopy(src, dst);
}

async function jsSparseCopy(src: string, dst: string): Promise<void> {
  const input = await open(src, 'r');
  const output = await open(dst, 'w');
  try {
    const { size } = await input.stat();
    const buf = Buffer.alloc(CHUNK);
    for (let pos = 0; pos < size; pos += CHUNK) {
      const { bytesRead } = await input.read(buf, 0, Math.min(CHUNK, size - pos), pos);
      const piece = buf.subarray(0, bytesRead);
      if (!piece.equals(ZERO.subarray(0, bytesRead))) await output.write(piece, 0, bytesRead, pos);
    }
    await output.truncate(size);
  } finally {
    await input.close();
    await output.close();
  }
}

/** Creates (or empties) a sparse file of `size` bytes. */
export async function createSparse(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  await fh.close();
  await truncate(path, size);
}

/** Sets the file size (enlarging adds a hole at the end). */
export async function resize(path: string, size: number): Promise<void> {
  await truncate(path, size);
}

export type RangeWrite =
  | { offset: number; data: Uint8Array }
  | { offset: number; file: string; fileOffset?: number; length?: number };

/** Overwrites byte ranges of `path` in place (the file never grows past its size). */
export async function writeRanges(path: string, writes: RangeWrite[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    for (const w of writes) {
      if ('data' in w) {
        if (w.offset < 0 || w.offset + w.data.length > size) throw new RangeError(`write at ${w.offset} outside the volume`);
        await fh.write(w.data, 0, w.data.length, w.offset);
        continue;
      }
      const src = await open(w.file, 'r');
      try {
        const fileOffset = w.fileOffset ?? 0;
        const length = w.length ?? (await src.stat()).size - fileOffset;
        if (w.offset < 0 || w.offset + length > size) throw new RangeError(`write at ${w.offset} outside the volume`);
        const buf = Buffer.alloc(Math.min(CHUNK, Math.max(1, length)));
        for (let done = 0; done < length; ) {
          const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, length - done), fileOffset + done);
          if (bytesRead === 0) break;
          await fh.write(buf, 0, bytesRead, w.offset + done);
          done += bytesRead;
        }
      } finally {
        await src.close();
      }
    }
  } finally {
    await fh.close();
  }
}
