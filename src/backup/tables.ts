import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import { quoteIdent } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

/** One table of a backup set: the tenant's rows of it, in a stable order. */
export interface BackupTable {
  readonly name: string;
  /** The column holding the tenant id (`id` for the tenants table). */
  readonly tenantKey: string;
  /** Tables whose rows this table's rows refer to (loaded first on restore). */
  readonly refers: readonly string[];
  /**
   * Columns whose values never go into a backup, with the SQL value written in their place:
   * password and key hashes and one-time codes (a backup is readable with the tenant's own
   * key). Credentials sealed by the operator's key stay sealed, as stored.
   */
  readonly withheld: Readonly<Record<string, string>>;
  /** Where the declaration comes from: the data map or Ferry's own per-tenant state. */
  readonly source: 'data map' | 'ferry';
  /** The data map's time column (when rows were created or happened), the stream's first order key. */
  readonly timeColumn?: string | null;
}

/** The value of a withheld hash: no password or key verifies against it. */
export const WITHHELD = "'!withheld-from-backup'";

/**
 * Ferry's own per-tenant state, besides the data map's tables: schedules, saved export
 * configurations, webhooks, API keys' metadata, privacy requests and their receipts, holds,
 * retention policies, the record of processing, processors, and the catalog of stored export
 * files. Operational
 * traces (sessions, rate-limit counters, queues, delivery logs, the erasure ledger, which
 * every restore replays and so must never be replaced by an older copy) are not in it.
 */
const FERRY_TABLES: readonly BackupTable[] = [
  {
    name: 'api_keys',
    tenantKey: 'tenant_id',
    refers: ['tenants', 'team_members'],
    // The pepper id goes with its hash: a replace restore keeps both live values together.
    withheld: { key_hash: WITHHELD, pepper_id: 'NULL' },
    source: 'ferry',
  },
  { name: 'schedules', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  {
    name: 'export_configs',
    tenantKey: 'tenant_id',
    refers: ['tenants', 'schedules'],
    withheld: {},
    source: 'ferry',
  },
  { name: 'webhook_endpoints', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  {
    name: 'dsar_requests',
    tenantKey: 'tenant_id',
    refers: ['tenants'],
    withheld: { verification_code_hash: 'NULL' },
    source: 'ferry',
  },
  { name: 'dsar_receipts', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  { name: 'receipt_chains', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  { name: 'legal_holds', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  { name: 'retention_policies', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  {
    name: 'processing_activities',
    tenantKey: 'tenant_id',
    refers: ['tenants'],
    withheld: {},
    source: 'ferry',
  },
  { name: 'processors', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  {
    name: 'processor_notifications',
    tenantKey: 'tenant_id',
    refers: ['tenants', 'processors'],
    withheld: {},
    source: 'ferry',
  },
  { name: 'export_requests', tenantKey: 'tenant_id', refers: ['tenants'], withheld: {}, source: 'ferry' },
  {
    name: 'export_files',
    tenantKey: 'tenant_id',
    refers: ['tenants', 'export_requests'],
    withheld: {},
    source: 'ferry',
  },
];

/** Hash columns of the data map's tables that are withheld (the map calls them `secret`). */
const MAP_WITHHELD: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  team_members: { password_hash: WITHHELD },
};

/**
 * The backup set: every table of the data map that holds tenant rows, then Ferry's own,
 * in an order where a table comes after every table it refers to (restore loads them so).
 */
export function backupTables(map: DataMap = REFERENCE_DATAMAP): BackupTable[] {
  const declared: BackupTable[] = [
    ...Object.entries(map.tables)
      .filter(([, t]) => t.tenantKey)
      .map(([name, t]) => ({
        name,
        tenantKey: t.tenantKey!,
        refers: [...new Set(t.relations.map((r) => r.references.split('.')[0]!).filter((r) => r !== name))],
        withheld: MAP_WITHHELD[name] ?? {},
        source: 'data map' as const,
        timeColumn: t.timeColumn,
      })),
    ...FERRY_TABLES.filter((t) => !map.tables[t.name]),
  ];
  const byName = new Map(declared.map((t) => [t.name, t]));
  const out: BackupTable[] = [];
  const placed = new Set<string>();
  const visit = (t: BackupTable, path: Set<string>) => {
    if (placed.has(t.name) || path.has(t.name)) return;
    path.add(t.name);
    for (const r of t.refers) {
      const parent = byName.get(r);
      if (parent) visit(parent, path);
    }
    placed.add(t.name);
    out.push(t);
  };
  for (const t of declared) visit(t, new Set());
  return out;
}

/** A column of a table as the database has it. */
export interface CatalogColumn {
  readonly name: string;
  readonly type: string;
  /** The underlying type name (`_uuid` for uuid[]). */
  readonly udt: string;
  readonly nullable: boolean;
}

/** The columns (in table order) and primary key of every table of the current schema. */
export async function catalogOf(
  db: Kysely<DB>,
): Promise<Map<string, { columns: CatalogColumn[]; primaryKey: string[] }>> {
  const columns = await sql<{
    table_name: string;
    column_name: string;
    data_type: string;
    udt_name: string;
    is_nullable: string;
  }>`
    SELECT table_name, column_name, data_type, udt_name, is_nullable FROM information_schema.columns
    WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`.execute(db);
  const keys = await sql<{ table_name: string; column_name: string }>`
    SELECT tc.table_name, kcu.column_name
    FROM information_schema.table_constraints tc
    JOIN information_schema.key_column_usage kcu
      ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
     AND kcu.table_name = tc.table_name
    WHERE tc.table_schema = current_schema() AND tc.constraint_type = 'PRIMARY KEY'
    ORDER BY tc.table_name, kcu.ordinal_position`.execute(db);
  const out = new Map<string, { columns: CatalogColumn[]; primaryKey: string[] }>();
  for (const c of columns.rows) {
    const entry = out.get(c.table_name) ?? { columns: [], primaryKey: [] };
    entry.columns.push({
      name: c.column_name,
      type: c.data_type,
      udt: c.udt_name,
      nullable: c.is_nullable === 'YES',
    });
    out.set(c.table_name, entry);
  }
  for (const k of keys.rows) out.get(k.table_name)?.primaryKey.push(k.column_name);
  return out;
}

/**
 * The stream order of a table: its creation time first (so new rows land at the end of the
 * stream and an incremental backup rewrites only the last chunks; random primary keys would
 * scatter them over every chunk), then the primary key, which makes the order total.
 */
export function streamOrder(
  table: BackupTable,
  primaryKey: readonly string[],
  columns: readonly CatalogColumn[],
): string[] {
  // Only a NOT NULL column: keyset pages compare row values, and NULL compares to nothing.
  const names = new Set(columns.filter((c) => !c.nullable).map((c) => c.name));
  // The data map's time column first (the tenant indexes lead with it, so PostgreSQL reads in
  // order instead of sorting), else the creation time.
  const first = [table.timeColumn, 'created_at'].find((c): c is string => !!c && names.has(c)) ?? null;
  const key = primaryKey.length ? primaryKey : columns.map((c) => c.name);
  return [...(first && !key.includes(first) ? [first] : []), ...key].map(quoteIdent);
}
