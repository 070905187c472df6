// The storage seam of the Kloset store: a handful of methods over immutable, named objects.
// Everything above this file (packs, indexes, snapshots) is encrypted before it gets here.

export interface ObjectInfo {
  key: string;
  size: number;
}

export interface Backend {
  /** Human-readable location, e.g. a directory or s3://bucket/prefix. */
  readonly location: string;
  /** Reads a whole object. Throws ObjectNotFoundError if it does not exist. */
  get(key: string): Promise<Buffer>;
  /**
   * Reads `length` bytes at `offset`. Throws ObjectNotFoundError, or ShortReadError past the end.
   * A backend that reads into memory it is given uses `into` (at least `length` bytes): the result
   * is then a view of it. Restores pass reused buffers this way.
   */
  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /**
   * Writes an object atomically: readers see the whole object or nothing, even after a crash.
   * `data` may come in parts (a packfile's blobs), written in order as one object.
   */
  put(key: string, data: Buffer | readonly Buffer[]): Promise<void>;
  /** Size of an object, or null if it does not exist. */
  stat(key: string): Promise<ObjectInfo | null>;
  /** Lists the objects whose key starts with `prefix` (e.g. "packs/"). */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(key: string): Promise<void>;
  close(): Promise<void>;
}

/** Where getRange reads `length` bytes: into `into` when it is big enough, else a new buffer. */
export function rangeBuffer(length: number, into?: Buffer): Buffer {
  return into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object not found: ${key}`);
    this.name = 'ObjectNotFoundError';
  }
}

export class ShortReadError extends Error {
  constructor(readonly key: string, offset: number, length: number, got: number) {
    super(`short read of ${key}: wanted ${length} bytes at ${offset}, got ${got} (truncated object?)`);
    this.name = 'ShortReadError';
  }
}
