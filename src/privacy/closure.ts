import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { DateTime } from 'luxon';
import { auditInsert } from '../auth/audit.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { type Database, literal } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { type HoldGuard, holdGuard, notHeld } from './holds.ts';
import { issueReceipt, type StoredReceipt } from './receipts.ts';
import { subjectKey } from './subject-key.ts';

/**
 * Account closure (docs/compliance.md#account-closure): a tenant is closed (suspended for a
 * grace period, cancellable), then purged: every row of every table of the tenant, its
 * stored files and its API keys go, except what a legal hold keeps; a signed receipt records
 * what was removed and what was kept. The tenant's own row stays as the record the receipt
 * and any held rows belong to, without its name.
 */

export const GRACE_DAYS = 30;

/** Tables that stay after a purge: the closure receipt's and the holds' own records. */
const KEPT_TABLES = new Set(['tenants', 'legal_holds', 'dsar_receipts', 'receipt_chains']);

/** Object-store prefixes of a tenant. */
export function tenantPrefixes(tenantId: string): string[] {
  return [`exports/${tenantId}/`, `archives/${tenantId}/`, `backups/${tenantId}/`, `imports/${tenantId}/`];
}

export interface ClosureState {
  readonly tenant_id: string;
  readonly status: 'active' | 'closing' | 'purged';
  readonly closed_at: string | null;
  readonly closed_by: string | null;
  readonly purge_after: string | null;
  readonly purged_at: string | null;
}

interface TenantState {
  id: string;
  slug: string;
  status: 'active' | 'closing' | 'purged';
  closed_at: Date | null;
  closed_by: string | null;
  purge_after: Date | null;
  purged_at: Date | null;
}

async function state(database: Database, tenantId: string): Promise<TenantState> {
  const row = await database.db
    .selectFrom('tenants')
    .select(['id', 'slug', 'status', 'closed_at', 'closed_by', 'purge_after', 'purged_at'])
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `no tenant ${tenantId}`);
  return row as TenantState;
}

function present(s: TenantState): ClosureState {
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    tenant_id: s.id,
    status: s.status,
    closed_at: iso(s.closed_at),
    closed_by: s.closed_by,
    purge_after: iso(s.purge_after),
    purged_at: iso(s.purged_at),
  };
}

export async function closureState(database: Database, tenantId: string): Promise<ClosureState> {
  return present(await state(database, tenantId));
}

export interface ClosureActor {
  actor: string;
  ip?: string | null;
  userAgent?: string | null;
}

/**
 * Moves the account from one status to the next and audits it, in one transaction; an
 * account that another request moved meanwhile is a conflict (nothing is audited twice).
 */
async function transition(
  database: Database,
  tenantId: string,
  who: ClosureActor,
  change: {
    from: 'active' | 'closing';
    set: {
      status: 'active' | 'closing';
      closed_at: Date | null;
      closed_by: string | null;
      purge_after: Date | null;
    };
    action: string;
    note?: string | null;
    retentionUntil?: Date;
    now: Date;
  },
): Promise<void> {
  await database.db.transaction().execute(async (trx) => {
    const moved = await trx
      .updateTable('tenants')
      .set(change.set)
      .where('id', '=', tenantId)
      .where('status', '=', change.from)
      .executeTakeFirst();
    if (Number(moved.numUpdatedRows) !== 1) throw new FerryError('conflict', 'the account changed meanwhile');
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: who.actor,
        action: change.action,
        targetId: tenantId,
        ip: who.ip ?? null,
        userAgent: who.userAgent ?? null,
        success: true,
        error: change.note ?? null,
        retentionUntil: change.retentionUntil ?? null,
        occurredAt: change.now,
      }).compile(),
    );
  });
}

/** Closes the account: suspended until `purge_after` (now + the grace period), then purged. */
export async function closeAccount(
  database: Database,
  tenantId: string,
  who: ClosureActor,
  options: { now?: Date; graceDays?: number; reason?: string } = {},
): Promise<ClosureState> {
  const now = options.now ?? new Date();
  const graceDays = options.graceDays ?? GRACE_DAYS;
  if (!Number.isInteger(graceDays) || graceDays < 0 || graceDays > 365)
    throw new FerryError('invalid_parameter', 'grace_days: a whole number of days from 0 to 365');
  const current = await state(database, tenantId);
  if (current.status !== 'active')
    throw new FerryError(
      'conflict',
      `the account is already ${current.status === 'closing' ? 'closed' : 'purged'}`,
    );
  const purgeAfter = DateTime.fromJSDate(now).plus({ days: graceDays }).toJSDate();
  await transition(database, tenantId, who, {
    from: 'active',
    set: { status: 'closing', closed_at: now, closed_by: who.actor, purge_after: purgeAfter },
    action: 'account.closed',
    note: options.reason ? options.reason.slice(0, 500) : null,
    retentionUntil: purgeAfter,
    now,
  });
  await emitEvent(database, tenantId, 'account.closed', {
    data: { closed_at: now.toISOString(), purge_after: purgeAfter.toISOString() },
  });
  return closureState(database, tenantId);
}

/** Cancels a closure during its grace period. */
export async function reopenAccount(
  database: Database,
  tenantId: string,
  who: ClosureActor,
): Promise<ClosureState> {
  const current = await state(database, tenantId);
  if (current.status === 'active') throw new FerryError('conflict', 'the account is not closed');
  if (current.status === 'purged')
    throw new FerryError('conflict', 'the account was purged: it cannot be reopened');
  const now = new Date();
  await transition(database, tenantId, who, {
    from: 'closing',
    set: { status: 'active', closed_at: null, closed_by: null, purge_after: null },
    action: 'account.reopened',
    now,
  });
  await emitEvent(database, tenantId, 'account.reopened', { data: { reopened_at: now.toISOString() } });
  return closureState(database, tenantId);
}

export interface PurgeDeps {
  readonly database: Database;
  readonly store: ObjectStore;
  /** Keys the receipt's subject hash (HMAC). */
  readonly secretKey: string;
  /** Opens the receipt signing key. */
  readonly secrets: SecretBox;
  /**
   * Destroys the tenant's backup keys and deletes its backups at every destination, before
   * the tables (which hold the destinations) go; the number of keys destroyed.
   */
  readonly destroyBackups?: ((tenantId: string) => Promise<number>) | undefined;
  readonly map?: DataMap;
  readonly now?: () => Date;
  readonly batchRows?: number;
}

export interface PurgeOutcome {
  readonly tenant_id: string;
  readonly deleted: { dataset: string; rows: number }[];
  readonly kept: { dataset: string; rows: number; reason: string }[];
  readonly files_deleted: number;
  readonly purged_by: string;
  readonly receipt: StoredReceipt;
}

/** The data map's tables, those that other tables refer to last (children go first). */
function purgeOrder(map: DataMap): string[] {
  const tables = Object.entries(map.tables).filter(([name, t]) => t.tenantKey && name !== 'tenants');
  const depth = new Map<string, number>();
  const height = (name: string, seen = new Set<string>()): number => {
    if (depth.has(name)) return depth.get(name)!;
    if (seen.has(name)) return 0;
    seen.add(name);
    const key = map.tables[name]?.primaryKey[0] ?? 'id';
    let h = 0;
    for (const [child, t] of tables)
      if (child !== name && t.relations.some((r) => r.references === `${name}.${key}`))
        h = Math.max(h, 1 + height(child, seen));
    depth.set(name, h);
    return h;
  };
  return tables.map(([name]) => name).sort((a, b) => height(a) - height(b) || a.localeCompare(b));
}

/** Tables of Ferry's own state with a tenant_id column (not data map tables), in the current schema. */
async function ownTables(database: Database, map: DataMap): Promise<string[]> {
  const r = await sql<{ t: string }>`
    SELECT c.table_name AS t FROM information_schema.columns c
    JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' AND tb.table_type = 'BASE TABLE'
    ORDER BY c.table_name`.execute(database.db);
  return r.rows.map((x) => x.t).filter((t) => !map.tables[t] && !KEPT_TABLES.has(t));
}

async function countRows(database: Database, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(database.db);
  return Number(r.rows[0]?.n ?? 0);
}

/**
 * Purges a closed account (after its grace period, or now with `force`): every table of
 * the data map (children first, in batches), Ferry's own tables, the stored files, then a
 * signed receipt. Held rows stay, and so does everything they refer to. Running it again
 * after a crash finishes the work and returns the same receipt.
 */
export async function purgeAccount(
  deps: PurgeDeps,
  tenantId: string,
  who: ClosureActor,
  options: { force?: boolean } = {},
): Promise<PurgeOutcome> {
  const { database } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const now = (deps.now ?? (() => new Date()))();
  const current = await state(database, tenantId);
  if (current.status === 'active')
    throw new FerryError('conflict', 'the account is not closed: close it first (ferry tenants close)');
  if (
    current.status === 'closing' &&
    !options.force &&
    current.purge_after &&
    new Date(current.purge_after) > now
  )
    throw new FerryError(
      'conflict',
      `the account's grace period ends ${new Date(current.purge_after).toISOString()}; purge it then, or force it now`,
    );
  const guard: HoldGuard = await holdGuard(database, tenantId, map);
  const batch = deps.batchRows ?? 5000;
  // Backups go with the account (their keys destroyed, so every copy is unreadable), unless a hold keeps the tenant.
  if (!guard.holds.some((h) => h.scope === 'tenant')) await deps.destroyBackups?.(tenantId);
  const deleted: PurgeOutcome['deleted'] = [];
  const kept: PurgeOutcome['kept'] = [];
  for (const table of purgeOrder(map)) {
    const decl = map.tables[table]!;
    const tenant = `t.${decl.tenantKey} = ${literal(tenantId)}`;
    const keep = guard.protectedRows(table, 't');
    const where = `${tenant}${notHeld(keep)}`;
    let rows = 0;
    for (;;) {
      const r = await sql`${sql.raw(
        `DELETE FROM ${table} WHERE ctid IN (SELECT t.ctid FROM ${table} t WHERE ${where} LIMIT ${batch})`,
      )}`.execute(database.db);
      const n = Number(r.numAffectedRows ?? 0);
      rows += n;
      if (!n) break;
    }
    if (rows) deleted.push({ dataset: table, rows });
    const left = await countRows(database, `SELECT count(*) AS n FROM ${table} t WHERE ${tenant}`);
    if (left) kept.push({ dataset: table, rows: left, reason: 'kept under a legal hold' });
  }
  // Ferry's own state of the tenant: exports, schedules, webhooks, keys, sessions, DSARs, the audit trail.
  const pending = await ownTables(database, map);
  for (let pass = 0; pending.length && pass < 5; pass++) {
    for (const table of [...pending]) {
      try {
        const r =
          await sql`${sql.raw(`DELETE FROM ${table} WHERE tenant_id = ${literal(tenantId)}`)}`.execute(
            database.db,
          );
        const n = Number(r.numAffectedRows ?? 0);
        if (n) deleted.push({ dataset: table, rows: n });
        pending.splice(pending.indexOf(table), 1);
      } catch {
        // A table another one still refers to: the next pass, once that one is empty.
      }
    }
  }
  if (pending.length) throw new Error(`could not purge ${pending.join(', ')} of tenant ${tenantId}`);
  let files = 0;
  if (!guard.holds.some((h) => h.scope === 'tenant'))
    for (const prefix of tenantPrefixes(tenantId))
      for await (const object of deps.store.list(prefix)) {
        await deps.store.delete(object.key);
        files += 1;
      }
  const closedAt = current.closed_at ? new Date(current.closed_at) : now;
  const receipt = await issueReceipt(database, deps.secrets, {
    request_id: `closure:${tenantId}`,
    tenant_id: tenantId,
    type: 'account_closure',
    regulation: 'gdpr',
    subject_key: subjectKey(deps.secretKey, tenantId, `tenant:${tenantId}`),
    received_at: closedAt.toISOString(),
    verified_at: null,
    completed_at: now.toISOString(),
    stores: [
      ...deleted.map((d) => ({
        store: 'database' as const,
        dataset: d.dataset,
        deleted: d.rows,
        anonymized: 0,
        scrubbed: 0,
        retained: 0,
        retain_reason: null,
      })),
      ...kept.map((k) => ({
        store: 'database' as const,
        dataset: k.dataset,
        deleted: 0,
        anonymized: 0,
        scrubbed: 0,
        retained: k.rows,
        retain_reason: k.reason,
      })),
      ...(files
        ? [
            {
              store: 'object_store' as const,
              dataset: 'export_files',
              deleted: files,
              anonymized: 0,
              scrubbed: 0,
              retained: 0,
              retain_reason: null,
            },
          ]
        : []),
    ],
    files: { deleted: [], out_of_reach: [] },
    processors_notified: [],
    holds: guard.holds.map((h) => ({
      hold_id: h.id,
      reason: `${h.matter}: ${h.reason}`,
      datasets: kept.map((k) => k.dataset),
    })),
    backup_expiry: null,
  });
  // The account's record loses its name; its id stays as what the receipt and held rows belong to.
  const anonymous = `purged-${createHash('sha256').update(tenantId).digest('hex').slice(0, 16)}`;
  await database.db
    .updateTable('tenants')
    .set({ status: 'purged', purged_at: now, name: 'Closed account', slug: anonymous, closed_by: null })
    .where('id', '=', tenantId)
    .execute();
  return { tenant_id: tenantId, deleted, kept, files_deleted: files, purged_by: who.actor, receipt };
}

/** Closed accounts whose grace period is over. */
export async function accountsDueForPurge(database: Database, now: Date): Promise<string[]> {
  const rows = await database.db
    .selectFrom('tenants')
    .select('id')
    .where('status', '=', 'closing')
    .where('purge_after', '<=', now)
    .execute();
  return rows.map((r) => r.id);
}
