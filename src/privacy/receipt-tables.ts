import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

/** Kysely table types for migration 0012 (receipts and their signing keys). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
/** bigint columns: a number from pg (its parser), a number or text from PGlite; read with Number(). */
type BigIntColumn = ColumnType<number | string, number | string, number | string>;

export interface ReceiptSigningKeysTable {
  kid: string;
  public_key: string;
  private_key_sealed: string;
  created_at: DefaultedTimestamp;
  retired_at: Timestamp | null;
}

export interface ReceiptChainsTable {
  tenant_id: string;
  last_sequence: ColumnType<number | string, number | string | undefined, number | string>;
  last_sha256: string | null;
}

export interface DsarReceiptsTable {
  id: string;
  tenant_id: string;
  request_id: string;
  sequence: BigIntColumn;
  sha256: string;
  body: string;
  signature: string;
  key_id: string;
  issued_at: Timestamp;
}

// A type alias, not an interface: `withTables` wants a type with an implicit index signature.
export type ReceiptTables = {
  receipt_signing_keys: ReceiptSigningKeysTable;
  receipt_chains: ReceiptChainsTable;
  dsar_receipts: DsarReceiptsTable;
};

export type ReceiptDB = Kysely<DB & ReceiptTables>;

/** The database's Kysely instance, typed with the receipt tables as well. */
export function receiptDb(database: Database): ReceiptDB {
  return database.db.withTables<ReceiptTables>();
}
