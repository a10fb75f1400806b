import { composeCommand, type FerryCommand } from '../compose.ts';
import { loadConfig, type Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';

/**
 * Runs one command with what the composition root opens for it (the migrated database,
 * a job queue on request) and closes all of it afterwards.
 */
export async function withCommand<T>(
  fn: (command: FerryCommand) => Promise<T>,
  options: { readonly migrate?: boolean } = {},
): Promise<T> {
  const command = await composeCommand(loadConfig(), options);
  try {
    return await fn(command);
  } finally {
    await command.close();
  }
}

/** Opens the configured database for one command and closes it afterwards. */
export async function withDatabase<T>(fn: (database: Database, config: Config) => Promise<T>): Promise<T> {
  return withCommand((command) => fn(command.database, command.config));
}

/** Parses a positive integer flag or throws a message naming the flag. */
export function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`${flag} must be a non-negative integer, got "${value}"`);
    return n;
  };
}
