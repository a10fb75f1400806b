import type { ColumnType, Kysely, Selectable } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import type { DsarSource, DsarStage, DsarStatus, DsarType, Regulation } from '../domain/dsar-state.ts';

/** Kysely table types for migration 0011 (data subject requests). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;
/** A jsonb column that may be left out of an insert (NULL). */
type OptionalJson<T> = ColumnType<T | null, string | undefined, string>;
type DefaultCount = ColumnType<number, number | undefined, number>;
type DefaultFlag = ColumnType<boolean, boolean | undefined, boolean>;

/** The identifiers a request names, normalized (email lower-case, phone E.164). */
export interface SubjectIdentifiers {
  readonly email?: string;
  readonly phone?: string;
  readonly customer_id?: string;
  readonly team_member_id?: string;
}

export interface DsarRequestsTable {
  id: string;
  tenant_id: string;
  type: DsarType;
  regulation: Regulation;
  source: DsarSource;
  status: DsarStatus;
  stage: DsarStage;
  subject: Json<SubjectIdentifiers | null>;
  subject_key: string;
  changes: OptionalJson<Record<string, unknown>>;
  note: string | null;
  excessive: DefaultFlag;
  duplicate_of: string | null;
  received_at: Timestamp;
  confirm_by: Timestamp | null;
  due_at: Timestamp;
  original_due_at: Timestamp;
  extended_at: Timestamp | null;
  extension_reason: string | null;
  verified_at: Timestamp | null;
  verification_method: string | null;
  approved_at: Timestamp | null;
  completed_at: Timestamp | null;
  closed_reason: string | null;
  outcome: string | null;
  failed_step: string | null;
  error_message: string | null;
  result: OptionalJson<Record<string, unknown>>;
  receipt_id: string | null;
  verification_code_hash: string | null;
  verification_expires_at: Timestamp | null;
  verification_attempts: DefaultCount;
  /** When the current code's email went out; a retried job does not send another within a minute. */
  verification_sent_at: Timestamp | null;
  overdue_notified_at: Timestamp | null;
  run_token: string | null;
  run_until: Timestamp | null;
  actor: string;
  created_at: DefaultTimestamp;
  updated_at: DefaultTimestamp;
}

export type DsarTables = { dsar_requests: DsarRequestsTable };
export type DsarDB = Kysely<DB & DsarTables>;
export type DsarRow = Selectable<DsarRequestsTable>;

/** The database's Kysely instance, typed with the DSAR tables as well. */
export function dsarDb(database: Database): DsarDB {
  return database.db.withTables<DsarTables>() as unknown as DsarDB;
}
