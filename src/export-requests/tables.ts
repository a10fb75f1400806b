import type { ColumnType, Generated, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import type { ExportStatus } from '../domain/export-state.ts';

/** Kysely table types for migration 0004 (export requests, files, idempotency keys). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** bigint columns: read as numbers (PostgreSQL's int8 parser is set in postgres-database.ts; PGlite returns numbers). */
type BigCount = ColumnType<number, number, number>;
type Json<T> = ColumnType<T, string, string>;
/** Columns with a database default (Kysely's Generated<> cannot wrap another ColumnType). */
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type DefaultCount = ColumnType<number, number | undefined, number>;

export interface ExportRequestsTable {
  id: string;
  tenant_id: string;
  actor: string;
  api_key_id: string | null;
  team_member_id: string | null;
  status: Generated<ExportStatus>;
  kind: 'dataset' | 'package';
  datasets: string[];
  config: Json<ExportConfig>;
  retention_days: number;
  max_file_bytes: BigCount | null;
  repeat_of: string | null;
  records_done: DefaultCount;
  records_estimated: BigCount | null;
  bytes_done: DefaultCount;
  progress_at: Timestamp | null;
  attempts: Generated<number>;
  attempt_id: string | null;
  error_code: string | null;
  error_message: string | null;
  download_count: Generated<number>;
  created_at: DefaultTimestamp;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  expires_at: Timestamp | null;
  files_deleted_at: Timestamp | null;
  updated_at: DefaultTimestamp;
}

export interface ExportFilesTable {
  id: string;
  export_id: string;
  tenant_id: string;
  name: string;
  storage_key: string;
  content_type: string;
  bytes: BigCount;
  records: BigCount;
  sha256: string;
  encrypted: Generated<boolean>;
  created_at: DefaultTimestamp;
}

export interface IdempotencyKeysTable {
  tenant_id: string;
  credential: string;
  key: string;
  operation: string;
  request_hash: string;
  resource_id: string | null;
  status_code: number;
  response: Json<unknown>;
  created_at: DefaultTimestamp;
}

export type ExportTables = {
  export_requests: ExportRequestsTable;
  export_files: ExportFilesTable;
  idempotency_keys: IdempotencyKeysTable;
};

export type ExportDB = Kysely<DB & ExportTables>;

/** The database's Kysely instance, typed with the export tables as well. */
export function exportDb(database: Database): ExportDB {
  return database.db.withTables<ExportTables>() as unknown as ExportDB;
}
