import { backupContext } from '../backup/context.ts';
import type { Config } from '../config/config.ts';
import type { Keyring } from '../crypto/keyring.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { JobDefinition } from '../jobs/types.ts';
import type { Logger } from '../lib/logger.ts';
import { EncryptedObjectStore } from '../store/encrypted-object-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { RotationDeps } from './phases.ts';
import { rotateDataKeys } from './rotate.ts';

export const DATA_KEY_ROTATION_JOB = 'keys.rotate-data';

/** A rotation's dependencies from a process's adapters (a job's context, or a command's). */
export function rotationDeps(adapters: {
  readonly database: Database;
  readonly config: Config;
  readonly store: ObjectStore;
  readonly keyring: Keyring;
  readonly secrets: SecretBox;
  readonly now?: (() => Date) | undefined;
  readonly logger?: Logger | undefined;
}): RotationDeps {
  const { store } = adapters;
  // createObjectStore always wraps the store: files encrypted at rest are read through it.
  if (!(store instanceof EncryptedObjectStore))
    throw new FerryError('internal', 'key rotation needs the object store of encryption at rest');
  const now = adapters.now ?? (() => new Date());
  return {
    database: adapters.database,
    keyring: adapters.keyring,
    secrets: adapters.secrets,
    files: store,
    backups: backupContext({ ...adapters, now }),
    now,
    logger: adapters.logger,
  };
}

/**
 * The data-key rotation, daily: a new data key when the active one is older than
 * FERRY_DATA_KEY_ROTATION_DAYS (0: never on its own), files and secrets moved to it, retired
 * keys destroyed after their grace period. An unfinished rotation continues; one that another
 * process runs is left to it.
 */
export const KEY_ROTATION_JOBS: readonly JobDefinition[] = [
  {
    name: DATA_KEY_ROTATION_JOB,
    schedule: { cron: '30 3 * * *' },
    queue: () => ({ retryLimit: 2, retryDelay: 900, expireInSeconds: 12 * 3600 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      try {
        await rotateDataKeys(rotationDeps(ctx), {
          actor: 'system',
          rotationDays: ctx.config.storage.dataKeyRotationDays,
        });
      } catch (err) {
        // A master-key rotation in progress, or a run in another process: the next day resumes.
        if (err instanceof FerryError && err.code === 'conflict') {
          ctx.logger.warn({ err }, 'data-key rotation skipped');
          return;
        }
        throw err;
      }
    },
  },
];
