import { ensureChangeTracking } from './collect/change-tracking.ts';
import { syncIpLocation } from './collect/enrichment.ts';
import type { Config } from './config/config.ts';
import { createLinkSigner, type LinkSigner } from './crypto/link-signer.ts';
import { type KeyringAdapters, openKeyring } from './crypto/open-keyring.ts';
import type { SecretBox } from './crypto/secret-box.ts';
import type { Database } from './db/database.ts';
import { openDatabase } from './db/open.ts';
import { REFERENCE_DATAMAP, validateDataMap } from './datamap/datamap.ts';
import { createSftpClient, createTargetS3Client } from './deliver/clients.ts';
import { createMailer, type Mailer } from './deliver/mailer.ts';
import type { DeliveryClients } from './deliver/types.ts';
import { EXPORT_JOBS } from './export-requests/jobs.ts';
import { buildApp, type FerryApp } from './http/app.ts';
import { createJobQueue, type JobQueue } from './jobs/queue.ts';
import type { JobDefinition } from './jobs/types.ts';
import { startWorkers } from './jobs/workers.ts';
import { createLogger, type Logger } from './lib/logger.ts';
import { STREAM_JOBS } from './live/jobs.ts';
import { createStreamHub } from './live/hub.ts';
import { backupContext } from './backup/context.ts';
import { BACKUP_JOBS } from './backup/jobs.ts';
import { IMPORT_JOBS } from './imports/jobs.ts';
import { KEY_ROTATION_JOBS } from './key-rotation/jobs.ts';
import { destroyTenantBackups } from './backup/service.ts';
import { COMPLIANCE_JOBS } from './privacy/compliance-jobs.ts';
import { DELETION_JOBS } from './privacy/deletion-jobs.ts';
import { DSAR_JOBS } from './privacy/jobs.ts';
import { SCHEDULE_JOBS } from './schedules/jobs.ts';
import { createObjectStore } from './store/create-object-store.ts';
import type { ObjectStore } from './store/object-store.ts';
import { WEBHOOK_JOBS } from './webhooks/jobs.ts';
import { API_KEY_JOBS } from './webhooks/key-expiry.ts';
import { WEB_JOBS } from './web/jobs.ts';
import { webRoutes } from './web/plugin.ts';
import { deliverToWebhook } from './webhooks/webhook-target.ts';

/**
 * Every kind of job Ferry runs. A new job is a definition in its area's `jobs.ts`,
 * listed here; a queue's dead-letter queue comes before it.
 */
export const JOBS: readonly JobDefinition[] = [
  ...EXPORT_JOBS,
  ...WEBHOOK_JOBS,
  ...API_KEY_JOBS,
  ...SCHEDULE_JOBS,
  ...STREAM_JOBS,
  ...DSAR_JOBS,
  ...DELETION_JOBS,
  ...COMPLIANCE_JOBS,
  ...BACKUP_JOBS,
  ...IMPORT_JOBS,
  ...WEB_JOBS,
  ...KEY_ROTATION_JOBS,
];

/**
 * What the delivery targets send through: S3 clients for tenant buckets, SFTP clients,
 * and the webhook outbox for webhook targets (src/deliver/ does not depend on src/webhooks/).
 */
export const DELIVERY_CLIENTS: DeliveryClients = {
  s3: createTargetS3Client,
  sftp: createSftpClient,
  webhook: deliverToWebhook,
};

/** The adapters that job handlers (and, for the signer, routes) get besides the database, queue and store. */
export interface Adapters {
  readonly signer: LinkSigner;
  /** The operator's SMTP server; absent when FERRY_SMTP_URL is not set. */
  readonly mailer: Mailer | undefined;
  readonly deliveryClients: DeliveryClients;
}

/**
 * The download-link signer: it signs under the current secret, and a link signed under a
 * previous one (FERRY_PREVIOUS_SECRET_KEYS) still verifies until it expires, so changing
 * FERRY_SECRET_KEY does not break links already sent.
 */
export function linkSigner(config: Config): LinkSigner {
  const current = createLinkSigner(config);
  const previous = (config.previousSecretKeys ?? []).map((secretKey) =>
    createLinkSigner({ secretKey, dataDir: config.dataDir }),
  );
  if (previous.length === 0) return current;
  return {
    sign: (target) => current.sign(target),
    verify: (target, signature) =>
      current.verify(target, signature) || previous.some((signer) => signer.verify(target, signature)),
  };
}

/** Builds the link signer, the mailer (when SMTP is configured) and the delivery clients. */
export function createAdapters(config: Config): Adapters {
  return {
    signer: linkSigner(config),
    mailer: config.smtp ? createMailer(config.smtp) : undefined,
    deliveryClients: DELIVERY_CLIENTS,
  };
}

/** What a `ferry serve` process runs; built once from the frozen config. */
export interface Ferry {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly app: FerryApp;
  readonly queue: JobQueue;
  readonly store: ObjectStore;
  /** Seals and opens stored secrets under the process's keyring. */
  readonly secrets: SecretBox;
  /** Stops the HTTP server (in-flight requests finish first), then the job workers, then closes the database. */
  close(): Promise<void>;
}

export interface ComposeOptions {
  /** Run the job workers in this process (`ferry serve --no-worker` turns them off). */
  readonly worker?: boolean;
  readonly logger?: Logger;
}

/**
 * The composition root: the one place that picks and builds concrete adapters.
 * Opening the database migrates it; the data map is then checked against the
 * live schema so a drifted database stops the start with the list of problems.
 */
export async function compose(config: Config, options: ComposeOptions = {}): Promise<Ferry> {
  const logger = options.logger ?? createLogger(config);
  const database = await openDatabase(config);
  const adapters = createAdapters(config);
  let jobs: Jobs | undefined;
  try {
    await startDataMap(database, config);
    const keys = await startKeyring(database, config);
    jobs = await startJobs(database, config, logger, adapters, keys, options.worker !== false);
    const { queue, store } = jobs;
    // One live-stream listener per process, shared by every WebSocket subscriber.
    const stream = createStreamHub(database, { logger });
    const app = await buildApp({
      database,
      config,
      logger,
      queue,
      store,
      signer: adapters.signer,
      secrets: keys.secrets,
      stream,
      deliveryClients: adapters.deliveryClients,
      ...(adapters.mailer ? { mailer: adapters.mailer } : {}),
      routes: [webRoutes],
    });
    await app.ready();
    let closing: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      app,
      queue,
      store,
      secrets: keys.secrets,
      close: () => {
        closing ??= app
          .close()
          .finally(() => stream.stop())
          .finally(() => queue.stop())
          .finally(() => adapters.mailer?.close())
          .finally(() => database.close());
        return closing;
      },
    };
  } catch (err) {
    await jobs?.queue.stop();
    adapters.mailer?.close();
    await database.close();
    throw err;
  }
}

/**
 * Checks the data map against the migrated database (a drifted database stops the start
 * with the list of problems), then gives the tables of its change feeds their tracking and
 * brings IP location in line with FERRY_IP_LOCATION.
 */
async function startDataMap(database: Database, config: Config): Promise<void> {
  await validateDataMap(REFERENCE_DATAMAP, database.db);
  await ensureChangeTracking(database.db, REFERENCE_DATAMAP);
  // The IP ranges the enriched location fields read, loaded once per package version.
  await syncIpLocation(database, config.ipLocation);
}

/**
 * The process's keyring and secret box: the master keys are resolved once (running
 * FERRY_ENCRYPTION_KEY_COMMAND, when set) and the keyring is loaded, with its first data key
 * created on a new installation, so a missing or failing key source stops the start.
 */
async function startKeyring(database: Database, config: Config): Promise<KeyringAdapters> {
  const keys = await openKeyring(database, config);
  await keys.keyring.ready();
  return keys;
}

interface Jobs {
  readonly queue: JobQueue;
  readonly store: ObjectStore;
}

/** The object store and the job queue; with `worker`, the job workers and cron schedules too. */
async function startJobs(
  database: Database,
  config: Config,
  logger: Logger,
  adapters: Adapters,
  keys: KeyringAdapters,
  worker: boolean,
): Promise<Jobs> {
  const store = await createObjectStore(config, keys.keyring);
  const queue = await createJobQueue(database, config, logger, { definitions: JOBS, supervise: worker });
  if (worker) {
    try {
      const now = () => new Date();
      const context = {
        database,
        config,
        logger,
        store,
        queue,
        now,
        ...adapters,
        keyring: keys.keyring,
        secrets: keys.secrets,
        destroyBackups: (tenantId: string) =>
          destroyTenantBackups(
            backupContext({ database, config, store, secrets: keys.secrets, now }),
            tenantId,
          ),
      };
      await startWorkers(queue, context, JOBS);
    } catch (err) {
      await queue.stop();
      throw err;
    }
  }
  return { queue, store };
}

/** What a `ferry worker` process runs: the job workers, without an HTTP server. */
export interface FerryWorker {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly queue: JobQueue;
  /** Stops taking jobs, lets running ones finish (or hands them back for retry), closes the database. */
  close(): Promise<void>;
}

export async function composeWorker(config: Config, options: { logger?: Logger } = {}): Promise<FerryWorker> {
  const logger = options.logger ?? createLogger(config);
  const database = await openDatabase(config);
  const adapters = createAdapters(config);
  try {
    await startDataMap(database, config);
    const keys = await startKeyring(database, config);
    const { queue } = await startJobs(database, config, logger, adapters, keys, true);
    let closing: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      queue,
      close: () => {
        closing ??= queue
          .stop()
          .finally(() => adapters.mailer?.close())
          .finally(() => database.close());
        return closing;
      },
    };
  } catch (err) {
    adapters.mailer?.close();
    await database.close();
    throw err;
  }
}

/** What a one-shot `ferry` command (export, seed, keys, schedules, …) works with. */
export interface FerryCommand {
  readonly config: Config;
  readonly database: Database;
  /** A job queue that only sends jobs (no workers, no cron), opened on first use. */
  queue(): Promise<JobQueue>;
  /** The keyring and secret box, opened on first use (the master key is resolved then). */
  keys(): Promise<KeyringAdapters>;
  /** The object store, encrypted at rest under the keyring, opened on first use. */
  store(): Promise<ObjectStore>;
  /** Stops the queue when it was opened, then closes the database. */
  close(): Promise<void>;
}

/** How long a command's queue waits for pg-boss to stop. */
const COMMAND_QUEUE_STOP_MS = 2_000;

/**
 * Opens the configured database for one command: migrated, unless `migrate: false`
 * (`ferry migrate` applies the migrations itself and reports them).
 */
export async function composeCommand(
  config: Config,
  options: { readonly migrate?: boolean } = {},
): Promise<FerryCommand> {
  const database = await openDatabase(config, { migrate: options.migrate ?? true });
  let queue: Promise<JobQueue> | undefined;
  let keys: Promise<KeyringAdapters> | undefined;
  let store: Promise<ObjectStore> | undefined;
  const openKeys = () => {
    keys ??= openKeyring(database, config);
    return keys;
  };
  return {
    config,
    database,
    keys: openKeys,
    store: () => {
      store ??= openKeys().then((opened) => createObjectStore(config, opened.keyring));
      return store;
    },
    queue: () => {
      queue ??= createJobQueue(database, config, createLogger({ ...config, logLevel: 'warn' }), {
        definitions: JOBS,
        supervise: false,
      });
      return queue;
    },
    async close() {
      try {
        await queue?.then(
          (opened) => opened.stop(COMMAND_QUEUE_STOP_MS),
          // It never opened: the command has already failed with that error.
          () => undefined,
        );
      } finally {
        await database.close();
      }
    },
  };
}
