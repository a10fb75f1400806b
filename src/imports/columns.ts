import { type Kysely, sql } from 'kysely';
import type { DB } from '../db/schema.ts';
import { quoteIdent } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { FieldType } from '../datamap/types.ts';
import type { ImportEntity } from './types.ts';

/**
 * What the engine knows of each table it writes: the columns an import sets (from the data
 * map, less the key, the tenant and what only Ferry sets), their SQL types and defaults
 * (from the catalog, so a value is cast exactly as the column would cast it), the reference
 * columns, and the natural key an unmapped item may match in a tenant that already has data.
 */
export interface EntityColumns {
  readonly entity: ImportEntity;
  /** Every column the import writes, in table order: data and reference columns. */
  readonly columns: readonly ColumnInfo[];
  /** The data map's type per column. */
  readonly types: Readonly<Record<string, FieldType>>;
  readonly updatedColumn: string | null;
  readonly natural: NaturalKey | null;
}

export interface ColumnInfo {
  readonly name: string;
  /** The catalog's type, e.g. `character(2)`, `text[]`, `timestamp with time zone`. */
  readonly sqlType: string;
  readonly notNull: boolean;
  /** The column default's SQL, e.g. `'{}'::text[]`, `now()`; null when none. */
  readonly defaultSql: string | null;
}

/** A column that identifies a row within its tenant without the import map. */
export interface NaturalKey {
  readonly column: string;
  /** Compared case-insensitively (emails). */
  readonly caseless: boolean;
}

const NATURAL: Partial<Record<ImportEntity, NaturalKey>> = {
  sites: { column: 'url', caseless: false },
  team_members: { column: 'email', caseless: true },
  customers: { column: 'email', caseless: true },
};

/** Columns only Ferry sets: the password of an imported team member is never imported. */
const FERRY_ONLY: Partial<Record<ImportEntity, readonly string[]>> = {
  team_members: ['password_hash'],
};

/** The password hash of an imported team member: no password verifies against it. */
export const NO_PASSWORD = '!imported';

export async function loadEntityColumns(db: Kysely<DB>, entity: ImportEntity): Promise<EntityColumns> {
  const table = REFERENCE_DATAMAP.tables[entity];
  if (!table) throw new Error(`imports: ${entity} is not a data map table`);
  const { rows } = await sql<{
    name: string;
    sql_type: string;
    not_null: boolean;
    default_sql: string | null;
  }>`
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS sql_type, a.attnotnull AS not_null,
      pg_get_expr(d.adbin, d.adrelid) AS default_sql
    FROM pg_attribute a
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = to_regclass(${entity}) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum`.execute(db);
  const skip = new Set(['id', 'tenant_id', ...(FERRY_ONLY[entity] ?? [])]);
  const columns: ColumnInfo[] = [];
  const types: Record<string, FieldType> = {};
  for (const row of rows) {
    const declared = table.columns[row.name];
    if (skip.has(row.name) || !declared) continue;
    columns.push({
      name: row.name,
      sqlType: row.sql_type,
      notNull: row.not_null,
      defaultSql: row.default_sql,
    });
    types[row.name] = declared.type;
  }
  return { entity, columns, types, updatedColumn: table.updatedColumn, natural: NATURAL[entity] ?? null };
}

/** `jsonb_to_recordset` column list: the key, the given columns with their catalog types, extras. */
export function recordsetColumns(cols: readonly ColumnInfo[], extra: readonly string[] = []): string {
  return ['_id uuid', ...cols.map((c) => `${quoteIdent(c.name)} ${c.sqlType}`), ...extra].join(', ');
}

/** md5 of the row's written columns: equal before and after only when nothing changed them. */
export function rowHashSql(cols: readonly ColumnInfo[], alias: string): string {
  return `md5(ROW(${cols.map((c) => `${alias}.${quoteIdent(c.name)}`).join(', ')})::text)`;
}
