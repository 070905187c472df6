// Blob compression: zstd, run on libuv's thread pool (async native) so it overlaps the main thread's
// chunking and hashing and uses the second core. A blob that does not shrink by 3% is stored as is,
// and one whose sampled bytes look random (already compressed or encrypted data) is not even tried:
// zstd spends more time failing on random data than compressing text.
import { createRequire } from 'node:module';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { Compression } from './pack.js';

export interface CompressionConfig {
  algorithm: 'zstd';
  level: number;
}

// The package's JS wrapper drops the level argument; its native binding takes it.
const zstdNative = createRequire(import.meta.url)('@mongodb-js/zstd/bindings') as {
  compress(data: Buffer, level?: number): Promise<Buffer>;
};

export const DEFAULT_COMPRESSION: CompressionConfig = { algorithm: 'zstd', level: 3 };

const SAMPLE = 4096;
/** Bits per byte above which a sample is taken for random (uniform bytes over 12 KiB give ~7.98). */
const RANDOM_ENTROPY = 7.9;

/** Shannon entropy of three 4 KiB samples (start, middle, end): cheap next to compressing 256 KiB. */
export function looksIncompressible(data: Uint8Array): boolean {
  if (data.length < 4 * SAMPLE) return false;
  const hist = new Uint32Array(256);
  for (const start of [0, (data.length >> 1) - SAMPLE / 2, data.length - SAMPLE]) {
    for (let i = start; i < start + SAMPLE; i++) hist[data[i]!]!++;
  }
  const n = 3 * SAMPLE;
  let h = 0;
  for (let i = 0; i < 256; i++) {
    const c = hist[i]!;
    if (c) h -= (c / n) * Math.log2(c / n);
  }
  return h > RANDOM_ENTROPY;
}

export async function compressBlob(data: Buffer, cfg: CompressionConfig): Promise<{ payload: Buffer; compression: Compression }> {
  if (looksIncompressible(data)) return { payload: data, compression: Compression.None };
  const out = await zstdNative.compress(data, cfg.level);
  if (out.length < data.length * 0.97) return { payload: out, compression: Compression.Zstd };
  return { payload: data, compression: Compression.None };
}

export async function decompressBlob(payload: Buffer, compression: Compression): Promise<Buffer> {
  switch (compression) {
    case Compression.None:
      return payload;
    case Compression.Zstd:
      return zstdDecompress(payload);
    default:
      throw new Error(`unknown compression ${compression as number}`);
  }
}
