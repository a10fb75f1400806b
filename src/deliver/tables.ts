import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

type DefaultedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type BigCount = ColumnType<string | number, number | string, number | string>;

/** The `deliveries` table of migration 0006: what `deliverAll` reported, a row per target of an export. */
export interface DeliveriesTable {
  id: string;
  tenant_id: string;
  export_id: string;
  schedule_id: string | null;
  target_type: 's3' | 'sftp' | 'email' | 'webhook' | 'folder';
  target_name: string | null;
  target_label: string;
  status: 'delivered' | 'failed';
  attempts: number;
  location: string | null;
  error: string | null;
  error_code: string | null;
  bytes_sent: BigCount;
  checksum_verified: boolean;
  created_at: DefaultedTimestamp;
}

// A type alias, not an interface: `withTables` wants a type with an implicit index signature.
export type DeliveryTables = { deliveries: DeliveriesTable };

/** The database's Kysely instance, typed with the deliveries table as well. */
export function deliveryDb(database: Database): Kysely<DB & DeliveryTables> {
  return database.db.withTables<DeliveryTables>();
}
