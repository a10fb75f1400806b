import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import type { DeliveriesTable } from '../deliver/tables.ts';

/** Kysely table types for migration 0006 (webhooks; its deliveries table is in src/deliver/tables.ts). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A column with a database default: optional on insert. */
type Defaulted<T> = ColumnType<T, T | undefined, T>;
type DefaultedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export interface WebhookEndpointsTable {
  id: string;
  tenant_id: string;
  url: string;
  description: string | null;
  events: Json<string[]>;
  secret_sealed: string;
  previous_secret_sealed: string | null;
  previous_secret_expires_at: Timestamp | null;
  status: Defaulted<'active' | 'disabled'>;
  disabled_at: Timestamp | null;
  disabled_reason: string | null;
  consecutive_failures: Defaulted<number>;
  failing_since: Timestamp | null;
  created_at: DefaultedTimestamp;
  updated_at: DefaultedTimestamp;
}

export interface WebhookMessagesTable {
  id: string;
  tenant_id: string;
  endpoint_id: string;
  event: string;
  payload: string;
  status: Defaulted<'pending' | 'delivered' | 'failed'>;
  attempts: Defaulted<number>;
  next_attempt_at: Timestamp | null;
  locked_until: Timestamp | null;
  last_error: string | null;
  created_at: DefaultedTimestamp;
  delivered_at: Timestamp | null;
  failed_at: Timestamp | null;
}

export interface WebhookAttemptsTable {
  id: string;
  message_id: string;
  attempt: number;
  started_at: Timestamp;
  status_code: number | null;
  latency_ms: number;
  outcome: 'success' | 'failure';
  error: string | null;
  response_excerpt: string | null;
}

// A type alias, not an interface: `withTables` wants a type with an implicit index signature.
export type WebhookTables = {
  webhook_endpoints: WebhookEndpointsTable;
  webhook_messages: WebhookMessagesTable;
  webhook_attempts: WebhookAttemptsTable;
  deliveries: DeliveriesTable;
};

export type WebhookDB = Kysely<DB & WebhookTables>;

/** The database's Kysely instance, typed with the webhook and delivery tables as well. */
export function webhookDb(database: Database): WebhookDB {
  return database.db.withTables<WebhookTables>();
}
