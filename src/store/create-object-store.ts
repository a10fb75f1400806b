import type { Config, StorageConfig } from '../config/config.ts';
import type { AtRestKeyring } from '../crypto/at-rest.ts';
import type { MasterKeys } from '../crypto/master-key.ts';
import { FerryError } from '../domain/ferry-error.ts';
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
 * bucket, wrapped in encryption at rest under the process's keyring. When encryption is
 * off, new objects are stored as plaintext and files encrypted earlier still read.
 */
export async function createObjectStore(
  config: Pick<Config, 'storage'>,
  keyring: AtRestKeyring & { readonly master: MasterKeys },
): Promise<EncryptedObjectStore> {
  const { storage } = config;
  const encrypt = encryptsAtRest(storage);
  if (encrypt && storage.kind === 's3' && keyring.master.source === 'key file')
    throw new FerryError(
      'invalid_parameter',
      'FERRY_ENCRYPTION_KEY: encryption at rest with FERRY_STORAGE=s3 needs FERRY_ENCRYPTION_KEY (or its ' +
        'file or command) or FERRY_SECRET_KEY, shared by every Ferry process (a per-machine key file would differ)',
      { parameter: 'FERRY_ENCRYPTION_KEY' },
    );
  return new EncryptedObjectStore(createPlainObjectStore(config), keyring, { encryptWrites: encrypt });
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
