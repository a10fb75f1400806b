import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdDecompress } from 'node:zlib';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { DataKey, KeyFile } from './keys.ts';

const compress = promisify(zstdCompress);
const decompress = promisify(zstdDecompress);

/**
 * The layout of a tenant's backups at a destination (restic's object model, per tenant):
 *
 *     backups/<tenant>/keys/<key id>.json        the data key, sealed (keys.ts)
 *     backups/<tenant>/chunks/<ab>/<chunk id>    zstd, then AES-256-GCM; the id is a keyed hash of the plain bytes
 *     backups/<tenant>/manifests/<backup>.json   the signed manifest
 *
 * Chunks are written once and never changed; a manifest is written after every chunk it
 * lists, so a manifest that exists names chunks that exist. Only prune deletes chunks.
 */
export const repositoryPrefix = (tenantId: string) => `backups/${tenantId}`;
export const chunkObjectKey = (tenantId: string, id: string) =>
  `${repositoryPrefix(tenantId)}/chunks/${id.slice(0, 2)}/${id}`;
export const manifestObjectKey = (tenantId: string, backupId: string) =>
  `${repositoryPrefix(tenantId)}/manifests/${backupId}.json`;
export const keyObjectKey = (tenantId: string, keyId: string) =>
  `${repositoryPrefix(tenantId)}/keys/${keyId}.json`;

/** `FBC1`: a chunk object's first bytes, then a 12-byte nonce, the ciphertext and the 16-byte tag. */
const MAGIC = Buffer.from('FBC1');
const NONCE = 12;
const TAG = 16;

/** The name of a chunk: HMAC-SHA256 of its plain bytes under the data key's id key. */
export function chunkId(key: DataKey, plain: Buffer): string {
  return createHmac('sha256', key.idKey).update(plain).digest('hex');
}

/** zstd level 1: about twice as fast as the default 3, for a few percent more bytes. */
const ZSTD_LEVEL = { params: { [constants.ZSTD_c_compressionLevel]: 1 } };

/** A chunk as stored: compressed, then encrypted with the chunk id as associated data. */
export async function sealChunk(key: DataKey, id: string, plain: Buffer): Promise<Buffer> {
  const packed = await compress(plain, ZSTD_LEVEL);
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', key.chunkKey, nonce);
  cipher.setAAD(Buffer.from(id));
  const body = Buffer.concat([cipher.update(packed), cipher.final()]);
  return Buffer.concat([MAGIC, nonce, body, cipher.getAuthTag()]);
}

/**
 * The plain bytes of a stored chunk, checked three ways: the GCM tag (no altered or
 * truncated byte decrypts), the decompression, and the keyed hash against its name (no chunk
 * stands in for another). `where` names the chunk in the error.
 */
export async function openChunk(key: DataKey, id: string, stored: Buffer, where: string): Promise<Buffer> {
  const corrupt = (why: string) => new FerryError('backup_corrupt', `${where}: chunk ${id} ${why}`);
  if (stored.length < MAGIC.length + NONCE + TAG || !stored.subarray(0, 4).equals(MAGIC))
    throw corrupt('is truncated or not a Ferry chunk');
  const nonce = stored.subarray(4, 4 + NONCE);
  const tag = stored.subarray(stored.length - TAG);
  let packed: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key.chunkKey, nonce, { authTagLength: TAG });
    decipher.setAAD(Buffer.from(id));
    decipher.setAuthTag(tag);
    packed = Buffer.concat([
      decipher.update(stored.subarray(4 + NONCE, stored.length - TAG)),
      decipher.final(),
    ]);
  } catch {
    throw corrupt('does not decrypt: it was altered or truncated');
  }
  let plain: Buffer;
  try {
    plain = await decompress(packed);
  } catch {
    throw corrupt('does not decompress');
  }
  if (chunkId(key, plain) !== id) throw corrupt('does not match its name');
  return plain;
}

/** Writes an object and publishes it (put, then commit). */
export async function putObject(
  store: ObjectStore,
  key: string,
  bytes: Buffer,
  contentType?: string,
): Promise<void> {
  const pending = await store.put(key, Readable.from([bytes]), contentType ? { contentType } : {});
  await pending.commit();
}

/** An object's bytes, or null when it does not exist. */
export async function readObject(store: ObjectStore, key: string): Promise<Buffer | null> {
  let stream: Readable;
  try {
    stream = await store.get(key);
  } catch (err) {
    if (err instanceof FerryError && err.code === 'not_found') return null;
    throw err;
  }
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

/** Writes the key file unless the destination has it already. */
export async function ensureKeyFile(store: ObjectStore, file: KeyFile): Promise<void> {
  if (await store.head(keyObjectKey(file.tenant_id, file.key_id))) return;
  await writeKeyFile(store, file);
}

/** Writes (or replaces, in one step) the key file at a destination. */
export async function writeKeyFile(store: ObjectStore, file: KeyFile): Promise<void> {
  const key = keyObjectKey(file.tenant_id, file.key_id);
  await putObject(store, key, Buffer.from(`${JSON.stringify(file, null, 2)}\n`), 'application/json');
}

/** The key file of a key at a destination; `backup_corrupt` when it is missing or unreadable. */
export async function readKeyFile(
  store: ObjectStore,
  tenantId: string,
  keyId: string,
  where: string,
): Promise<KeyFile> {
  const bytes = await readObject(store, keyObjectKey(tenantId, keyId));
  if (!bytes) throw new FerryError('backup_corrupt', `${where}: the key file of key ${keyId} is missing`);
  try {
    return JSON.parse(bytes.toString('utf8')) as KeyFile;
  } catch {
    throw new FerryError('backup_corrupt', `${where}: the key file of key ${keyId} is not valid JSON`);
  }
}

/** Every chunk id stored at a destination for a tenant (prune, verify). */
export async function listChunkIds(store: ObjectStore, tenantId: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const prefix = `${repositoryPrefix(tenantId)}/chunks/`;
  for await (const object of store.list(prefix)) {
    const id = object.key.slice(object.key.lastIndexOf('/') + 1);
    out.set(id, object.bytes);
  }
  return out;
}
