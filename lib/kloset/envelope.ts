// Standalone encrypted objects (config, index files, snapshots) share one envelope:
//
//   "KLST" | type u8 | version u8 | 0 u16 | salt[16] | AES-256-GCM(ciphertext) | tag[16]
//
// The 24-byte header is authenticated (AAD), so type and version cannot be swapped; the key is
// derived from the object's own random salt, so the all-zero nonce is used once per key.
import { type StoreKeys, open, randomSalt, seal, SALT_LENGTH, IntegrityError } from './crypto.js';

const MAGIC = Buffer.from('KLST');
export const ENVELOPE_HEADER = 8 + SALT_LENGTH;
const ZERO_NONCE = Buffer.alloc(12);

export enum ObjectType {
  Config = 1,
  Index = 2,
  Snapshot = 3,
}

const PURPOSE: Record<ObjectType, string> = {
  [ObjectType.Config]: 'config',
  [ObjectType.Index]: 'index',
  [ObjectType.Snapshot]: 'snapshot',
};

export const ENVELOPE_VERSION = 1;

export function sealObject(keys: StoreKeys, type: ObjectType, plaintext: Buffer): Buffer {
  const header = Buffer.alloc(ENVELOPE_HEADER);
  MAGIC.copy(header, 0);
  header.writeUInt8(type, 4);
  header.writeUInt8(ENVELOPE_VERSION, 5);
  randomSalt().copy(header, 8);
  const key = keys.objectKey(header.subarray(8), PURPOSE[type]);
  return Buffer.concat([header, seal(key, ZERO_NONCE, plaintext, header)]);
}

/** Decrypts and authenticates an envelope; `name` is the object's key, used in error messages. */
export function openObject(keys: StoreKeys, type: ObjectType, data: Buffer, name: string): Buffer {
  if (data.length < ENVELOPE_HEADER || !data.subarray(0, 4).equals(MAGIC)) {
    throw new IntegrityError(`${name} is not a Kloset object`);
  }
  const header = data.subarray(0, ENVELOPE_HEADER);
  if (header.readUInt8(4) !== type) throw new IntegrityError(`${name} has the wrong object type`);
  const version = header.readUInt8(5);
  if (version !== ENVELOPE_VERSION) throw new IntegrityError(`${name} has unsupported version ${version}`);
  const key = keys.objectKey(header.subarray(8), PURPOSE[type]);
  return open(key, ZERO_NONCE, data.subarray(ENVELOPE_HEADER), name, header);
}
