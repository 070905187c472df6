// Restores to S3: the part size that keeps a multipart upload within Scaleway's 1000 parts, and the
// images too big for any part size, refused before anything is uploaded.
import { describe, expect, it } from 'vitest';
import { MAX_PART_SIZE, MAX_PARTS, openImageSink, partSizeFor } from '../../lib/kloset/io.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('multipart part sizes for restores to S3', () => {
  it('keeps every image that fits within 1000 parts of whole MiB, at least 8 MiB each', () => {
    for (const size of [0, 1, 7 * GiB, 8 * MiB * 999 + 1, 100 * GiB + 12345, 1024 * GiB, 999 * MAX_PART_SIZE]) {
      const part = partSizeFor(size);
      expect(part % MiB).toBe(0);
      expect(part).toBeGreaterThanOrEqual(8 * MiB);
      expect(part).toBeLessThanOrEqual(MAX_PART_SIZE);
      expect(Math.ceil(size / part)).toBeLessThanOrEqual(MAX_PARTS);
    }
    expect(partSizeFor(7 * GiB)).toBe(8 * MiB);
    expect(partSizeFor(1024 * GiB)).toBe(1050 * MiB); // 1 TiB: ~1 GiB parts
  });

  it('refuses an image no multipart upload can hold, before connecting anywhere', async () => {
    const tooBig = MAX_PARTS * MAX_PART_SIZE;
    expect(() => partSizeFor(tooBig)).toThrow(`an image of ${tooBig} bytes does not fit one S3 multipart upload (at most 1000 parts of 5 GiB)`);
    // No endpoint answers here: the refusal comes first.
    await expect(openImageSink('s3://b/huge.qcow2', tooBig, { endpoint: 'http://127.0.0.1:9' })).rejects.toThrow(/does not fit one S3 multipart upload/);
  });
});
