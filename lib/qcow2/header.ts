// QCOW2 header parsing (qemu docs/interop/qcow2.txt). All fields are big-endian.
import { open } from 'node:fs/promises';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;

/** Incompatible feature bits (v3). */
export const INCOMPAT_DIRTY = 1 << 0;
export const INCOMPAT_CORRUPT = 1 << 1;
export const INCOMPAT_EXTERNAL_DATA = 1 << 2;
export const INCOMPAT_COMPRESSION_TYPE = 1 << 3;
export const INCOMPAT_EXTENDED_L2 = 1 << 4;
const KNOWN_INCOMPAT =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_EXTERNAL_DATA | INCOMPAT_COMPRESSION_TYPE | INCOMPAT_EXTENDED_L2;

/** Header extension types we look at. */
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;

export interface Qcow2Info {
  version: 2 | 3;
  virtualSize: number; // bytes
  clusterBits: number;
  clusterSize: number;
  encrypted: boolean; // crypt_method != 0 (AES or LUKS)
  compressionType: 'zlib' | 'zstd'; // from the v3 header extension field / incompatible bit
  backingFile: string | null;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  headerLength: number;
}

/** Everything parseQcow2Header reads; a superset of Qcow2Info. */
export interface Qcow2Header extends Qcow2Info {
  cryptMethod: number; // 0 none, 1 AES, 2 LUKS
  backingFileOffset: number;
  backingFileSize: number;
  backingFormat: string | null; // from the backing-format header extension, if present
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: number; // low 32 bits (all defined bits live there; unknown high bits are rejected)
  compatibleFeatures: number;
  refcountOrder: number; // refcount bits = 1 << refcountOrder
}

/** Not a QCOW2 image, or a corrupt / unsupported header or image. */
export class Qcow2FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Qcow2FormatError';
  }
}

/** The buffer given to parseQcow2Header ends before the header data does; `needed` bytes from offset 0 are required. */
export class Qcow2TruncatedError extends Qcow2FormatError {
  constructor(
    message: string,
    readonly needed: number,
  ) {
    super(message);
    this.name = 'Qcow2TruncatedError';
  }
}

/** Reads a u64 as a JS number; throws if it cannot be represented exactly (no real file gets that big). */
export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32BE(off);
  const lo = buf.readUInt32BE(off + 4);
  if (hi >= 0x200000) throw new Qcow2FormatError(`64-bit field at byte ${off} is too large (${hi}:${lo})`);
  return hi * 0x1_0000_0000 + lo;
}

/** Writes `value` (< 2^53) as a u64, OR-ing `highFlags` into the top 32 bits (used for the COPIED flag). */
export function writeU64(buf: Buffer, off: number, value: number, highFlags = 0): void {
  const hi = Math.floor(value / 0x1_0000_0000);
  buf.writeUInt32BE((hi | highFlags) >>> 0, off);
  buf.writeUInt32BE(value >>> 0, off + 4);
}

function need(buf: Buffer, bytes: number, what: string): void {
  if (buf.length < bytes) {
    throw new Qcow2TruncatedError(`truncated QCOW2 header: ${what} needs ${bytes} bytes, got ${buf.length}`, bytes);
  }
}

/**
 * Parses the header at the start of `buf` (the first >= 4 KiB of the file is plenty for qemu-made images).
 * Throws Qcow2FormatError for non-QCOW2 data or a corrupt header, and its subclass Qcow2TruncatedError (with
 * `needed`) when the header, its extensions or the backing file name lie beyond `buf`.
 */
export function parseQcow2Header(buf: Buffer): Qcow2Header {
  if (buf.length >= 4 && buf.readUInt32BE(0) !== QCOW2_MAGIC) throw new Qcow2FormatError('not a QCOW2 image (bad magic)');
  need(buf, 8, 'the magic and version');
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new Qcow2FormatError(`unsupported QCOW2 version ${version}`);
  need(buf, V2_HEADER_LENGTH, 'the v2 header');

  const backingFileOffset = readU64(buf, 8);
  const backingFileSize = buf.readUInt32BE(16);
  const clusterBits = buf.readUInt32BE(20);
  // qemu accepts 512 B .. 2 MiB clusters.
  if (clusterBits < 9 || clusterBits > 21) throw new Qcow2FormatError(`invalid cluster_bits ${clusterBits}`);
  const clusterSize = 2 ** clusterBits;
  const virtualSize = readU64(buf, 24);
  const cryptMethod = buf.readUInt32BE(32);
  const l1Size = buf.readUInt32BE(36);
  const l1TableOffset = readU64(buf, 40);
  const refcountTableOffset = readU64(buf, 48);
  const refcountTableClusters = buf.readUInt32BE(56);
  const nbSnapshots = buf.readUInt32BE(60);
  const snapshotsOffset = readU64(buf, 64);

  let headerLength = V2_HEADER_LENGTH;
  let incompatibleFeatures = 0;
  let compatibleFeatures = 0;
  let refcountOrder = 4;
  let compressionType: 'zlib' | 'zstd' = 'zlib';
  if (version === 3) {
    need(buf, V3_MIN_HEADER_LENGTH, 'the v3 header');
    if (buf.readUInt32BE(72) !== 0) throw new Qcow2FormatError('unknown incompatible QCOW2 features (high bits)');
    incompatibleFeatures = buf.readUInt32BE(76);
    if (incompatibleFeatures & ~KNOWN_INCOMPAT) {
      throw new Qcow2FormatError(`unknown incompatible QCOW2 features 0x${incompatibleFeatures.toString(16)}`);
    }
    compatibleFeatures = buf.readUInt32BE(84);
    refcountOrder = buf.readUInt32BE(96);
    if (refcountOrder > 6) throw new Qcow2FormatError(`invalid refcount_order ${refcountOrder}`);
    headerLength = buf.readUInt32BE(100);
    if (headerLength < V3_MIN_HEADER_LENGTH) throw new Qcow2FormatError(`invalid header_length ${headerLength}`);
    if (headerLength > clusterSize) throw new Qcow2FormatError(`header_length ${headerLength} exceeds the cluster size`);
    const hasTypeBit = (incompatibleFeatures & INCOMPAT_COMPRESSION_TYPE) !== 0;
    if (headerLength > V3_MIN_HEADER_LENGTH) {
      need(buf, V3_MIN_HEADER_LENGTH + 1, 'the compression type field');
      const ct = buf[104];
      if (ct === 1) compressionType = 'zstd';
      else if (ct !== 0) throw new Qcow2FormatError(`unknown compression type ${ct}`);
      // The spec ties the incompatible bit to a non-zlib type, so old readers refuse such images.
      if (hasTypeBit !== (ct !== 0)) throw new Qcow2FormatError('compression type field and incompatible bit disagree');
    } else if (hasTypeBit) {
      throw new Qcow2FormatError('compression type bit set but header has no compression type field');
    }
  }

  if (l1TableOffset % clusterSize !== 0) throw new Qcow2FormatError('L1 table offset is not cluster aligned');
  if (refcountTableOffset % clusterSize !== 0) throw new Qcow2FormatError('refcount table offset is not cluster aligned');
  // Enough L1 entries to map the whole virtual disk (each L2 table maps clusterSize/8 clusters).
  const l2Coverage = (clusterSize / 8) * clusterSize * (incompatibleFeatures & INCOMPAT_EXTENDED_L2 ? 0.5 : 1);
  if (l1Size < Math.ceil(virtualSize / l2Coverage)) throw new Qcow2FormatError(`L1 table too small (${l1Size} entries)`);

  // Header extensions follow the header (v2: right after the 72 bytes); they end with type 0.
  let backingFormat: string | null = null;
  let pos = headerLength;
  for (;;) {
    if (pos + 8 > clusterSize) break; // extensions must fit in the first cluster; tolerate a missing end marker
    need(buf, pos + 8, 'a header extension');
    const type = buf.readUInt32BE(pos);
    const len = buf.readUInt32BE(pos + 4);
    if (type === EXT_END) break;
    const dataEnd = pos + 8 + len;
    if (dataEnd > clusterSize) throw new Qcow2FormatError('header extension overflows the first cluster');
    if (type === EXT_BACKING_FORMAT) {
      need(buf, dataEnd, 'the backing format extension');
      backingFormat = buf.toString('utf8', pos + 8, dataEnd);
    }
    pos = dataEnd + ((8 - (len % 8)) % 8);
  }

  let backingFile: string | null = null;
  if (backingFileOffset !== 0) {
    if (backingFileSize > 1023) throw new Qcow2FormatError(`backing file name too long (${backingFileSize})`);
    need(buf, backingFileOffset + backingFileSize, 'the backing file name');
    backingFile = buf.toString('utf8', backingFileOffset, backingFileOffset + backingFileSize);
  }

  return {
    version,
    virtualSize,
    clusterBits,
    clusterSize,
    encrypted: cryptMethod !== 0,
    compressionType,
    backingFile,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    headerLength,
    cryptMethod,
    backingFileOffset,
    backingFileSize,
    backingFormat,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    refcountOrder,
  };
}

/** Reads and parses the header of a QCOW2 file, reading further when the header data extends past 64 KiB. */
export async function readQcow2Info(path: string): Promise<Qcow2Header> {
  const fh = await open(path, 'r');
  try {
    let size = 64 * 1024;
    for (;;) {
      const buf = Buffer.alloc(size);
      const { bytesRead } = await fh.read(buf, 0, size, 0);
      try {
        return parseQcow2Header(buf.subarray(0, bytesRead));
      } catch (err) {
        // Only re-read when the file really has more bytes than we looked at.
        if (err instanceof Qcow2TruncatedError && bytesRead === size && err.needed > size) {
          size = err.needed;
          continue;
        }
        throw err;
      }
    }
  } finally {
    await fh.close();
  }
}

/**
 * null if Scaleway's snapshot import would accept the image, else its rejection message (see REFERENCE.md section 2).
 */
export function scalewayImportProblem(info: Qcow2Info): string | null {
  if (info.encrypted) return 'The provided QCOW2 file is encrypted';
  if (info.compressionType !== 'zlib') return 'unsupported compression type';
  if (info.backingFile !== null) return 'has a backing chain';
  return null;
}
