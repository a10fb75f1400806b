import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import type { RunStatus, ScheduleStatus } from '../domain/schedule-state.ts';
import type { ExportTables } from '../export-requests/tables.ts';
import type { WebhookTables } from '../webhooks/tables.ts';
import type { Frequency } from './frequency.ts';
import type { RunFile, ScheduleConfig } from './model.ts';

/** Kysely table types for migration 0007 (schedules, their runs, deliveries and checkpoints). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;
type DefaultJson<T> = ColumnType<T, string | undefined, string>;
type Count = ColumnType<number, number | undefined, number>;
type BigCount = ColumnType<number | null, number | null | undefined, number | null>;

export interface SchedulesTable {
  id: string;
  tenant_id: string;
  name: string;
  status: ColumnType<ScheduleStatus, ScheduleStatus | undefined, ScheduleStatus>;
  frequency: Json<Frequency>;
  time_of_day: string | null;
  timezone: string;
  cron: string;
  config: Json<ScheduleConfig>;
  next_run_at: Timestamp | null;
  run_count: Count;
  actor: string;
  api_key_id: string | null;
  team_member_id: string | null;
  created_at: DefaultTimestamp;
  updated_at: DefaultTimestamp;
}

export interface ScheduleRunsTable {
  id: string;
  schedule_id: string;
  tenant_id: string;
  run_number: number;
  due_at: Timestamp;
  trigger: 'scheduled' | 'manual';
  actor: string;
  status: ColumnType<RunStatus, RunStatus | undefined, RunStatus>;
  config: Json<ScheduleConfig>;
  attempts: Count;
  attempt_id: string | null;
  lease_until: Timestamp | null;
  dispatched_at: Timestamp | null;
  files: DefaultJson<RunFile[]>;
  records: BigCount;
  tombstones: BigCount;
  bytes: BigCount;
  checkpoint_advanced: ColumnType<boolean, boolean | undefined, boolean>;
  error_code: string | null;
  error_message: string | null;
  created_at: DefaultTimestamp;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  updated_at: DefaultTimestamp;
}

export interface ScheduleRunDeliveriesTable {
  id: string;
  run_id: string;
  tenant_id: string;
  export_id: string;
  target_index: number;
  target_type: 's3' | 'sftp' | 'email' | 'webhook' | 'folder';
  target_name: string | null;
  target_label: string;
  status: 'delivered' | 'failed';
  attempts: number;
  location: string | null;
  error: string | null;
  error_code: string | null;
  bytes_sent: ColumnType<number, number | undefined, number>;
  checksum_verified: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: DefaultTimestamp;
}

export interface ScheduleCheckpointsTable {
  schedule_id: string;
  dataset: string;
  cursor: string;
  run_id: string | null;
  updated_at: DefaultTimestamp;
}

export type ScheduleTables = {
  schedules: SchedulesTable;
  schedule_runs: ScheduleRunsTable;
  schedule_run_deliveries: ScheduleRunDeliveriesTable;
  schedule_checkpoints: ScheduleCheckpointsTable;
};

export type ScheduleDB = Kysely<DB & ScheduleTables & ExportTables & WebhookTables>;

/** The database's Kysely instance, typed with the schedule (and export, webhook) tables as well. */
export function scheduleDb(database: Database): ScheduleDB {
  return database.db.withTables<ScheduleTables & ExportTables & WebhookTables>() as unknown as ScheduleDB;
}
