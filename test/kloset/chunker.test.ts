// Content-defined chunking: boundaries depend on nearby content only, are reproducible, respect the
// size limits and depend on the store's key.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Chunker, type ChunkerParams, DEFAULT_CHUNKER } from '../../lib/kloset/chunker.js';
import { StoreKeys } from '../../lib/kloset/crypto.js';
import { readFile } from 'node:fs/promises';
import { GEARSCAN_TS, gearScanModuleSource } from '../../scripts/build-wasm.js';
import { MiB, prng, randomData, textData } from '../helpers/kloset.js';

interface Piece {
  offset: number;
  length: number;
  id: string;
}

/** Feeds `data` to the chunker in pieces of the given sizes (cycled) and records every chunk. */
async function chunkAll(chunker: Chunker, data: Buffer, pieceSizes: number[] = [1 * MiB]): Promise<Piece[]> {
  async function* source() {
    let at = 0;
    let i = 0;
    while (at < data.length) {
      const n = pieceSizes[i++ % pieceSizes.length]!;
      yield data.subarray(at, at + n);
      at += n;
    }
  }
  const out: Piece[] = [];
  let offset = 0;
  for await (const c of chunker.chunks(source())) {
    out.push({ offset, length: c.length, id: createHash('sha256').update(c).digest('hex') });
    offset += c.length;
  }
  return out;
}

/**
 * A ByteReader over `data` that counts its reads. With `seed`, reads are short (random sizes up to
 * 3 MiB, as a pipe or a network file system may give) and, with `delayMs`, late by up to that.
 */
function readerOver(data: Buffer, opts: { seed?: number; delayMs?: number } = {}) {
  const r = opts.seed === undefined ? null : prng(opts.seed);
  const state = { at: 0, reads: 0, inFlight: 0 };
  const read = async (buf: Buffer, offset: number, length: number) => {
    state.reads++;
    state.inFlight++;
    if (r && opts.delayMs) await new Promise((res) => setTimeout(res, r() * opts.delayMs!));
    const n = Math.min(length, data.length - state.at, r ? 1 + Math.floor(r() * 3 * MiB) : length);
    data.copy(buf, offset, state.at, state.at + n);
    state.at += n;
    state.inFlight--;
    return n;
  };
  return { read, state };
}

const sha256hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const SMALL: ChunkerParams = { min: 2 * 1024, avg: 8 * 1024, max: 32 * 1024 };
const seedA = Buffer.alloc(32, 0xa1);
const seedB = Buffer.alloc(32, 0xb2);

/**
 * The chunking rule of docs/FORMAT.md written as plainly as possible (one byte per step, the table
 * derived the same way): the WebAssembly scanner must cut exactly where this does, or stores would
 * stop deduplicating against their older snapshots.
 */
function referenceCuts(data: Buffer, params: ChunkerParams, seed: Buffer): number[] {
  const gear = Array.from({ length: 256 }, (_, i) => createHmac('sha256', seed).update(Buffer.from([i])).digest().readInt32LE(0));
  const bits = Math.round(Math.log2(params.avg));
  const top = (n: number) => (~0 << (32 - n)) | 0;
  const maskS = top(bits + 2);
  const maskL = top(bits - 2);
  const lengths: number[] = [];
  for (let start = 0; start < data.length; ) {
    const n = Math.min(data.length - start, params.max);
    let len = n;
    if (n > params.min) {
      let h = 0;
      for (let i = start + params.min; i < start + n; i++) {
        h = ((h << 1) + gear[data[i]!]!) | 0;
        if ((h & (i < start + Math.min(params.avg, n) ? maskS : maskL)) === 0) {
          len = i - start + 1;
          break;
        }
      }
    }
    lengths.push(len);
    start += len;
  }
  return lengths;
}

function expectLimits(chunks: Piece[], params: ChunkerParams, total: number): void {
  expect(chunks.reduce((s, c) => s + c.length, 0)).toBe(total);
  chunks.forEach((c, i) => {
    expect(c.length).toBeLessThanOrEqual(params.max);
    if (i < chunks.length - 1) expect(c.length).toBeGreaterThanOrEqual(params.min);
    else expect(c.length).toBeGreaterThan(0);
  });
}

/**
 * Chunks of `before` missing from `after` (and the reverse) must be few and form one run of
 * consecutive chunks that covers the edit at [pos, pos + removed) / [pos, pos + inserted).
 */
function expectLocalChange(before: Piece[], after: Piece[], pos: number, removed: number, inserted: number, maxChanged: number): void {
  const idsAfter = new Set(after.map((c) => c.id));
  const idsBefore = new Set(before.map((c) => c.id));
  for (const [list, other, len] of [
    [before, idsAfter, removed],
    [after, idsBefore, inserted],
  ] as const) {
    const changed = list.map((c, i) => ({ c, i })).filter(({ c }) => !other.has(c.id));
    expect(changed.length).toBeGreaterThan(0);
    expect(changed.length).toBeLessThanOrEqual(maxChanged);
    // consecutive
    changed.forEach(({ i }, k) => expect(i).toBe(changed[0]!.i + k));
    // adjacent to the edit: the run starts at or before it and ends at or after it
    const first = changed[0]!.c;
    const last = changed[changed.length - 1]!.c;
    expect(first.offset).toBeLessThanOrEqual(pos);
    expect(last.offset + last.length).toBeGreaterThanOrEqual(pos + len);
  }
  // Everything before the run is at the same offset; everything after it is shifted by the edit.
  const shift = inserted - removed;
  const firstChanged = before.findIndex((c) => !idsAfter.has(c.id));
  for (let i = 0; i < firstChanged; i++) expect(after[i]).toEqual(before[i]);
  const tailBefore = before.slice(before.findLastIndex((c) => !idsAfter.has(c.id)) + 1);
  const tailAfter = after.slice(after.findLastIndex((c) => !idsBefore.has(c.id)) + 1);
  expect(tailAfter.map((c) => ({ ...c, offset: c.offset - shift }))).toEqual(tailBefore);
  const shared = before.filter((c) => idsAfter.has(c.id)).length;
  expect(shared / before.length).toBeGreaterThan(0.95);
}

describe('chunker', () => {
  it('only the chunks around an insertion change (small chunks, many positions)', async () => {
    const chunker = new Chunker(SMALL, seedA);
    const data = randomData(4 * MiB, 'insert');
    const base = await chunkAll(chunker, data);
    expect(base.length).toBeGreaterThan(200);
    const r = prng(42);
    for (let round = 0; round < 12; round++) {
      const pos = Math.floor(r() * data.length);
      const len = 1 + Math.floor(r() * 3000);
      const edited = Buffer.concat([data.subarray(0, pos), randomData(len, `insert-${round}`), data.subarray(pos)]);
      const chunks = await chunkAll(chunker, edited);
      expectLimits(chunks, SMALL, edited.length);
      expectLocalChange(base, chunks, pos, 0, len, 4);
    }
  });

  it('only the chunks around a deletion or an overwrite change', async () => {
    const chunker = new Chunker(SMALL, seedA);
    const data = randomData(4 * MiB, 'delete');
    const base = await chunkAll(chunker, data);
    const r = prng(7);
    for (let round = 0; round < 6; round++) {
      const pos = Math.floor(r() * (data.length - 5000));
      const len = 1 + Math.floor(r() * 4000);
      const deleted = Buffer.concat([data.subarray(0, pos), data.subarray(pos + len)]);
      expectLocalChange(base, await chunkAll(chunker, deleted), pos, len, 0, 4);
      const overwritten = Buffer.from(data);
      randomData(len, `overwrite-${round}`).copy(overwritten, pos); // seeded: the test is reproducible
      // an overwrite of len bytes spans at most len / min + 2 chunks, plus one to resynchronise
      expectLocalChange(base, await chunkAll(chunker, overwritten), pos, len, len, Math.ceil(len / SMALL.min) + 4);
    }
  });

  it('default (disk image) sizes: an insertion in a 24 MiB stream changes only nearby chunks, across window refills', async () => {
    const chunker = new Chunker(DEFAULT_CHUNKER, seedA);
    const data = randomData(24 * MiB, 'big');
    const base = await chunkAll(chunker, data, [4 * MiB]);
    expect(base.length).toBeGreaterThan(24 * MiB / DEFAULT_CHUNKER.max);
    expectLimits(base, DEFAULT_CHUNKER, data.length);
    // 10 MiB + a bit: past the chunker's first two 4 MiB windows, so the insertion shifts window boundaries too
    const pos = 10 * MiB + 12345;
    const edited = Buffer.concat([data.subarray(0, pos), Buffer.from('inserted bytes'), data.subarray(pos)]);
    const chunks = await chunkAll(chunker, edited, [4 * MiB]);
    expectLimits(chunks, DEFAULT_CHUNKER, edited.length);
    expectLocalChange(base, chunks, pos, 0, 14, 3);
  });

  it('the same input gives the same chunks, however the stream is split', async () => {
    const chunker = new Chunker(SMALL, seedA);
    const data = randomData(10 * MiB, 'split'); // > the 8 MiB window: exercises refills
    const whole = await chunkAll(chunker, data, [data.length]);
    const r = prng(3);
    const odd = Array.from({ length: 64 }, () => 1 + Math.floor(r() * 300_000));
    expect(await chunkAll(chunker, data, odd)).toEqual(whole);
    expect(await chunkAll(chunker, data, [1, 7, 65536, 3])).toEqual(whole);
    // a second chunker with the same key agrees
    expect(await chunkAll(new Chunker(SMALL, Buffer.from(seedA)), data, [MiB])).toEqual(whole);
  });

  it('a reader that fills the window (files) cuts exactly the chunks of the stream path, short reads included', async () => {
    const chunker = new Chunker(DEFAULT_CHUNKER, seedA);
    const data = Buffer.concat([randomData(13 * MiB, 'reader'), Buffer.alloc(3 * MiB), randomData(5 * MiB + 12345, 'reader-2')]);
    const fromStream = await chunkAll(chunker, data, [4 * MiB]);
    const fromReader: string[] = [];
    for await (const c of chunker.chunks(readerOver(data, { seed: 3 }).read)) fromReader.push(sha256hex(c));
    expect(fromReader).toEqual(fromStream.map((c) => c.id));
  });

  it('the observer sees every byte once, in order, and a window is read into again only after the observer released it', async () => {
    const chunker = new Chunker(DEFAULT_CHUNKER, seedA);
    const data = Buffer.concat([randomData(19 * MiB, 'observed'), Buffer.alloc(2 * MiB), randomData(3 * MiB + 999, 'observed-2')]);
    // A slow observer that reads the bytes it saw only when asked to release them: had the chunker
    // read into a window before that, the hash would take the new bytes and not match.
    const sha = createHash('sha256');
    const views: Buffer[] = [];
    let consumed = 0;
    const observer = {
      attach: (w: Buffer) => expect(w.buffer).toBeInstanceOf(SharedArrayBuffer),
      seen: (bytes: Buffer) => views.push(bytes),
      released: async (ticket = views.length) => {
        await new Promise((r) => setTimeout(r, 5));
        for (; consumed < ticket; consumed++) sha.update(views[consumed]!);
      },
    };
    const slow = readerOver(data, { seed: 11, delayMs: 3 });
    const chunks: string[] = [];
    for await (const c of chunker.chunks(slow.read, observer)) chunks.push(sha256hex(c));
    await observer.released();
    expect(sha.digest('hex')).toBe(sha256hex(data));
    expect(chunks).toEqual((await chunkAll(chunker, data, [MiB])).map((c) => c.id));
    expect(slow.state.reads).toBeGreaterThan(8);

    // A consumer that stops early: the generator returns only once no read is writing into its
    // windows, and starts none after the read under way (a slow source is not read on for nothing).
    Object.assign(slow.state, { at: 0, reads: 0 });
    let readsAtBreak = 0;
    for await (const _ of chunker.chunks(slow.read)) {
      readsAtBreak = slow.state.reads;
      break;
    }
    expect(slow.state.inFlight).toBe(0);
    expect(slow.state.reads - readsAtBreak).toBeLessThanOrEqual(1);
  });

  it('a chunk stays unchanged until the observer released it: its reader may hold it beyond the next pull (workers seal chunks in place)', async () => {
    const chunker = new Chunker(DEFAULT_CHUNKER, seedA);
    const data = Buffer.concat([randomData(22 * MiB, 'held'), Buffer.alloc(MiB, 3), randomData(2 * MiB + 77, 'held-2')]);
    const held: { view: Buffer; digest: string }[] = [];
    let checked = 0;
    const observer = {
      attach: () => {},
      seen: () => 0,
      // Like a backup: what is released is every chunk yielded before the call, checked only later
      // (a worker still reading it), so an early overwrite shows.
      released: async () => {
        const mine = held.splice(0);
        await new Promise((r) => setTimeout(r, 10));
        for (const h of mine) expect(sha256hex(h.view)).toBe(h.digest);
        checked += mine.length;
      },
    };
    let total = 0;
    for await (const c of chunker.chunks(readerOver(data).read, observer)) {
      held.push({ view: c, digest: sha256hex(c) });
      total++;
    }
    await observer.released();
    expect(checked).toBe(total);
    expect(total).toBeGreaterThan(60);
  });

  it('chunk sizes stay within min and max, also on runs of one byte value', async () => {
    const chunker = new Chunker(SMALL, seedA);
    const mixed = Buffer.concat([randomData(MiB, 'm1'), Buffer.alloc(MiB), Buffer.alloc(MiB, 0xff), randomData(MiB + 777, 'm2')]);
    const chunks = await chunkAll(chunker, mixed);
    expectLimits(chunks, SMALL, mixed.length);
    // zeros never cut early: a constant run gives max-size chunks (a constant gear hash never matches,
    // or matches at the same offset every time): either way identical chunks
    const zeroChunks = chunks.filter((c) => c.offset >= MiB + SMALL.max && c.offset + c.length <= 2 * MiB - SMALL.max);
    expect(new Set(zeroChunks.map((c) => c.id)).size).toBe(1);
    // tiny inputs: one chunk
    expect((await chunkAll(chunker, Buffer.alloc(100, 1))).map((c) => c.length)).toEqual([100]);
    expect(await chunkAll(chunker, Buffer.alloc(0))).toEqual([]);
    const avg = (mixed.length - 2 * MiB) / chunks.filter((c) => c.offset < MiB || c.offset >= 3 * MiB).length;
    expect(avg).toBeGreaterThan(SMALL.min);
    expect(avg).toBeLessThan(SMALL.max);
  });

  it('different keys give different boundaries (and different chunk ids)', async () => {
    const data = randomData(4 * MiB, 'keys');
    const a = await chunkAll(new Chunker(SMALL, seedA), data);
    const b = await chunkAll(new Chunker(SMALL, seedB), data);
    expectLimits(b, SMALL, data.length);
    const endsA = new Set(a.map((c) => c.offset + c.length));
    const common = b.filter((c) => endsA.has(c.offset + c.length)).length;
    // the last chunk always ends at EOF; chance coincidences stay rare
    expect(common / b.length).toBeLessThan(0.1);
    // and keyed ids: the same bytes get unrelated ids in two stores
    const k1 = StoreKeys.generate();
    const k2 = StoreKeys.generate();
    const chunk = data.subarray(0, 4096);
    expect(k1.blobId(chunk).equals(k1.blobId(Buffer.from(chunk)))).toBe(true);
    expect(k1.blobId(chunk).equals(k2.blobId(chunk))).toBe(false);
    const c1 = await chunkAll(new Chunker(SMALL, k1.chunkerSeed), data);
    const c2 = await chunkAll(new Chunker(SMALL, k2.chunkerSeed), data);
    expect(c1.map((c) => c.length)).not.toEqual(c2.map((c) => c.length));
  });

  it('cuts exactly where the plain reference rule cuts (the WebAssembly scan changes no boundary)', async () => {
    const data = Buffer.concat([
      randomData(5 * MiB, 'ref-1'),
      textData(3 * MiB, 5),
      Buffer.alloc(2 * MiB),
      randomData(9 * MiB + 4321, 'ref-2'), // past the 8 MiB window
    ]);
    for (const params of [SMALL, DEFAULT_CHUNKER, { min: 1000, avg: 4000, max: 9000 }]) {
      for (const seed of [seedA, seedB]) {
        const lengths = (await chunkAll(new Chunker(params, seed), data, [3 * MiB + 1])).map((c) => c.length);
        expect(lengths).toEqual(referenceCuts(data, params, seed));
      }
    }
  });

  it('the scanner module checked in is the one gearscan.wat compiles to', async () => {
    expect(await readFile(GEARSCAN_TS, 'utf8')).toBe(await gearScanModuleSource());
  });

  it('rejects inconsistent sizes', () => {
    expect(() => new Chunker({ min: 8, avg: 8, max: 16 }, seedA)).toThrow(/bad chunker sizes/);
    expect(() => new Chunker({ min: 8, avg: 64, max: 32 }, seedA)).toThrow(/bad chunker sizes/);
  });
});
