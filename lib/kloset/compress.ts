// Blob compression: zstd, run on libuv's thread pool (async native) so it overlaps the main thread's
// chunking and hashing and uses the second core. A blob that does not shrink by 3% is stored as is.
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { Compression } from './pack.js';

export interface CompressionConfig {
  algorithm: 'zstd';
  level: number;
}

export const DEFAULT_COMPRESSION: CompressionConfig = { algorithm: 'zstd', level: 3 };

export async function compressBlob(data: Buffer, cfg: CompressionConfig): Promise<{ payload: Buffer; compression: Compression }> {
  const out = await zstdCompress(data, cfg.level);
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
