import { type Kysely, sql } from 'kysely';
import type { DB } from '../db/schema.ts';

/**
 * Every column that holds values sealed by the secret box (src/crypto/secret-box.ts), so
 * key rotation can find and re-seal them and a backup can name the data keys its rows need.
 * A `text` column holds one sealed value; a `json` column holds documents in which sealed
 * values appear as `{"sealed": "v2:…"}` (delivery targets). A table the database lacks
 * (an operator's own data map without it) is skipped.
 *
 * A new column that stores `secrets.seal(...)` output is added here; the key rotation test
 * walks this list.
 */
export interface SealedColumn {
  readonly table: string;
  /** The primary key (one column), for batches in key order. */
  readonly key: string;
  readonly column: string;
  readonly kind: 'text' | 'json';
  /** The tenant column, or null for install-wide rows (receipt signing keys). */
  readonly tenant: string | null;
}

export const SEALED_COLUMNS: readonly SealedColumn[] = [
  { table: 'webhook_endpoints', key: 'id', column: 'secret_sealed', kind: 'text', tenant: 'tenant_id' },
  {
    table: 'webhook_endpoints',
    key: 'id',
    column: 'previous_secret_sealed',
    kind: 'text',
    tenant: 'tenant_id',
  },
  {
    table: 'team_member_factors',
    key: 'team_member_id',
    column: 'totp_secret',
    kind: 'text',
    tenant: 'tenant_id',
  },
  { table: 'receipt_signing_keys', key: 'kid', column: 'private_key_sealed', kind: 'text', tenant: null },
  { table: 'integrations', key: 'id', column: 'credentials_encrypted', kind: 'text', tenant: 'tenant_id' },
  { table: 'schedules', key: 'id', column: 'config', kind: 'json', tenant: 'tenant_id' },
  { table: 'schedule_runs', key: 'id', column: 'config', kind: 'json', tenant: 'tenant_id' },
  { table: 'backup_settings', key: 'tenant_id', column: 'destinations', kind: 'json', tenant: 'tenant_id' },
];

/** The sealed columns whose table exists in the current schema. */
export async function presentSealedColumns(db: Kysely<DB>): Promise<SealedColumn[]> {
  const tables = await sql<{ table_name: string }>`
    SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`.execute(db);
  const present = new Set(tables.rows.map((r) => r.table_name));
  return SEALED_COLUMNS.filter((c) => present.has(c.table));
}

/** Matches the data key id of every `v2:` value in a column's text (JSON documents included). */
const V2_ID = `v2:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):`;

/** The ids of the data keys a tenant's sealed values are sealed under (for its backups). */
export async function tenantDataKeyIds(db: Kysely<DB>, tenantId: string): Promise<string[]> {
  const ids = new Set<string>();
  for (const c of await presentSealedColumns(db)) {
    if (!c.tenant) continue;
    const rows = await sql<{ id: string }>`
      SELECT DISTINCT (regexp_matches(${sql.ref(c.column)}::text, ${V2_ID}, 'g'))[1] AS id
      FROM ${sql.table(c.table)} WHERE ${sql.ref(c.tenant)} = ${tenantId}`.execute(db);
    for (const r of rows.rows) ids.add(r.id);
  }
  return [...ids].sort();
}
