import type { Config } from './config/config.ts';
import type { Database } from './db/database.ts';
import { openDatabase } from './db/open.ts';
import { REFERENCE_DATAMAP, validateDataMap } from './datamap/datamap.ts';
import { buildApp, type FerryApp } from './http/app.ts';
import { createLogger, type Logger } from './lib/logger.ts';

/** What a `ferry serve` process runs; built once from the frozen config. */
export interface Ferry {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly app: FerryApp;
  /** Stops the HTTP server (in-flight requests finish first), then closes the database. */
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
  try {
    await validateDataMap(REFERENCE_DATAMAP, database.db);
    // Job workers (options.worker) join here once the queue exists.
    const app = await buildApp({ database, config, logger });
    await app.ready();
    let closing: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      app,
      close: () => {
        closing ??= app.close().finally(() => database.close());
        return closing;
      },
    };
  } catch (err) {
    await database.close();
    throw err;
  }
}
