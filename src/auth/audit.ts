import { randomUUID } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { decodeCursor, encodeCursor } from '../lib/list-cursor.ts';
import type { AuthContext } from './context.ts';
import { MANAGER_AUDIT_ACTION_PREFIX } from './policy.ts';
import { authDb } from './tables.ts';

/**
 * The audit trail: one row in `audit_events` per export request, completion, failure,
 * download, deletion and key change (other modules add their own actions, e.g. DSAR
 * steps). Rows are only ever inserted. See docs/auth.md for the fields.
 */
export const AUDIT_ACTIONS = {
  exportRequested: 'export.requested',
  exportCompleted: 'export.completed',
  exportFailed: 'export.failed',
  exportDownloaded: 'export.downloaded',
  exportDeleted: 'export.deleted',
  keyCreated: 'api_key.created',
  keyRevoked: 'api_key.revoked',
  keyRotated: 'api_key.rotated',
} as const;

export interface AuditEntry {
  tenantId: string;
  /** `api_key:<id>`, `team_member:<id>`, `cli`, `system`. */
  actor: string;
  /** e.g. `export.completed`; see AUDIT_ACTIONS. */
  action: string;
  /** The dataset or package kind. */
  dataType?: string | null;
  dateRange?: { from?: string; to?: string } | null;
  recordCount?: number | null;
  fileBytes?: number | null;
  downloadCount?: number | null;
  ip?: string | null;
  userAgent?: string | null;
  success: boolean;
  error?: string | null;
  /** When the file (or the thing acted on) is removed under retention. */
  retentionUntil?: Date | null;
  /** The export, key or other object acted on. */
  targetId?: string | null;
  /** Defaults to now. */
  occurredAt?: Date;
}

const MAX_TEXT = 2000;
const clip = (s: string | null | undefined, max = MAX_TEXT) => (s == null ? null : s.slice(0, max));

/** Writes one audit entry. */
export async function recordAudit(database: Database, entry: AuditEntry): Promise<void> {
  await auditInsert(database, entry).execute();
}

/** The statement that records `entry`, not yet run, so a caller can send it with other writes. */
export function auditInsert(database: Database, entry: AuditEntry) {
  return authDb(database)
    .insertInto('audit_events')
    .values({
      id: randomUUID(),
      tenant_id: entry.tenantId,
      occurred_at: entry.occurredAt ?? new Date(),
      actor: clip(entry.actor, 200)!,
      action: clip(entry.action, 100)!,
      target_id: clip(entry.targetId, 200),
      data_type: clip(entry.dataType, 100),
      date_from: clip(entry.dateRange?.from, 64),
      date_to: clip(entry.dateRange?.to, 64),
      record_count: entry.recordCount ?? null,
      file_bytes: entry.fileBytes ?? null,
      download_count: entry.downloadCount ?? null,
      ip_address: clip(entry.ip, 100),
      user_agent: clip(entry.userAgent, 512),
      success: entry.success,
      error: clip(entry.error),
      retention_until: entry.retentionUntil ?? null,
    });
}

/** The audit fields that come from the caller: actor, tenant, IP and user agent. */
export function auditCaller(auth: AuthContext): Pick<AuditEntry, 'tenantId' | 'actor' | 'ip' | 'userAgent'> {
  return { tenantId: auth.tenantId, actor: auth.actor, ip: auth.ip, userAgent: auth.userAgent };
}

/** Whether a role sees an action in the audit log: admins all, managers exports and downloads. */
export function auditVisibleTo(role: AuthContext['role'], action: string): boolean {
  if (role === 'admin') return true;
  if (role === 'manager') return action.startsWith(MANAGER_AUDIT_ACTION_PREFIX);
  return false;
}

export interface AuditEvent {
  id: string;
  occurred_at: string;
  actor: string;
  action: string;
  target_id: string | null;
  data_type: string | null;
  date_from: string | null;
  date_to: string | null;
  record_count: number | null;
  file_bytes: number | null;
  download_count: number | null;
  ip_address: string | null;
  user_agent: string | null;
  success: boolean;
  error: string | null;
  retention_until: string | null;
}

export interface AuditQuery {
  action?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  cursor?: string | undefined;
  limit?: number | undefined;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

function parseTime(param: 'from' | 'to', value: string): Date {
  if (DATE.test(value)) {
    const start = new Date(`${value}T00:00:00Z`);
    if (Number.isNaN(start.getTime())) throw invalid(param, `"${value}" is not a valid date`);
    // `to` as a day includes that whole day.
    return param === 'to' ? new Date(start.getTime() + 86_400_000) : start;
  }
  const parsed = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(parsed.getTime()))
    throw invalid(param, `"${value}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp`);
  return parsed;
}

const asNumber = (v: string | number | null) => (v === null ? null : Number(v));

/**
 * One page of the tenant's audit log, newest first, limited to what the role may see.
 * `to` is exclusive for timestamps and includes the whole day for YYYY-MM-DD.
 */
export async function listAudit(
  database: Database,
  auth: Pick<AuthContext, 'tenantId' | 'role'>,
  query: AuditQuery,
): Promise<{ items: AuditEvent[]; next_cursor: string | null }> {
  if (auth.role !== 'admin' && auth.role !== 'manager')
    throw new FerryError('forbidden', `the ${auth.role} role may not read the audit log`);
  const limit = query.limit ?? 50;
  let q = authDb(database)
    .selectFrom('audit_events')
    .selectAll()
    .select(instantText('occurred_at').as('cursor_at'))
    .where('tenant_id', '=', auth.tenantId);
  if (auth.role === 'manager') q = q.where('action', 'like', `${MANAGER_AUDIT_ACTION_PREFIX}%`);
  if (query.action) q = q.where('action', '=', query.action);
  if (query.from) q = q.where('occurred_at', '>=', parseTime('from', query.from));
  if (query.to) q = q.where('occurred_at', '<', parseTime('to', query.to));
  if (query.cursor) {
    q = q.where(afterPosition('occurred_at', decodeCursor(query.cursor, 'json'), 'desc'));
  }
  const rows = await q
    .orderBy('occurred_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit + 1)
    .execute();
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    items: page.map((r) => ({
      id: r.id,
      occurred_at: r.occurred_at.toISOString(),
      actor: r.actor,
      action: r.action,
      target_id: r.target_id,
      data_type: r.data_type,
      date_from: r.date_from,
      date_to: r.date_to,
      record_count: asNumber(r.record_count),
      file_bytes: asNumber(r.file_bytes),
      download_count: r.download_count,
      ip_address: r.ip_address,
      user_agent: r.user_agent,
      success: r.success,
      error: r.error,
      retention_until: r.retention_until ? r.retention_until.toISOString() : null,
    })),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ at: last.cursor_at, id: last.id }, 'json') : null,
  };
}
