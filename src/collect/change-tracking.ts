import { type Kysely, sql } from 'kysely';
import { literal, quoteIdent } from '../db/database.ts';
import { type TrackedTable, trackedTables } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';

/**
 * Change tracking for the tables the data map's change feeds read (docs/incremental.md).
 * Migration 0005 created `deleted_records` and a statement-level tombstone trigger on each
 * reference table; a dataset declared with a change feed on any other table gets the very
 * same trigger here, at start, so the map alone decides what is tracked. Tables that have
 * the trigger already are left alone, so the step is idempotent and costs one catalog
 * query on every start after the first.
 */

const TRIGGER = 'ferry_tombstones';

/** The tombstone trigger of one table, as migration 0005 writes it for the reference tables. */
function tombstoneTrigger({ table, idColumn, tenantKey }: TrackedTable): string[] {
  const fn = quoteIdent(`${TRIGGER}_${table}`);
  const gone = (column: string) => `gone.${quoteIdent(column)}`;
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO deleted_records (tenant_id, table_name, record_id)
  SELECT ${gone(tenantKey)}, ${literal(table)}, ${gone(idColumn)}::text FROM gone
  WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = ${gone(tenantKey)});
  RETURN NULL;
END
$$`,
    `CREATE TRIGGER ${TRIGGER} AFTER DELETE ON ${quoteIdent(table)}
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
}

/** Tables of the current schema that carry the tombstone trigger. */
async function triggered<T>(db: Kysely<T>): Promise<Set<string>> {
  const result = await sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
    WHERE g.tgname = ${TRIGGER}
      AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())`.execute(db);
  return new Set(result.rows.map((r) => r.name));
}

/**
 * Gives every table of the map's change feeds its tombstone trigger, once; returns the
 * tables it set up. Runs after the migrations and the map's check against the database.
 */
export async function ensureChangeTracking<T>(db: Kysely<T>, map: DataMap): Promise<string[]> {
  const wanted = trackedTables(map);
  const present = await triggered(db);
  if (wanted.every((t) => present.has(t.table))) return [];
  return db.transaction().execute(async (trx) => {
    // Several processes may start at once: one sets the triggers up, the others then find them.
    await sql`SELECT pg_advisory_xact_lock(hashtext('ferry change tracking'))`.execute(trx);
    const now = await triggered(trx);
    const missing = wanted.filter((t) => !now.has(t.table));
    for (const table of missing)
      for (const statement of tombstoneTrigger(table)) await sql.raw(statement).execute(trx);
    return missing.map((t) => t.table);
  });
}
