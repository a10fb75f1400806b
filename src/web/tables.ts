import type { ColumnType, Kysely } from 'kysely';
import type { OrganisationMembersTable } from '../auth/organisations.ts';
import type { TenantAccessTable } from '../auth/tables.ts';
import type { Database } from '../db/database.ts';
import type { DB } from '../db/schema.ts';

/** Kysely table types for migration 0015 (dashboard sessions, one-time links, TOTP). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface WebSessionsTable {
  id: string;
  token_hash: string;
  tenant_id: string;
  team_member_id: string;
  second_factor_pending: ColumnType<boolean, boolean | undefined, boolean>;
  ip: string | null;
  user_agent: string | null;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  idle_expires_at: Timestamp;
  expires_at: Timestamp;
  ended_at: Timestamp | null;
  /** Migration 0029: the tenant an organisation member switched to (null: their own). */
  acting_tenant_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export type TokenPurpose = 'sign_in' | 'reset' | 'invite';

export interface SignInTokensTable {
  id: string;
  token_hash: string | null;
  purpose: TokenPurpose;
  tenant_id: string;
  team_member_id: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  sent_at: Timestamp | null;
  used_at: Timestamp | null;
}

export interface TeamMemberFactorsTable {
  team_member_id: string;
  tenant_id: string;
  totp_secret: string;
  enabled_at: Timestamp | null;
  last_step: ColumnType<string | null, number | string | null, number | string | null>;
}

export type WebTables = {
  web_sessions: WebSessionsTable;
  sign_in_tokens: SignInTokensTable;
  team_member_factors: TeamMemberFactorsTable;
  tenant_access: TenantAccessTable;
  organisation_members: OrganisationMembersTable;
};

export function webDb(database: Database): Kysely<DB & WebTables> {
  return database.db as unknown as Kysely<DB & WebTables>;
}
