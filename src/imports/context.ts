import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { ImportContext } from './service.ts';

/** The import operations' context from the configuration and the process's adapters. */
export function importContext(deps: {
  readonly database: Database;
  readonly config: Config;
  readonly store: ObjectStore;
  readonly now?: (() => Date) | undefined;
}): ImportContext {
  return {
    database: deps.database,
    secretKey: loadOrCreateSecretKey(deps.config),
    store: deps.store,
    limits: deps.config.imports.limits,
    batchSize: deps.config.imports.batchSize,
    ...(deps.now ? { now: deps.now } : {}),
  };
}
