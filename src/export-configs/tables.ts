import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import type { SavedConfigDefinition } from './definition.ts';

/** Kysely table type for migration 0022 (saved export configurations). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export interface ExportConfigsTable {
  id: string;
  tenant_id: string;
  name: string;
  definition: Json<SavedConfigDefinition>;
  created_by: string;
  created_at: DefaultTimestamp;
  updated_at: DefaultTimestamp;
  last_run_at: Timestamp | null;
  last_export_id: string | null;
  schedule_id: string | null;
}

export type ExportConfigTables = { export_configs: ExportConfigsTable };

export type ExportConfigDB = Kysely<DB & ExportConfigTables>;

/** The database's Kysely instance, typed with the saved configurations table as well. */
export function exportConfigDb(database: Database): ExportConfigDB {
  return database.db.withTables<ExportConfigTables>() as unknown as ExportConfigDB;
}
