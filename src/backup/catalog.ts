import { type Kysely, sql } from 'kysely';
import type { DB } from '../db/schema.ts';
import { utcInstantSql } from '../db/keyset.ts';

/** A backup as the catalog lists it (times as UTC text with microseconds). */
export interface BackupRow {
  id: string;
  tenant_id: string;
  status: 'running' | 'completed' | 'failed' | 'forgotten';
  kind: 'full' | 'incremental';
  trigger: string;
  actor: string;
  parent_id: string | null;
  key_id: string | null;
  snapshot_at: string | null;
  schema_version: string | null;
  ferry_version: string | null;
  tables: number;
  rows: number;
  plain_bytes: number;
  written_bytes: number;
  chunks: number;
  new_chunks: number;
  manifest_sha256: string | null;
  destinations: { name: string; label: string; status: string; verified_at?: string; error?: string }[];
  verified_at: string | null;
  verify_status: string | null;
  verify_error: string | null;
  started_at: string;
  finished_at: string | null;
  forgotten_at: string | null;
  error: string | null;
}

/**
 * A backup still `running` this long after it started is taken for dead (its process was
 * killed): it is failed, and prune no longer waits for it. Longer than any backup should take.
 */
export const STALE_AFTER_MS = 6 * 60 * 60 * 1000;

const at = (column: string) =>
  `CASE WHEN ${column} IS NULL THEN NULL ELSE ${utcInstantSql(column)} END AS ${column}`;

const SELECT =
  sql.raw(`SELECT id, tenant_id, status, kind, trigger, actor, parent_id, key_id, ${at('snapshot_at')},
  schema_version, ferry_version, tables, rows::float8 AS rows, plain_bytes::float8 AS plain_bytes,
  written_bytes::float8 AS written_bytes, chunks, new_chunks, manifest_sha256, destinations, ${at('verified_at')},
  verify_status, verify_error, ${at('started_at')}, ${at('finished_at')}, ${at('forgotten_at')}, error FROM backups`);

const parse = (row: BackupRow): BackupRow => ({
  ...row,
  destinations: typeof row.destinations === 'string' ? JSON.parse(row.destinations) : row.destinations,
});

export async function backupById(db: Kysely<DB>, tenantId: string, id: string): Promise<BackupRow | null> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return null;
  const r = await sql<BackupRow>`${SELECT} WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(db);
  return r.rows[0] ? parse(r.rows[0]) : null;
}

/** The newest completed backup of a tenant (the parent of the next one, the one a drill restores). */
export async function latestCompleted(db: Kysely<DB>, tenantId: string): Promise<BackupRow | null> {
  const r = await sql<BackupRow>`${SELECT} WHERE tenant_id = ${tenantId} AND status = 'completed'
    ORDER BY started_at DESC, id DESC LIMIT 1`.execute(db);
  return r.rows[0] ? parse(r.rows[0]) : null;
}

/** Backups newest first: completed ones, or every status with `all`. */
export async function listBackups(
  db: Kysely<DB>,
  tenantId: string,
  options: { all?: boolean; limit?: number } = {},
): Promise<BackupRow[]> {
  const statuses = options.all ? ['running', 'completed', 'failed', 'forgotten'] : ['completed'];
  const r = await sql<BackupRow>`${SELECT} WHERE tenant_id = ${tenantId}
    AND status IN (${sql.join(statuses)}) ORDER BY started_at DESC, id DESC LIMIT ${options.limit ?? 1000}`.execute(
    db,
  );
  return r.rows.map(parse);
}

/** Fails running backups whose process stopped (killed, crashed) long ago. */
export async function markStaleRunning(db: Kysely<DB>, tenantId: string, now: Date): Promise<void> {
  await sql`UPDATE backups SET status = 'failed', error = 'the process taking the backup stopped', finished_at = ${now}
    WHERE tenant_id = ${tenantId} AND status = 'running'
      AND started_at < ${new Date(now.getTime() - STALE_AFTER_MS)}`.execute(db);
}
