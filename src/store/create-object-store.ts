import type { Config, StorageConfig } from '../config/config.ts';
import { resolveMasterKeys } from '../crypto/master-key.ts';
import { EncryptedObjectStore } from './encrypted-object-store.ts';
import { LocalObjectStore } from './local-object-store.ts';
import type { ObjectStore } from './object-store.ts';
import { s3ObjectStore } from './s3-client.ts';

/** Whether new objects are encrypted at rest: FERRY_STORAGE_ENCRYPTION, where `auto` means local disk only. */
export function encryptsAtRest(storage: Pick<StorageConfig, 'kind' | 'encryption'>): boolean {
  return storage.encryption === 'on' || (storage.encryption === 'auto' && storage.kind === 'local');
}

/**
 * The configured object store: local disk under `<FERRY_DATA_DIR>/files` or the S3
 * bucket, wrapped in encryption at rest when it is on. When it is off but master
 * keys exist, files encrypted earlier still read (new ones are stored as plaintext).
 */
export async function createObjectStore(
  config: Pick<Config, 'dataDir' | 'secretKey' | 'storage'>,
): Promise<ObjectStore> {
  const { storage } = config;
  let base: ObjectStore;
  if (storage.kind === 's3') {
    if (!storage.s3) throw new Error('FERRY_STORAGE=s3 without an S3 configuration'); // config.ts prevents this
    base = s3ObjectStore(storage.s3);
  } else {
    base = new LocalObjectStore({ root: storage.localDir });
  }
  if (encryptsAtRest(storage)) return new EncryptedObjectStore(base, await resolveMasterKeys(config));
  const keys = await resolveMasterKeys(config, { create: false });
  return keys ? new EncryptedObjectStore(base, keys, { encryptWrites: false }) : base;
}

/**
 * The configured storage without encryption at rest, for data that is encrypted before it
 * is stored (tenant backups: every chunk is sealed under the tenant's backup key).
 */
export function createPlainObjectStore(config: Pick<Config, 'storage'>): ObjectStore {
  const { storage } = config;
  if (storage.kind === 's3') {
    if (!storage.s3) throw new Error('FERRY_STORAGE=s3 without an S3 configuration');
    return s3ObjectStore(storage.s3);
  }
  return new LocalObjectStore({ root: storage.localDir });
}
