import type { Command } from 'commander';
import { migrateToLatest } from '../db/migrate.ts';
import { withCommand } from './context.ts';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('apply pending database migrations (they also run on start)')
    .action(async () => {
      await withCommand(
        async ({ database }) => {
          const { applied } = await migrateToLatest(database.db);
          process.stdout.write(
            applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n',
          );
        },
        { migrate: false },
      );
    });
}
