import type { Config } from './config/config.ts';
import type { Database } from './db/database.ts';
import { openDatabase } from './db/open.ts';
import { ensureChangeTracking } from './collect/change-tracking.ts';
import { REFERENCE_DATAMAP, validateDataMap } from './datamap/datamap.ts';
import { buildApp, type FerryApp } from './http/app.ts';
import { createJobQueue, type JobQueue } from './jobs/queue.ts';
import { JOBS, startWorkers } from './jobs/registry.ts';
import { createLogger, type Logger } from './lib/logger.ts';
import { createObjectStore } from './store/create-object-store.ts';
import type { ObjectStore } from './store/object-store.ts';
import { createStreamHub } from './live/hub.ts';

/** What a `ferry serve` process runs; built once from the frozen config. */
export interface Ferry {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly app: FerryApp;
  readonly queue: JobQueue;
  readonly store: ObjectStore;
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
  let jobs: Jobs | undefined;
  try {
    await startDataMap(database);
    jobs = await startJobs(database, config, logger, options.worker !== false);
    const { queue, store } = jobs;
    // One live-stream listener per process, shared by every WebSocket subscriber.
    const stream = createStreamHub(database, { logger });
    const app = await buildApp({ database, config, logger, queue, store, stream });
    await app.ready();
    let closing: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      app,
      queue,
      store,
      close: () => {
        closing ??= app
          .close()
          .finally(() => stream.stop())
          .finally(() => queue.stop())
          .finally(() => database.close());
        return closing;
      },
    };
  } catch (err) {
    await jobs?.queue.stop();
    await database.close();
    throw err;
  }
}

/**
 * Checks the data map against the migrated database (a drifted database stops the start
 * with the list of problems), then gives the tables of its change feeds their tracking.
 */
async function startDataMap(database: Database): Promise<void> {
  await validateDataMap(REFERENCE_DATAMAP, database.db);
  await ensureChangeTracking(database.db, REFERENCE_DATAMAP);
}

interface Jobs {
  readonly queue: JobQueue;
  readonly store: ObjectStore;
}

/** The object store and the job queue; with `worker`, the job workers and cron schedules too. */
async function startJobs(database: Database, config: Config, logger: Logger, worker: boolean): Promise<Jobs> {
  const store = await createObjectStore(config);
  const queue = await createJobQueue(database, config, logger, { definitions: JOBS, supervise: worker });
  if (worker) {
    try {
      await startWorkers(queue, { database, config, logger, store, queue, now: () => new Date() });
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
  try {
    await startDataMap(database);
    const { queue } = await startJobs(database, config, logger, true);
    let closing: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      queue,
      close: () => {
        closing ??= queue.stop().finally(() => database.close());
        return closing;
      },
    };
  } catch (err) {
    await database.close();
    throw err;
  }
}
