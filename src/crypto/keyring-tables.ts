import type { ColumnType, Kysely } from 'kysely';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

/** Kysely table types for migration 0027 (the keyring and key rotations). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T> = ColumnType<T, string | undefined, string>;

export type DataKeyState = 'active' | 'retired' | 'destroyed';

export interface KeyringTable {
  id: string;
  state: DataKeyState;
  /** base64(nonce ‖ AES-256-GCM ciphertext ‖ tag) under the master key; null once destroyed. */
  wrapped: string | null;
  /** Hex id of the master key that wrapped it (`masterKeyId`). */
  master_key_id: string | null;
  created_at: Timestamp;
  retired_at: Timestamp | null;
  destroyed_at: Timestamp | null;
}

export interface KeyRotationsTable {
  id: string;
  kind: 'master' | 'data';
  status: 'running' | 'completed';
  actor: string;
  phase: string;
  checkpoint: Json<Record<string, unknown>>;
  counts: Json<Record<string, unknown>>;
  master_key_id: string | null;
  data_key_id: string | null;
  lease_owner: string | null;
  lease_until: Timestamp | null;
  started_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Timestamp | null;
  error: string | null;
}

// A type alias, not an interface: `withTables` wants a type with an implicit index signature.
export type KeyringTables = {
  keyring: KeyringTable;
  key_rotations: KeyRotationsTable;
};

/** The database's Kysely instance (or a transaction's), typed with the keyring tables as well. */
export function keyringDb(db: Kysely<DB>): Kysely<DB & KeyringTables> {
  return db.withTables<KeyringTables>();
}

/** Shorthand for a `Database`. */
export function keyringDatabase(database: Database): Kysely<DB & KeyringTables> {
  return keyringDb(database.db);
}
