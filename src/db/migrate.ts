import { type Kysely, sql } from 'kysely';
import { type Migration, type MigrationResultSet, Migrator } from 'kysely/migration';
import { isCatalogRace } from './catalog-race.ts';
import * as referenceSchema from './migrations/0001-reference-schema.ts';
import * as privacyFunctions from './migrations/0002-privacy-functions.ts';
import * as auth from './migrations/0003-auth.ts';
import * as exportJobs from './migrations/0004-export-jobs.ts';
import * as changeTracking from './migrations/0005-change-tracking.ts';
import * as webhooksDeliveries from './migrations/0006-webhooks-deliveries.ts';
import * as schedules from './migrations/0007-schedules.ts';
import * as streamOutbox from './migrations/0008-stream-outbox.ts';
import * as requestPath from './migrations/0009-request-path.ts';
import * as scrubSpeed from './migrations/0010-scrub-speed.ts';
import * as dsar from './migrations/0011-dsar.ts';
import * as receipts from './migrations/0012-receipts.ts';
import * as erasure from './migrations/0013-erasure.ts';
import * as erasureLinks from './migrations/0014-erasure-links.ts';
import * as web from './migrations/0015-web.ts';
import * as compliance from './migrations/0016-compliance.ts';
import * as backups from './migrations/0017-backups.ts';
import * as imports from './migrations/0018-imports.ts';
import * as exportSpeed from './migrations/0019-export-speed.ts';
import * as exportPartitions from './migrations/0021-export-partitions.ts';
import * as exportConfigs from './migrations/0022-export-configs.ts';
import * as folderTargets from './migrations/0023-folder-targets.ts';
import * as enrichment from './migrations/0024-enrichment.ts';
import * as deletions from './migrations/0025-deletions.ts';
import * as ipAllowlists from './migrations/0026-ip-allowlists.ts';
import * as keyring from './migrations/0027-keyring.ts';
import * as apiKeyExpiry from './migrations/0028-api-key-expiry.ts';
import * as organisations from './migrations/0029-organisations.ts';
import * as messageDeletions from './migrations/0030-message-deletions.ts';
import * as anonymizedExportSpeed from './migrations/0031-anonymized-export-speed.ts';

/** Every migration, in order. A new migration is a new file added here. */
const MIGRATIONS: Record<string, { up: string }> = {
  '0001-reference-schema': referenceSchema,
  '0002-privacy-functions': privacyFunctions,
  '0003-auth': auth,
  '0004-export-jobs': exportJobs,
  '0005-change-tracking': changeTracking,
  '0006-webhooks-deliveries': webhooksDeliveries,
  '0007-schedules': schedules,
  '0008-stream-outbox': streamOutbox,
  '0009-request-path': requestPath,
  '0010-scrub-speed': scrubSpeed,
  '0011-dsar': dsar,
  '0012-receipts': receipts,
  '0013-erasure': erasure,
  '0014-erasure-links': erasureLinks,
  '0015-web': web,
  '0016-compliance': compliance,
  '0017-backups': backups,
  '0018-imports': imports,
  '0019-export-speed': exportSpeed,
  '0021-export-partitions': exportPartitions,
  '0022-export-configs': exportConfigs,
  '0023-folder-targets': folderTargets,
  '0024-enrichment': enrichment,
  '0025-deletions': deletions,
  '0026-ip-allowlists': ipAllowlists,
  '0027-keyring': keyring,
  '0028-api-key-expiry': apiKeyExpiry,
  '0029-organisations': organisations,
  '0030-message-deletions': messageDeletions,
  '0031-anonymized-export-speed': anonymizedExportSpeed,
};

/**
 * Splits a migration script into statements: on `;` at the end of a line, except
 * inside dollar-quoted bodies (functions, DO blocks). PGlite's extended protocol
 * runs one statement per query, so each is sent alone.
 */
export function splitStatements(script: string): string[] {
  const statements: string[] = [];
  let current = '';
  let inDollar = false;
  for (const line of script.split('\n')) {
    const dollars = line.match(/\$\$/g)?.length ?? 0;
    if (dollars % 2 === 1) inDollar = !inDollar;
    current += `${line}\n`;
    if (!inDollar && /;\s*$/.test(line)) {
      if (current.trim()) statements.push(current.trim());
      current = '';
    }
  }
  if (current.trim()) statements.push(current.trim());
  return statements;
}

function toMigration(script: string): Migration {
  return {
    async up<T>(db: Kysely<T>) {
      for (const statement of splitStatements(script)) await sql.raw(statement).execute(db);
    },
  };
}

export interface MigrateResult {
  applied: string[];
}

/** Applies pending migrations; safe to run from several processes at once (Kysely takes a lock). */
export async function migrateToLatest<T>(db: Kysely<T>): Promise<MigrateResult> {
  // Name the schema explicitly: without it Kysely's table check also sees bookkeeping
  // tables in other schemas of the same database and skips creating its own.
  const current = await sql<{ schema: string }>`SELECT current_schema() AS schema`.execute(db);
  const migrator = new Migrator({
    db,
    migrationTableSchema: current.rows[0]?.schema ?? 'public',
    provider: {
      async getMigrations() {
        return Object.fromEntries(Object.entries(MIGRATIONS).map(([name, m]) => [name, toMigration(m.up)]));
      },
    },
  });
  const schema = current.rows[0]?.schema ?? 'public';
  let outcome: MigrationResultSet = await migrator.migrateToLatest();
  // Kysely looks for its bookkeeping tables by listing every table of the database; a
  // schema, table or column dropped by another client during that listing fails it
  // (db/catalog-race.ts). Nothing was applied then, so the run is simply repeated.
  for (let attempt = 1; attempt < 5 && otherSchemaVanished(outcome, schema); attempt++)
    outcome = await migrator.migrateToLatest();
  const { error, results } = outcome;
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${reason}`);
  }
  return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
}

/** Whether the run failed before any migration because another schema was dropped meanwhile. */
function otherSchemaVanished(outcome: MigrationResultSet, schema: string): boolean {
  if (!outcome.error || outcome.results?.some((r) => r.status !== 'NotExecuted')) return false;
  return isCatalogRace(outcome.error, schema);
}
