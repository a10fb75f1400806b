import type { ColumnType, Generated, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

/** Kysely table types for migration 0003 (API keys, rate limits, usage, audit). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type BigCount = ColumnType<string | number, number | string, number | string>;

export interface ApiKeysTable {
  id: string;
  tenant_id: string;
  name: string | null;
  role: 'admin' | 'manager' | 'analyst' | 'agent';
  team_member_id: string | null;
  prefix: string;
  key_hash: string;
  scopes: ColumnType<string[], string[] | undefined, string[]>;
  created_by: string | null;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  last_used_at: Timestamp | null;
  allowed_ips: ColumnType<string[], string[] | undefined, string[]>;
  /** Migration 0028: the pepper the hash was made under (NULL: not known until the key is next used). */
  pepper_id: string | null;
  /** Migration 0028: the key this one replaced by rotation. */
  rotated_from: string | null;
  /** Migration 0028: when `api_key.expiring` was sent for the current `expires_at`. */
  expiry_warned_at: Timestamp | null;
}

/** Migration 0026: a tenant's IP allow-list and dashboard session timeouts. */
export interface TenantAccessTable {
  tenant_id: string;
  ip_allowlist: ColumnType<string[], string[] | undefined, string[]>;
  session_idle_minutes: number | null;
  session_absolute_minutes: number | null;
  updated_at: Timestamp;
  updated_by: string | null;
}

export interface RateLimitCountersTable {
  api_key_id: string;
  window_kind: 'hour' | 'burst';
  window_start: Timestamp;
  count: number;
  expires_at: Timestamp;
}

export interface UsageCountersTable {
  tenant_id: string;
  metric: string;
  period_start: Timestamp;
  /** One of USAGE_SHARDS rows per tenant, metric and period; the count is their sum. */
  shard: Generated<number>;
  count: number;
}

export interface SubjectRequestsTable {
  id: string;
  tenant_id: string;
  subject_id: string;
  occurred_at: Timestamp;
}

export interface AuditEventsTable {
  id: string;
  tenant_id: string;
  occurred_at: Timestamp;
  actor: string;
  action: string;
  target_id: string | null;
  data_type: string | null;
  date_from: string | null;
  date_to: string | null;
  record_count: BigCount | null;
  file_bytes: BigCount | null;
  download_count: number | null;
  ip_address: string | null;
  user_agent: string | null;
  success: boolean;
  error: string | null;
  retention_until: Timestamp | null;
}

// A type alias, not an interface: `withTables` wants a type with an implicit index signature.
export type AuthTables = {
  api_keys: ApiKeysTable;
  rate_limit_counters: RateLimitCountersTable;
  usage_counters: UsageCountersTable;
  subject_requests: SubjectRequestsTable;
  audit_events: AuditEventsTable;
  tenant_access: TenantAccessTable;
};

export type AuthDB = Kysely<DB & AuthTables>;

/** The database's Kysely instance, typed with the auth tables as well. */
export function authDb(database: Database): AuthDB {
  return database.db.withTables<AuthTables>();
}
