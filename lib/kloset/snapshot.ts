// Snapshot records and the trees that list an image's chunks.
//
// A snapshot is an envelope (type Snapshot) holding JSON, named by the BLAKE3 of its bytes, and
// written after every pack and index file it needs: if it exists, its data is stored.
// The ordered chunk list lives in tree blobs (inside packs, deduplicated like data), each holding up
// to TREE_FANOUT entries of id[32] | rawLength u32, so a 1 TB image needs no huge snapshot object.

export const SNAPSHOT_VERSION = 1;
export const TREE_FANOUT = 16384;
const TREE_ENTRY = 36;

export interface SnapshotSource {
  volumeId?: string;
  name?: string;
  zone?: string;
  projectId?: string;
  /** Where the image was read from (a file name, s3:// URL or "-"). */
  path?: string;
}

export interface SnapshotMeta {
  source: SnapshotSource;
  environment?: string;
  dataClass?: string;
  tags: Record<string, string>;
}

export interface SnapshotRecord extends SnapshotMeta {
  version: number;
  host: string;
  startTime: string;
  endTime: string;
  imageSize: number;
  sha256: string;
  bytesRead: number;
  bytesAdded: number;
  blobsAdded: number;
  content: { trees: string[]; chunks: number };
}

export interface Snapshot extends SnapshotRecord {
  id: string;
}

export interface TreeEntry {
  id: Buffer;
  rawLength: number;
}

export function encodeTree(entries: TreeEntry[]): Buffer {
  const buf = Buffer.alloc(4 + entries.length * TREE_ENTRY);
  buf.writeUInt32BE(entries.length, 0);
  entries.forEach((e, i) => {
    e.id.copy(buf, 4 + i * TREE_ENTRY);
    buf.writeUInt32BE(e.rawLength, 4 + i * TREE_ENTRY + 32);
  });
  return buf;
}

export function decodeTree(buf: Buffer, name: string): TreeEntry[] {
  const n = buf.length >= 4 ? buf.readUInt32BE(0) : -1;
  if (n < 0 || buf.length !== 4 + n * TREE_ENTRY) throw new Error(`tree ${name} is malformed`);
  const out: TreeEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = 4 + i * TREE_ENTRY;
    out.push({ id: buf.subarray(at, at + 32), rawLength: buf.readUInt32BE(at + 32) });
  }
  return out;
}

export interface SnapshotFilter {
  tags?: Record<string, string>;
  volume?: string;
  environment?: string;
  dataClass?: string;
}

export function matchesFilter(s: SnapshotMeta, f: SnapshotFilter): boolean {
  if (f.volume && s.source.volumeId !== f.volume && s.source.name !== f.volume) return false;
  if (f.environment && s.environment !== f.environment) return false;
  if (f.dataClass && s.dataClass !== f.dataClass) return false;
  for (const [k, v] of Object.entries(f.tags ?? {})) if (s.tags[k] !== v) return false;
  return true;
}
