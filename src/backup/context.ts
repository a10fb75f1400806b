import type { Config } from '../config/config.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import { createPlainObjectStore } from '../store/create-object-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { BackupContext } from './service.ts';

/** The backup operations' context from the configuration and the process's adapters. */
export function backupContext(deps: {
  readonly database: Database;
  readonly config: Config;
  readonly store: ObjectStore;
  readonly secrets: SecretBox;
  readonly now?: (() => Date) | undefined;
}): BackupContext {
  return {
    database: deps.database,
    secretKey: loadOrCreateSecretKey(deps.config),
    secrets: deps.secrets,
    defaultStore: createPlainObjectStore(deps.config),
    files: deps.store,
    outbound: outboundPolicy(deps.config.outboundAllow),
    ...(deps.now ? { now: deps.now } : {}),
  };
}
