import type { Command } from 'commander';
import { loadConfig } from '../config/config.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { openDatabase } from '../db/open.ts';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('apply pending database migrations (they also run on start)')
    .action(async () => {
      const database = await openDatabase(loadConfig(), { migrate: false });
      try {
        const { applied } = await migrateToLatest(database.db);
        process.stdout.write(
          applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n',
        );
      } finally {
        await database.close();
      }
    });
}
