// The ranged S3 reader against a real S3-compatible server (fauxqs), through a proxy that breaks
// responses the way networks do: bodies cut off mid-way, bodies that stall. And the whole path: a
// CLI backup from an s3:// source through that proxy, restored and compared.
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startObjectStore, type ObjectStoreServer } from '../../emulator/objectstore.js';
import { makeS3Client } from '../../lib/scaleway/s3.js';
import { S3ObjectReader, type S3ReaderOptions } from '../../lib/scaleway/s3-reader.js';
import { cliBackupJson, cliOk, FAST_KDF_ARGS, imageData, makeTmp, MiB, randomData } from '../helpers/kloset.js';

type Fault = { cutAfter: number } | { stallAfter: number } | null;

/** Faults for the first GET of each listed range (a new try asks another range, or the same once). */
function once(faults: Record<string, Fault>): (range: string) => Fault {
  const left = new Map(Object.entries(faults));
  return (range) => {
    const f = left.get(range) ?? null;
    left.delete(range);
    return f;
  };
}
const range = (start: number, endExclusive: number) => `bytes=${start}-${endExclusive - 1}`;

/** An HTTP proxy in front of the S3 server; `fault` decides, per ranged GET, how to break its body. */
class FaultyProxy {
  server!: Server;
  endpoint = '';
  ranges: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Decides for ranged GETs (by range), or for every GET with `anyGet`. */
  fault: (range: string) => Fault = () => null;
  anyGet: ((url: string, range: string | undefined) => Fault) | null = null;
  cuts = 0;

  async start(upstream: string): Promise<void> {
    const up = new URL(upstream);
    this.server = createServer((req, res) => {
      const ranged = req.method === 'GET' && typeof req.headers.range === 'string';
      const fault = this.anyGet && req.method === 'GET' ? this.anyGet(req.url!, req.headers.range) : ranged ? this.fault(req.headers.range!) : null;
      if (fault) this.cuts++;
      if (ranged) {
        this.ranges.push(req.headers.range!);
        this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
        res.on('close', () => this.inFlight--);
      }
      const fwd = request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        res.writeHead(upRes.statusCode!, upRes.headers);
        if (!fault) return void upRes.pipe(res);
        const limit = 'cutAfter' in fault ? fault.cutAfter : fault.stallAfter;
        let sent = 0;
        upRes.on('data', (d: Buffer) => {
          if (sent >= limit) return;
          const part = d.subarray(0, limit - sent);
          sent += part.length;
          // A cut: the connection closes once these bytes are out. A stall: the rest never comes.
          res.write(part, () => void (sent >= limit && 'cutAfter' in fault && res.socket?.destroy()));
        });
        upRes.on('end', () => sent < limit && res.end()); // shorter than the cut: delivered whole
      });
      req.pipe(fwd);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  reset(): void {
    this.ranges = [];
    this.maxInFlight = 0;
    this.cuts = 0;
    this.fault = () => null;
    this.anyGet = null;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

describe('S3ObjectReader (ranged, resumable reads of one object)', () => {
  let s3server: ObjectStoreServer;
  let direct: S3Client;
  let viaProxy: S3Client;
  const proxy = new FaultyProxy();
  const data = randomData(21 * MiB + 123, 's3-reader'); // 6 parts of 4 MiB, the last one short
  const PART = 4 * MiB;

  /** Reads the whole object in odd-sized reads, as the chunker does. */
  async function readAll(key: string, opts: S3ReaderOptions): Promise<Buffer> {
    const reader = await S3ObjectReader.open(viaProxy, 'b', key, { backoffMs: 10, ...opts });
    try {
      const out = Buffer.alloc(reader.size);
      let at = 0;
      for (;;) {
        const n = await reader.read(out, at, Math.min(MiB + 7, out.length - at));
        if (n === 0) break;
        at += n;
      }
      expect(at).toBe(reader.size);
      return out;
    } finally {
      reader.close();
    }
  }

  beforeAll(async () => {
    s3server = await startObjectStore({ buckets: ['b'] });
    const creds = { region: 'fr-par', accessKeyId: s3server.accessKeyId, secretAccessKey: s3server.secretAccessKey };
    direct = makeS3Client({ endpoint: s3server.endpoint, ...creds });
    await proxy.start(s3server.endpoint);
    viaProxy = makeS3Client({ endpoint: proxy.endpoint, ...creds });
    // Over 11 MiB: fauxqs takes it only as a multipart upload.
    await new Upload({ client: direct, params: { Bucket: 'b', Key: 'img', Body: data }, partSize: 8 * MiB }).done();
  });
  afterEach(() => proxy.reset());
  afterAll(async () => {
    direct?.destroy();
    viaProxy?.destroy();
    await proxy.stop();
    await s3server?.stop();
  });

  it('reads the object in ranged parts, in order, with at most `concurrency` in flight', async () => {
    const got = await readAll('img', { partSize: PART, concurrency: 3 });
    expect(got.equals(data)).toBe(true);
    expect(proxy.ranges).toHaveLength(6);
    expect(new Set(proxy.ranges)).toEqual(
      new Set([0, 1, 2, 3, 4, 5].map((i) => `bytes=${i * PART}-${Math.min(data.length, (i + 1) * PART) - 1}`)),
    );
    expect(proxy.maxInFlight).toBeGreaterThan(1);
    expect(proxy.maxInFlight).toBeLessThanOrEqual(3);
  });

  it('asks a part again from the byte its cut-off body reached', async () => {
    const cut = MiB + 5;
    proxy.fault = once({ [range(0, PART)]: { cutAfter: cut }, [range(2 * PART, 3 * PART)]: { cutAfter: cut } });
    const retries: { offset: number; attempt: number }[] = [];
    const got = await readAll('img', { partSize: PART, concurrency: 2, onRetry: (i) => retries.push(i) });
    expect(got.equals(data)).toBe(true);
    expect(retries.map((r) => [r.offset, r.attempt]).sort((a, b) => a[0]! - b[0]!)).toEqual([[cut, 1], [2 * PART + cut, 1]]);
    // The new tries ask for the rest of their parts only.
    expect(proxy.ranges).toHaveLength(8);
    expect(proxy.ranges).toEqual(expect.arrayContaining([range(cut, PART), range(2 * PART + cut, 3 * PART)]));
  });

  it('drops a stalled body and asks again', async () => {
    proxy.fault = once({ [range(PART, 2 * PART)]: { stallAfter: 100_000 } });
    const retries: string[] = [];
    const got = await readAll('img', { partSize: PART, concurrency: 2, stallMs: 500, onRetry: (i) => retries.push(i.error) });
    expect(got.equals(data)).toBe(true);
    expect(retries).toEqual([expect.stringMatching(/no byte for 500 ms/)]);
    expect(proxy.ranges).toContain(range(PART + 100_000, 2 * PART));
  });

  it('gives up on a part after `attempts` tries, naming the bytes', async () => {
    proxy.fault = () => ({ cutAfter: 1000 });
    await expect(readAll('img', { partSize: PART, concurrency: 2, attempts: 3 })).rejects.toThrow(
      /s3:\/\/b\/img: bytes \d+-\d+ failed 3 times: body broke off/,
    );
  });

  it('fails when the object is replaced during the read, instead of mixing two objects', async () => {
    await direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'changing', Body: randomData(9 * MiB, 'old') }));
    const reader = await S3ObjectReader.open(viaProxy, 'b', 'changing', { partSize: 2 * MiB, concurrency: 1 });
    try {
      const buf = Buffer.alloc(2 * MiB);
      expect(await reader.read(buf, 0, buf.length)).toBe(buf.length);
      await direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'changing', Body: randomData(9 * MiB, 'new') }));
      await expect((async () => {
        while ((await reader.read(buf, 0, buf.length)) > 0);
      })()).rejects.toThrow(/s3:\/\/b\/changing changed while it was being read/);
    } finally {
      reader.close();
    }
  });

  it('says so for a missing object, and reads an empty one as empty', async () => {
    await expect(S3ObjectReader.open(viaProxy, 'b', 'nope')).rejects.toMatchObject({ code: 'ENOENT', message: 's3://b/nope: no such object' });
    await direct.send(new PutObjectCommand({ Bucket: 'b', Key: 'empty', Body: Buffer.alloc(0) }));
    const reader = await S3ObjectReader.open(viaProxy, 'b', 'empty');
    expect(reader.size).toBe(0);
    expect(await reader.read(Buffer.alloc(10), 0, 10)).toBe(0);
    reader.close();
  });

  it('a CLI backup from an s3:// source survives cut-off bodies; the restore is identical', async () => {
    const tmp = await makeTmp();
    try {
      const image = imageData(40 * MiB + 999, 77);
      await new Upload({ client: direct, params: { Bucket: 'b', Key: 'src.qcow2', Body: image }, partSize: 8 * MiB }).done();
      const env = {
        KLOSET_PASSPHRASE: 'pw',
        KLOSET_S3_ENDPOINT: proxy.endpoint,
        AWS_ACCESS_KEY_ID: s3server.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3server.secretAccessKey,
        AWS_REGION: 'fr-par',
      };
      const part = 4 * MiB; // the reader's default
      const cut = 3 * MiB + 1;
      proxy.fault = once({ [range(0, part)]: { cutAfter: cut }, [range(3 * part, 4 * part)]: { cutAfter: cut } });
      const store = join(tmp.dir, 'store');
      await cliOk(['store', 'init', '--store', store, ...FAST_KDF_ARGS], { env });
      const snap = await cliBackupJson(store, 's3://b/src.qcow2', [], { env });
      expect(snap.bytesRead).toBe(image.length);
      // 11 parts (the last one 999 bytes); two were asked again from where their bodies were cut
      expect(proxy.ranges).toHaveLength(13);
      expect(proxy.ranges).toEqual(expect.arrayContaining([range(cut, part), range(3 * part + cut, 4 * part)]));
      await cliOk(['store', 'restore', '--store', store, snap.snapshot, '--to', join(tmp.dir, 'out.img')], { env });
      expect((await readFile(join(tmp.dir, 'out.img'))).equals(image)).toBe(true);
    } finally {
      await tmp.cleanup();
    }
  });

  it('an S3 store reads through cut-off bodies: every first GET of an object or range is cut, restore and check pass', async () => {
    const tmp = await makeTmp();
    try {
      const image = imageData(30 * MiB + 17, 78);
      await writeFile(join(tmp.dir, 'img'), image);
      const env = (endpoint: string) => ({
        KLOSET_PASSPHRASE: 'pw',
        KLOSET_S3_ENDPOINT: endpoint,
        AWS_ACCESS_KEY_ID: s3server.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3server.secretAccessKey,
        AWS_REGION: 'fr-par',
      });
      const store = 's3://b/store';
      await cliOk(['store', 'init', '--store', store, ...FAST_KDF_ARGS], { env: env(s3server.endpoint) });
      const snap = await cliBackupJson(store, join(tmp.dir, 'img'), [], { env: env(s3server.endpoint) });
      const seen = new Set<string>();
      proxy.anyGet = (url, r) => {
        const k = `${url} ${r?.split('-')[1] ?? ''}`; // a resumed range keeps its end
        if (seen.has(k)) return null;
        seen.add(k);
        return { cutAfter: 100 };
      };
      await cliOk(['store', 'restore', '--store', store, snap.snapshot, '--to', join(tmp.dir, 'out.img')], { env: env(proxy.endpoint) });
      expect((await readFile(join(tmp.dir, 'out.img'))).equals(image)).toBe(true);
      const restoreCuts = proxy.cuts;
      const check = await cliOk(['store', 'check', '--store', store, '--read-data'], { env: env(proxy.endpoint) });
      expect(check.stderr).toMatch(/^no errors: 1 snapshots/m);
      // config, key file, index, snapshot, tree and pack ranges were all cut once
      expect(restoreCuts).toBeGreaterThanOrEqual(6);
      expect(proxy.cuts).toBeGreaterThan(restoreCuts);
    } finally {
      await tmp.cleanup();
    }
  });
});
