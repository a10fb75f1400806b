import { Command, CommanderError } from 'commander';
import { ConfigError } from '../config/config.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { registerCompliance } from './compliance.ts';
import { registerConfigs } from './configs.ts';
import { registerConsent } from './consent.ts';
import { registerDatamap } from './datamap.ts';
import { registerDelete } from './delete.ts';
import { registerDsar } from './dsar.ts';
import { registerKeys } from './keys.ts';
import { registerKeyRotation } from './key-rotation.ts';
import { registerExport } from './export.ts';
import { registerMigrate } from './migrate.ts';
import { registerOrgs } from './orgs.ts';
import { registerProcessors } from './processors.ts';
import { registerReceipts } from './receipts.ts';
import { registerRetention } from './retention.ts';
import { registerBackup } from './backup.ts';
import { registerImport } from './import.ts';
import { registerSchedules } from './schedules.ts';
import { registerSeed } from './seed.ts';
import { registerServe } from './serve.ts';
import { registerTeamMembers } from './team-members.ts';
import { registerTenants } from './tenants.ts';
import { registerUsers } from './users.ts';
import { registerWorker } from './worker.ts';

import { FERRY_VERSION } from '../version.ts';

export { FERRY_VERSION };

/** One registration function per command file; a new command is a new file listed here. */
const COMMANDS: ((program: Command) => void)[] = [
  registerServe,
  registerWorker,
  registerMigrate,
  registerTenants,
  registerOrgs,
  registerTeamMembers,
  registerUsers,
  registerDatamap,
  registerExport,
  registerSeed,
  registerKeys,
  registerKeyRotation,
  registerSchedules,
  registerConfigs,
  registerDsar,
  registerReceipts,
  registerConsent,
  registerProcessors,
  registerRetention,
  registerDelete,
  registerBackup,
  registerImport,
  registerCompliance,
];

export function buildProgram(): Command {
  const program = new Command('ferry')
    .description('Ferry: data export, backup and portability for AI customer-support platforms')
    .version(FERRY_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const register of COMMANDS) register(program);
  for (const command of program.commands) command.exitOverride();
  return program;
}

/** Runs the CLI; any error becomes one clear line on stderr and a non-zero exit. */
export async function runCli(program: Command, argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (help, version or a usage error).
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`ferry: ${describeError(err)}\n`);
    process.exitCode = 1;
  }
}

export function describeError(err: unknown): string {
  if (err instanceof FerryError || err instanceof ConfigError) return err.message;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNREFUSED') return `cannot connect to the database: ${err.message}`;
    return err.message.split('\n')[0] ?? 'unknown error';
  }
  return String(err);
}
