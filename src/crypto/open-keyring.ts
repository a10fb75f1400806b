import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { Keyring, type KeyringOptions } from './keyring.ts';
import { resolveMasterKeys } from './master-key.ts';
import { SecretBox } from './secret-box.ts';

/** The keyring of a database and the secret box over it: what sealing and encryption at rest use. */
export interface KeyringAdapters {
  readonly keyring: Keyring;
  readonly secrets: SecretBox;
}

/**
 * Resolves the master keys (running FERRY_ENCRYPTION_KEY_COMMAND once) and builds the
 * process's keyring and secret box over `database`. The keyring is loaded lazily; callers
 * that seal inside a transaction call `ready()` first.
 */
export async function openKeyring(
  database: Database,
  config: Pick<Config, 'dataDir' | 'secretKey' | 'storage'> & Partial<Pick<Config, 'previousSecretKeys'>>,
  options: KeyringOptions = {},
): Promise<KeyringAdapters> {
  const keyring = new Keyring(database, await resolveMasterKeys(config), options);
  return {
    keyring,
    secrets: new SecretBox(keyring, () => [
      loadOrCreateSecretKey(config),
      ...(config.previousSecretKeys ?? []),
    ]),
  };
}
