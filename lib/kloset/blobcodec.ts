// How one blob is stored in a pack, and read back:
//
//   plaintext -> zstd (unless it looks random, or shrinks by less than 1%) -> AES-256-GCM
//   under the pack's key, nonce = the first 12 bytes of the blob id, aad = id | type | compression
//
// The nonce is unique under a pack key because a pack never holds one id twice. Reading checks the
// tag, the length, and that the plaintext hashes to its id (keyed BLAKE3).
//
// These functions run on the main thread and, as source text, inside the worker threads of
// workers.ts. So they use only their arguments, globals (Buffer) and each other, never an import,
// and no named inner functions (which some transpilers wrap with helpers the worker would not have).

/** What encoding and decoding need: node:crypto and the native zstd and BLAKE3 bindings. */
export interface CodecDeps {
  createCipheriv: typeof import('node:crypto').createCipheriv;
  createDecipheriv: typeof import('node:crypto').createDecipheriv;
  /** zstd compression context (zstd-napi `CCtx`): compresses into dst, returns the length. */
  cctx: { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
  /** zstd decompression context (zstd-napi `DCtx`). */
  dctx: { decompress(dst: Uint8Array, src: Uint8Array): number };
  compressBound(n: number): number;
  /** Keyed BLAKE3 of data under the store's id key. */
  blobId(idKey: Buffer, data: Uint8Array): Buffer;
  /** Reused compression output. */
  scratch: Buffer;
  /** Reused decompression output (decodeBlob with `reuse`). */
  plainScratch: Buffer;
}

export interface SealedBlob {
  /** pack.ts Compression: 0 none, 1 zstd (numbers here: this code also runs as source text). */
  compression: number;
  /** Ciphertext, then the 16-byte GCM tag: written to the pack one after the other. */
  body: Buffer;
  tag: Buffer;
}

/**
 * Shannon entropy of three 4 KiB samples (start, middle, end) above 7.9 bits per byte: the data is
 * already compressed or encrypted, and zstd would spend more time failing on it than compressing
 * text. Uniform random bytes over 12 KiB give ~7.98.
 */
export function looksIncompressible(data: Uint8Array): boolean {
  const sample = 4096;
  if (data.length < 4 * sample) return false;
  const hist = new Uint32Array(256);
  const starts = [0, (data.length >> 1) - sample / 2, data.length - sample];
  for (let s = 0; s < 3; s++) {
    const end = starts[s]! + sample;
    for (let i = starts[s]!; i < end; i++) hist[data[i]!]!++;
  }
  const n = 3 * sample;
  let h = 0;
  for (let i = 0; i < 256; i++) {
    const c = hist[i]!;
    if (c) h -= (c / n) * Math.log2(c / n);
  }
  return h > 7.9;
}

export function blobAad(id: Uint8Array, type: number, compression: number): Buffer {
  const aad = Buffer.alloc(34);
  aad.set(id.subarray(0, 32), 0);
  aad[32] = type;
  aad[33] = compression;
  return aad;
}

/** Compresses (level > 0 and worth it) and encrypts one blob. */
export function encodeBlob(d: CodecDeps, key: Buffer, id: Buffer, type: number, data: Uint8Array, level: number): SealedBlob {
  let payload = data;
  let compression = 0;
  if (level > 0 && !looksIncompressible(data)) {
    const bound = d.compressBound(data.length);
    if (d.scratch.length < bound) d.scratch = Buffer.allocUnsafeSlow(bound);
    const n = d.cctx.compress(d.scratch, data, level);
    if (n < data.length * 0.99) {
      payload = d.scratch.subarray(0, n);
      compression = 1;
    }
  }
  const c = d.createCipheriv('aes-256-gcm', key, id.subarray(0, 12));
  c.setAAD(blobAad(id, type, compression));
  const body = c.update(payload);
  c.final(); // GCM is a stream mode: final() yields no bytes
  return { compression, body, tag: c.getAuthTag() };
}

/**
 * Decrypts, decompresses and verifies one sealed blob (ciphertext and tag). Throws an Error whose
 * message starts with `what` if anything does not match. With `reuse`, a compressed blob is
 * decompressed into d.plainScratch: the result is valid until the next call.
 */
export function decodeBlob(
  d: CodecDeps,
  key: Buffer,
  idKey: Buffer,
  e: { id: Buffer; type: number; compression: number; rawLength: number },
  sealed: Uint8Array,
  what: string,
  reuse = false,
): Buffer {
  if (sealed.length < 16) throw new Error(`${what} (too short)`);
  const dec = d.createDecipheriv('aes-256-gcm', key, e.id.subarray(0, 12));
  dec.setAAD(blobAad(e.id, e.type, e.compression));
  dec.setAuthTag(sealed.subarray(sealed.length - 16));
  let plain: Buffer;
  try {
    plain = dec.update(sealed.subarray(0, sealed.length - 16));
    dec.final();
  } catch {
    throw new Error(`${what} (authentication failed)`);
  }
  if (e.compression === 1) {
    if (reuse && d.plainScratch.length < e.rawLength) d.plainScratch = Buffer.allocUnsafeSlow(e.rawLength);
    const out = reuse ? d.plainScratch.subarray(0, e.rawLength) : Buffer.allocUnsafeSlow(e.rawLength);
    let n = -1;
    try {
      n = d.dctx.decompress(out, plain);
    } catch {
      // reported below: a blob that authenticates but does not decompress to its length
    }
    if (n !== e.rawLength) throw new Error(`${what} (does not decompress to ${e.rawLength} bytes)`);
    plain = out;
  } else if (e.compression !== 0) {
    throw new Error(`${what} (unknown compression ${e.compression})`);
  }
  if (plain.length !== e.rawLength) throw new Error(`${what} (wrong length)`);
  if (!d.blobId(idKey, plain).equals(e.id)) throw new Error(`${what} (does not hash to its id)`);
  return plain;
}

export interface CompressionConfig {
  algorithm: 'zstd';
  /** zstd level: 3 stores ~5% less than 1 on disk images, at ~60% of its speed (bench/primitives.ts). */
  level: number;
}

export const DEFAULT_COMPRESSION: CompressionConfig = { algorithm: 'zstd', level: 3 };
