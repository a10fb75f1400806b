/**
 * Change tracking for incremental exports (docs/incremental.md).
 *
 * - `deleted_records` keeps a tombstone (tenant, table, record id, time) for every row
 *   deleted from a tracked table, written by statement-level AFTER DELETE triggers (one
 *   set-based INSERT per statement, so deleting a million rows is one INSERT ... SELECT,
 *   not a million trigger calls). Only the record id is kept: a tombstone never holds the
 *   deleted data. `xid` is the deleting top-level transaction, which orders tombstones
 *   into the same transaction-id windows as the rows' own `xmin`.
 * - Rows that disappear because their tenant is deleted leave no tombstone: the tenant
 *   and its change feed are gone with them.
 * - `updated_at` / `last_updated` follow every UPDATE (BEFORE UPDATE triggers set them to
 *   `now()`), unless the UPDATE sets the column itself, so imports and seeds keep theirs.
 *
 * Changed rows themselves are found through their `xmin`, so no column is added to the
 * platform's tables. Runs on PostgreSQL 15+ and PGlite (no extensions).
 */

/** Tracked tables and the column that identifies a row within its tenant. Frozen with the migration. */
export const TRACKED_TABLES: Readonly<Record<string, string>> = {
  sites: 'id',
  team_members: 'id',
  customers: 'id',
  consent_records: 'id',
  conversations: 'id',
  messages: 'id',
  documents: 'id',
  document_chunks: 'id',
  revenue_events: 'id',
  integrations: 'id',
  settings: 'key',
  activity_logs: 'id',
  subscriptions: 'id',
  invoices: 'id',
};

/** Tables whose "last changed" column follows updates. */
const TOUCHED: Readonly<Record<string, string>> = {
  tenants: 'updated_at',
  customers: 'updated_at',
  conversations: 'last_updated',
  messages: 'updated_at',
  documents: 'updated_at',
  integrations: 'updated_at',
  settings: 'updated_at',
};

function tombstoneTrigger(table: string, idColumn: string): string {
  return `
CREATE FUNCTION ferry_tombstones_${table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO deleted_records (tenant_id, table_name, record_id)
  SELECT gone.tenant_id, '${table}', gone.${idColumn}::text FROM gone
  WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = gone.tenant_id);
  RETURN NULL;
END
$$;
CREATE TRIGGER ferry_tombstones AFTER DELETE ON ${table}
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ferry_tombstones_${table}();
`;
}

function touchFunction(column: string): string {
  return `
CREATE FUNCTION ferry_touch_${column}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.${column} IS NOT DISTINCT FROM OLD.${column} THEN
    NEW.${column} := now();
  END IF;
  RETURN NEW;
END
$$;
`;
}

export const up = /* sql */ `
CREATE TABLE deleted_records (
  seq bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL,
  table_name text NOT NULL,
  record_id text NOT NULL,
  deleted_at timestamptz NOT NULL DEFAULT now(),
  xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX deleted_records_feed ON deleted_records (tenant_id, table_name, xid);
${Object.entries(TRACKED_TABLES)
  .map(([table, id]) => tombstoneTrigger(table, id))
  .join('')}
${[...new Set(Object.values(TOUCHED))].map(touchFunction).join('')}
${Object.entries(TOUCHED)
  .map(
    ([table, column]) =>
      `CREATE TRIGGER ferry_touch BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ferry_touch_${column}();`,
  )
  .join('\n')}
`;
