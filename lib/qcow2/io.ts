// File reading shared by the QCOW2 reader and writer.
import type { FileHandle } from 'node:fs/promises';

/** Reads until `len` bytes or EOF; returns the count (short only at EOF). */
export async function readFully(fh: FileHandle, buf: Buffer, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}
