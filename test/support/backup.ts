import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { remapId } from '../../src/backup/restore.ts';
import type { BackupContext } from '../../src/backup/service.ts';
import { backupTables, WITHHELD } from '../../src/backup/tables.ts';
import type { Config } from '../../src/config/config.ts';
import type { Database } from '../../src/db/database.ts';
import { outboundPolicy } from '../../src/lib/ssrf.ts';
import { LocalObjectStore } from '../../src/store/local-object-store.ts';
import { testAdapters } from './keyring.ts';

/** Small chunks, so a test tenant spans many of them. */
export const TEST_SIZES = { minSize: 512, avgSize: 2048, maxSize: 8192 };

/** A backup context over a fresh folder as the operator's storage. */
export async function testBackupContext(
  database: Database,
  config: Config,
  secretKey: string,
  now?: () => Date,
): Promise<BackupContext & { root: string }> {
  const root = mkdtempSync(path.join(tmpdir(), 'ferry-backups-'));
  const keys = await testAdapters(database, config);
  return {
    root,
    database,
    secretKey,
    secrets: keys.secrets,
    defaultStore: new LocalObjectStore({ root }),
    files: keys.store,
    outbound: outboundPolicy(['127.0.0.0/8', '::1/128']),
    sizes: TEST_SIZES,
    ...(now ? { now } : {}),
  };
}

interface ColumnType {
  type: string;
  udt: string;
}

async function columnTypes(database: Database): Promise<Map<string, Map<string, ColumnType>>> {
  const r = await sql<{ table_name: string; column_name: string; data_type: string; udt_name: string }>`
    SELECT table_name, column_name, data_type, udt_name FROM information_schema.columns
    WHERE table_schema = current_schema()`.execute(database.db);
  const out = new Map<string, Map<string, ColumnType>>();
  for (const c of r.rows) {
    const t = out.get(c.table_name) ?? new Map<string, ColumnType>();
    t.set(c.column_name, { type: c.data_type, udt: c.udt_name });
    out.set(c.table_name, t);
  }
  return out;
}

const stable = (row: Record<string, unknown>) =>
  JSON.stringify(Object.fromEntries(Object.entries(row).sort(([a], [b]) => a.localeCompare(b))));

/** Every row of a tenant in every table of the backup set, as the database returns them. */
export interface TenantSnapshot {
  readonly rows: Record<string, Record<string, unknown>[]>;
  readonly types: Map<string, Map<string, ColumnType>>;
}

export async function snapshotTenant(database: Database, tenantId: string): Promise<TenantSnapshot> {
  const types = await columnTypes(database);
  const rows: TenantSnapshot['rows'] = {};
  for (const table of backupTables()) {
    const r = await sql<{ row: Record<string, unknown> | string }>`${sql.raw(
      `SELECT to_jsonb(t) AS row FROM ${table.name} t WHERE t.${table.tenantKey} = '${tenantId}'`,
    )}`.execute(database.db);
    rows[table.name] = r.rows.map(
      (x) => (typeof x.row === 'string' ? JSON.parse(x.row) : x.row) as Record<string, unknown>,
    );
  }
  return { rows, types };
}

/**
 * A snapshot as sorted canonical JSON per table, mapped to what a restore must produce from
 * it: the withheld hashes replaced, and for a sandbox every id mapped (`remapId`, computed
 * here independently of the SQL that restores) and the tenant renamed.
 */
export function canonical(
  snapshot: TenantSnapshot,
  as: {
    sandbox?: { salt: string; slug: string };
    skip?: readonly string[];
    ignore?: readonly string[];
    /** Columns left out of one table's rows only. */
    drop?: Readonly<Record<string, readonly string[]>>;
  } = {},
): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const table of backupTables()) {
    if (as.skip?.includes(table.name)) continue;
    const columns = snapshot.types.get(table.name)!;
    out[table.name] = (snapshot.rows[table.name] ?? [])
      .map((row) => {
        const mapped: Record<string, unknown> = { ...row };
        for (const column of [...(as.ignore ?? []), ...(as.drop?.[table.name] ?? [])]) delete mapped[column];
        for (const column of Object.keys(table.withheld))
          mapped[column] = table.withheld[column] === WITHHELD ? '!withheld-from-backup' : null;
        const sandbox = as.sandbox;
        if (sandbox) {
          const { salt } = sandbox;
          for (const [column, type] of columns) {
            const v = mapped[column];
            if (v === null || v === undefined) continue;
            if (type.type === 'uuid') mapped[column] = remapId(salt, String(v));
            if (type.udt === '_uuid') mapped[column] = (v as string[]).map((id) => remapId(salt, id));
          }
          if (table.name === 'tenants') {
            mapped.slug = sandbox.slug;
            mapped.name = `${String(row.name)} (restored)`.slice(0, 200);
            mapped.status = 'active';
            for (const c of ['closed_at', 'closed_by', 'purge_after', 'purged_at']) mapped[c] = null;
          }
          if (table.name === 'export_files')
            mapped.storage_key = `restored/${remapId(salt, String(row.id))}/${String(row.storage_key)}`;
        }
        return stable(mapped);
      })
      .sort();
  }
  return out;
}

/** A tenant's rows now, canonical (see `canonical`). */
export async function tenantRows(
  database: Database,
  tenantId: string,
  as: {
    skip?: readonly string[];
    ignore?: readonly string[];
    drop?: Readonly<Record<string, readonly string[]>>;
  } = {},
): Promise<Record<string, string[]>> {
  return canonical(await snapshotTenant(database, tenantId), as);
}
