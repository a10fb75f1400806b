import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/config.ts';
import type { Database } from './database.ts';
import { migrateToLatest } from './migrate.ts';
import { lockDataDir } from './pglite-lock.ts';
import { pgliteDatabase } from './pglite-database.ts';
import { postgresDatabase } from './postgres-database.ts';

/** Opens the configured database: PostgreSQL when DATABASE_URL is set, PGlite otherwise. */
export async function openDatabase(
  config: Pick<Config, 'databaseUrl' | 'databaseSchema' | 'dataDir'> &
    Partial<Pick<Config, 'databasePoolSize' | 'databasePreparedStatements'>>,
  options: { migrate?: boolean } = {},
): Promise<Database> {
  let database: Database;
  if (config.databaseUrl) {
    database = postgresDatabase({
      connectionString: config.databaseUrl,
      schema: config.databaseSchema,
      max: config.databasePoolSize,
      preparedStatements: config.databasePreparedStatements,
    });
    if (config.databaseSchema) await database.exec(`CREATE SCHEMA IF NOT EXISTS ${config.databaseSchema}`);
  } else {
    const dir = path.join(config.dataDir, 'pglite');
    mkdirSync(dir, { recursive: true });
    const unlock = lockDataDir(config.dataDir);
    try {
      const embedded = await pgliteDatabase({ dataDir: dir });
      database = {
        ...embedded,
        close: async () => {
          try {
            await embedded.close();
          } finally {
            unlock();
          }
        },
      };
    } catch (err) {
      unlock();
      throw err;
    }
  }
  if (options.migrate ?? true) await migrateToLatest(database.db);
  return database;
}
