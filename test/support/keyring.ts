import { randomBytes, randomUUID } from 'node:crypto';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { type AtRestKeyring, masterKeyId } from '../../src/crypto/at-rest.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import type { MasterKeys } from '../../src/crypto/master-key.ts';
import { type KeyringAdapters, openKeyring } from '../../src/crypto/open-keyring.ts';
import { SecretBox } from '../../src/crypto/secret-box.ts';
import type { Database } from '../../src/db/database.ts';
import { FerryError } from '../../src/domain/ferry-error.ts';
import { createObjectStore } from '../../src/store/create-object-store.ts';
import { createTestDatabase, preferDialect } from './databases.ts';
import type { EncryptedObjectStore } from '../../src/store/encrypted-object-store.ts';

/** The secret key most tests configure (FERRY_SECRET_KEY); the keyring's master key derives from it. */
export const TEST_SECRET = 'ferry-test-secret-0123456789abcdef-xyz';

/**
 * The keyring and secret box of `database` for a configuration whose only key is
 * FERRY_SECRET_KEY = `secretKey`: what an app or job built with that configuration uses.
 */
export function testKeys(database: Database, secretKey = TEST_SECRET): Promise<KeyringAdapters> {
  return openKeyring(database, loadConfig({ FERRY_SECRET_KEY: secretKey }));
}

/** The secret box of `testKeys`. */
export async function testSecrets(database: Database, secretKey = TEST_SECRET): Promise<SecretBox> {
  return (await testKeys(database, secretKey)).secrets;
}

/** Master keys from raw keys, the first current (FERRY_ENCRYPTION_KEY="a,b"). */
export function masterKeys(...keys: Uint8Array[]): MasterKeys {
  return { current: keys[0]!, all: keys, source: 'FERRY_ENCRYPTION_KEY' };
}

/** A keyring over `database` under the given master keys, with a legacy (v1) secret key. */
export function keyringWith(
  database: Database,
  keys: Uint8Array[],
  options: { legacyKey?: string; now?: () => Date } = {},
): KeyringAdapters {
  const keyring = new Keyring(database, masterKeys(...keys), options.now ? { now: options.now } : {});
  const legacy = options.legacyKey ?? TEST_SECRET;
  return { keyring, secrets: new SecretBox(keyring, () => legacy) };
}

/** A random master key and its hex id. */
export function newMasterKey(): { key: Buffer; id: string } {
  const key = randomBytes(32);
  return { key, id: masterKeyId(key).toString('hex') };
}

/**
 * Data keys held in memory (no database) for the object-store tests: one active key,
 * `rotate()` makes a new one active and keeps the old ones readable.
 */
export function memoryKeyring(...master: Uint8Array[]): AtRestKeyring & {
  rotate(): string;
  forget(id: string): void;
  readonly activeId: string;
} {
  const keys = new Map<string, Buffer>();
  let active = randomUUID();
  keys.set(active, randomBytes(32));
  return {
    masterKeys: master.length ? master : [randomBytes(32)],
    get activeId() {
      return active;
    },
    async activeDataKey() {
      return { id: active, key: keys.get(active)! };
    },
    async dataKey(id: string) {
      const key = keys.get(id);
      if (!key) throw new FerryError('decryption_failed', `cannot open data key: data key ${id} is not here`);
      return key;
    },
    rotate() {
      active = randomUUID();
      keys.set(active, randomBytes(32));
      return active;
    },
    forget(id: string) {
      keys.delete(id);
    },
  };
}

/** The keyring, secret box and object store a process with `config` builds over `database`. */
export async function testAdapters(
  database: Database,
  config: Config,
): Promise<KeyringAdapters & { store: EncryptedObjectStore }> {
  const keys = await openKeyring(database, config);
  return { ...keys, store: await createObjectStore(config, keys.keyring) };
}

/**
 * A secret box over a database of its own (PGlite when this run tests it), for suites that
 * need sealed secrets but no database otherwise; `close()` drops it.
 */
export async function scratchSecrets(): Promise<{ secrets: SecretBox; close(): Promise<void> }> {
  const t = await createTestDatabase(preferDialect('pglite'));
  const { secrets } = await testKeys(t.database);
  await secrets.ready();
  return { secrets, close: () => t.drop() };
}
