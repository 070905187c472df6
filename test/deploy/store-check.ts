// Not a test file: package.test.ts bundles this with the deploy bundles' esbuild options
// (scripts/bundle.ts COMMON), drops it next to the function bundles of the unpacked zip and next to
// the job bundle, and runs it there with node. It creates a store in the directory named by argv[2],
// backs up 4 MiB (text, random bytes, zeros), restores the snapshot and compares, so the bundled
// store code loads the natives from the node_modules shipped beside it: zstd-napi (compression on
// the worker threads, decompression on restore), @napi-rs/blake-hash (keyed blob ids, object names)
// and argon2 (the passphrase KDF: a fast t=1, m=8192 here, through node-argon2 all the same). Prints
// one JSON line, with the `.node` files the process has loaded; a missing or broken native makes it
// fail.
import { createHash, createCipheriv } from 'node:crypto';
import { createRequire } from 'node:module';
import { Archiver, Restorer, initStore, openStore } from '../../lib/kloset/store.js';

const MiB = 1024 * 1024;
const PASSPHRASE = 'bundle check';

function data(): Buffer {
  const words = 'volume snapshot kloset block scaleway qcow2 cluster backup restore pack '.split(' ');
  let text = '';
  for (let i = 0; text.length < 2 * MiB; i++) text += words[(i * 7919) % words.length] + (i % 13 === 0 ? '\n' : ' ');
  const random = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16)).update(Buffer.alloc(MiB));
  return Buffer.concat([Buffer.from(text.slice(0, 2 * MiB)), random, Buffer.alloc(MiB)]);
}

const dir = process.argv[2];
if (!dir) throw new Error('usage: node store-check.js <empty directory>');
const image = data();
await initStore(dir, PASSPHRASE, { kdf: { name: 'argon2id', t: 1, m: 8192, p: 1 } });
const repo = await openStore(dir, PASSPHRASE);
try {
  const backup = await new Archiver(repo).backup(
    (async function* () {
      for (let at = 0; at < image.length; at += MiB) yield image.subarray(at, at + MiB);
    })(),
    { meta: { source: { path: 'bundle-check' }, tags: {} } },
  );
  const parts: Buffer[] = [];
  await new Restorer(repo).restore(backup.snapshot, { write: async (bufs) => void parts.push(...bufs.map((b) => Buffer.from(b))) });
  const restored = Buffer.concat(parts);
  const req = createRequire(import.meta.url);
  console.log(
    JSON.stringify({
      imageSize: backup.imageSize,
      bytesAdded: backup.bytesAdded,
      restoredEqual: restored.equals(image),
      sha256: backup.sha256 === createHash('sha256').update(image).digest('hex'),
      zstdFrom: req.resolve('zstd-napi/binding'),
      blake3From: req.resolve('@napi-rs/blake-hash'),
      argon2From: req.resolve('argon2'),
      // What was dlopen'ed, not what would resolve: the addons stay mapped once loaded.
      addons: (process.report.getReport() as { sharedObjects: string[] }).sharedObjects.filter((p) => p.endsWith('.node')),
    }),
  );
} finally {
  await repo.backend.close();
}
