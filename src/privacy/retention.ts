import { createHash, randomUUID } from 'node:crypto';
import { type Kysely, sql, type Transaction } from 'kysely';
import { DateTime, Duration } from 'luxon';
import { auditInsert } from '../auth/audit.ts';
import { parseExportRequest } from '../collect/request.ts';
import { type Database, literal } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import type { DB } from '../db/schema.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, TableDeclaration } from '../datamap/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { exportPrefix, removeLeftovers } from '../export-requests/export-job.ts';
import { exportJobs } from '../export-requests/repository.ts';
import { exportDb } from '../export-requests/tables.ts';
import { datasetProducer, packageProducer } from '../pipeline/producers.ts';
import { runFile } from '../pipeline/run.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { clearedValue, columnInfo, personalColumns } from './erasure.ts';
import { type HoldGuard, holdGuard, notHeld } from './holds.ts';
import { effectiveRetention, type RetentionPolicy } from './retention-policies.ts';

/**
 * Retention sweeps (docs/retention.md): per dataset, the rows whose period is over are
 * deleted, anonymized, or archived (a verified package in the object store) and then
 * deleted, in batches of their own transactions, never touching what a legal hold keeps.
 * A sweep fixes its `as_of` time when it starts, so a sweep resumed after a crash acts on
 * exactly the rows the first attempt would have; each batch commits with its counts, so
 * the totals are exact however often it is resumed.
 */

export const DEFAULT_BATCH_ROWS = 5000;

export interface RetentionDeps {
  readonly database: Database;
  readonly store: ObjectStore;
  readonly now?: () => Date;
  readonly map?: DataMap;
  /** Rows per batch (and per transaction). */
  readonly batchRows?: number;
}

export interface DatasetSweepPlan {
  readonly dataset: string;
  readonly action: RetentionPolicy['action'];
  readonly keep: string;
  readonly after: RetentionPolicy['after'];
  /** Rows older than this are past their period; null when the period has not started (account open). */
  readonly cutoff: string | null;
  /** Rows the sweep would act on. */
  readonly rows: number;
  /** Rows past their period that a legal hold keeps. */
  readonly held: number;
  /** The oldest row the sweep would act on. */
  readonly oldest: string | null;
  /** The holds that exempt rows of this dataset. */
  readonly holds: { hold_id: string; matter: string }[];
  /** Why nothing can be done, when nothing can. */
  readonly note: string | null;
}

export interface RetentionPreview {
  readonly tenant_id: string;
  readonly as_of: string;
  readonly time_zone: string;
  readonly datasets: DatasetSweepPlan[];
}

export interface DatasetSweepCounts {
  deleted: number;
  anonymized: number;
  archived: number;
  /** Child rows that went with deleted rows (messages with their conversation), per table. */
  cascaded: Record<string, number>;
  archive?: { key: string; sha256: string; bytes: number; records: number } | undefined;
  done: boolean;
}

export interface SweepResult {
  readonly id: string;
  readonly tenant_id: string;
  readonly trigger: 'schedule' | 'manual';
  readonly status: 'running' | 'completed' | 'failed';
  readonly as_of: string;
  readonly started_at: string;
  readonly finished_at: string | null;
  readonly datasets: Record<string, DatasetSweepCounts>;
  readonly error: string | null;
}

interface TenantRow {
  id: string;
  timezone: string;
  status: string;
  closed_at: Date | null;
}

async function tenantRow(database: Database, tenantId: string): Promise<TenantRow> {
  const r =
    await sql<TenantRow>`SELECT id, timezone, status, closed_at FROM tenants WHERE id = ${tenantId}`.execute(
      database.db,
    );
  const row = r.rows[0];
  if (!row) throw new FerryError('not_found', `no tenant ${tenantId}`);
  return row;
}

/**
 * When a policy's period ends for rows made at the cutoff: the start of the tenant's local
 * day at `asOf`, minus `keep`. For `account_closed`, the closure plus `keep` decides all
 * rows at once: the cutoff is then "every row" (far future) or none (null).
 */
export function cutoffOf(policy: RetentionPolicy, asOf: Date, tenant: TenantRow): Date | null {
  const keep = Duration.fromISO(policy.keep);
  if (policy.after === 'account_closed') {
    if (!tenant.closed_at) return null;
    const end = DateTime.fromJSDate(tenant.closed_at).plus(keep);
    return end.toMillis() <= asOf.getTime() ? new Date('9999-12-31T00:00:00Z') : null;
  }
  return DateTime.fromJSDate(asOf).setZone(tenant.timezone).startOf('day').minus(keep).toJSDate();
}

/** The row's time the period counts from. */
function timeExpression(decl: TableDeclaration, policy: RetentionPolicy, alias: string): string | null {
  if (policy.after === 'account_closed') return null;
  if (policy.after === 'last_activity') {
    const cols = [decl.updatedColumn, decl.timeColumn].filter((c): c is string => Boolean(c));
    if (!cols.length) return null;
    return cols.length === 1
      ? `${alias}.${cols[0]}`
      : `coalesce(${cols.map((c) => `${alias}.${c}`).join(', ')})`;
  }
  return decl.timeColumn ? `${alias}.${decl.timeColumn}` : null;
}

interface TableWork {
  readonly table: string;
  readonly decl: TableDeclaration;
  readonly policy: RetentionPolicy;
  /** Rows past their period (tenant and time), without the hold condition. */
  readonly due: string | null;
  /** The hold condition for this action (held rows, or rows held rows refer to). */
  readonly guard: string | null;
  /** For anonymize: the SET list and the "not yet anonymized" condition. */
  readonly anonymize?: { set: string; pending: string } | null;
  readonly note: string | null;
}

async function tableWork(
  database: Database,
  tenant: TenantRow,
  policies: readonly RetentionPolicy[],
  asOf: Date,
  map: DataMap,
  guard: HoldGuard,
): Promise<TableWork[]> {
  const info = await columnInfo(database.db);
  const out: TableWork[] = [];
  for (const policy of policies) {
    const decl = map.tables[policy.dataset];
    if (!decl?.tenantKey) continue;
    const cutoff = cutoffOf(policy, asOf, tenant);
    const tenantCondition = `t.${decl.tenantKey} = ${literal(tenant.id)}`;
    let due: string | null = null;
    let note: string | null = null;
    if (!cutoff)
      note =
        policy.after === 'account_closed'
          ? tenant.closed_at
            ? 'the account is closed; its period has not ended'
            : "kept for the account's lifetime"
          : null;
    else if (policy.after === 'account_closed') due = tenantCondition;
    else {
      const time = timeExpression(decl, policy, 't');
      if (!time) note = 'no time column to measure the period by';
      else due = `${tenantCondition} AND ${time} < ${literal(cutoff.toISOString())}::timestamptz`;
    }
    let anonymize: TableWork['anonymize'] = null;
    if (policy.action === 'anonymize') {
      const settable = personalColumns(decl).filter((c) => {
        const i = info.get(`${policy.dataset}.${c}`);
        return i && !(decl.columns[c]?.class === 'identifier' && !i.nullable);
      });
      if (!settable.length) note = note ?? 'no personal column to anonymize';
      else {
        const values = settable.map((c) => [c, clearedValue(policy.dataset, c, decl, info)] as const);
        anonymize = {
          set: values.map(([c, v]) => `${c} = ${v}`).join(', '),
          pending: values.map(([c, v]) => `t.${c} IS DISTINCT FROM ${v}`).join(' OR '),
        };
      }
    }
    const action = policy.action === 'anonymize' ? 'held' : 'protected';
    out.push({
      table: policy.dataset,
      decl,
      policy,
      due,
      guard: action === 'held' ? guard.held(policy.dataset, 't') : guard.protectedRows(policy.dataset, 't'),
      anonymize,
      note,
    });
  }
  return out;
}

async function count(db: Kysely<DB>, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(db);
  return Number(r.rows[0]?.n ?? 0);
}

function target(w: TableWork): string | null {
  if (!w.due) return null;
  if (w.policy.action === 'anonymize') return w.anonymize ? `${w.due} AND (${w.anonymize.pending})` : null;
  return w.due;
}

/** What the next sweep would do per dataset, without doing it. */
export async function previewRetention(deps: RetentionDeps, tenantId: string): Promise<RetentionPreview> {
  const { database } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const asOf = (deps.now ?? (() => new Date()))();
  const tenant = await tenantRow(database, tenantId);
  const policies = await effectiveRetention(database, tenantId, map);
  const guard = await holdGuard(database, tenantId, map);
  const work = await tableWork(database, tenant, policies, asOf, map, guard);
  const datasets: DatasetSweepPlan[] = [];
  for (const policy of policies) {
    const w = work.find((x) => x.table === policy.dataset);
    const base = {
      dataset: policy.dataset,
      action: policy.action,
      keep: policy.keep,
      after: policy.after,
    };
    if (!w) {
      const files = await storedPreview(deps, tenant, policy, asOf, guard);
      datasets.push({ ...base, ...files });
      continue;
    }
    const cutoff = cutoffOf(policy, asOf, tenant);
    const where = target(w);
    let rows = 0;
    let held = 0;
    let oldest: string | null = null;
    const holds: { hold_id: string; matter: string }[] = [];
    if (where) {
      rows = await count(
        database.db,
        `SELECT count(*) AS n FROM ${w.table} t WHERE ${where}${notHeld(w.guard)}`,
      );
      if (w.guard) {
        held = await count(
          database.db,
          `SELECT count(*) AS n FROM ${w.table} t WHERE ${where} AND coalesce((${w.guard}), false)`,
        );
        if (held)
          for (const hold of guard.holds) {
            const own = guard.heldBy(hold, w.table, 't');
            if (
              own &&
              (await count(database.db, `SELECT count(*) AS n FROM ${w.table} t WHERE ${where} AND (${own})`))
            )
              holds.push({ hold_id: hold.id, matter: hold.matter });
          }
      }
      const time = timeExpression(w.decl, policy, 't');
      if (time && rows) {
        const r = await sql<{ at: string | null }>`${sql.raw(
          `SELECT ${utcInstantSql(`min(${time})`)} AS at FROM ${w.table} t WHERE ${where}${notHeld(w.guard)}`,
        )}`.execute(database.db);
        oldest = r.rows[0]?.at ?? null;
      }
    }
    datasets.push({
      ...base,
      cutoff:
        cutoff && cutoff.getUTCFullYear() < 9999 ? cutoff.toISOString() : cutoff ? asOf.toISOString() : null,
      rows,
      held,
      oldest,
      holds,
      note: w.note,
    });
  }
  return { tenant_id: tenantId, as_of: asOf.toISOString(), time_zone: tenant.timezone, datasets };
}

/** A tenant-wide hold keeps the tenant's stored files as well. */
function filesHeld(guard: HoldGuard): { hold_id: string; matter: string }[] {
  return guard.holds.filter((h) => h.scope === 'tenant').map((h) => ({ hold_id: h.id, matter: h.matter }));
}

async function expiredExports(database: Database, tenantId: string, cutoff: Date) {
  return exportDb(database)
    .selectFrom('export_requests')
    .select(['id', 'created_at'])
    .where('tenant_id', '=', tenantId)
    .where('files_deleted_at', 'is', null)
    .where('status', 'in', ['completed', 'failed', 'cancelled'])
    .where('created_at', '<', cutoff)
    .orderBy('created_at')
    .execute();
}

async function storedPreview(
  deps: RetentionDeps,
  tenant: TenantRow,
  policy: RetentionPolicy,
  asOf: Date,
  guard: HoldGuard,
): Promise<Omit<DatasetSweepPlan, 'dataset' | 'action' | 'keep' | 'after'>> {
  const cutoff = cutoffOf(policy, asOf, tenant);
  if (policy.dataset === 'backups') {
    const expired = cutoff ? await expiredBackups(deps.database, tenant.id, cutoff) : [];
    const held = guard.holds.length > 0;
    return {
      cutoff: cutoff?.toISOString() ?? null,
      rows: held ? 0 : expired.length,
      held: held ? expired.length : 0,
      oldest: expired[0]?.started_at ?? null,
      holds: held ? guard.holds.map((h) => ({ hold_id: h.id, matter: h.matter })) : [],
      note: 'backups older than this are forgotten; the keep policy of the backups chooses among the younger ones',
    };
  }
  if (!cutoff) return { cutoff: null, rows: 0, held: 0, oldest: null, holds: [], note: null };
  const exports = await expiredExports(deps.database, tenant.id, cutoff);
  const holds = filesHeld(guard);
  return {
    cutoff: cutoff.toISOString(),
    rows: holds.length ? 0 : exports.length,
    held: holds.length ? exports.length : 0,
    oldest: exports[0] ? new Date(exports[0].created_at).toISOString() : null,
    holds,
    note: null,
  };
}

// ---------------------------------------------------------------------------------------
// The sweep.

type SweepTables = {
  retention_sweeps: {
    id: string;
    tenant_id: string;
    trigger: 'schedule' | 'manual';
    sweep_date: string;
    as_of: Date;
    status: 'running' | 'completed' | 'failed';
    progress: Record<string, DatasetSweepCounts> | string;
    error: string | null;
    actor: string;
    started_at: Date;
    finished_at: Date | null;
  };
};

function sweepDb(db: Kysely<DB>) {
  return db.withTables<SweepTables>();
}

function parseProgress(p: unknown): Record<string, DatasetSweepCounts> {
  return (typeof p === 'string' ? JSON.parse(p) : (p ?? {})) as Record<string, DatasetSweepCounts>;
}

function presentSweep(row: SweepTables['retention_sweeps']): SweepResult {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    trigger: row.trigger,
    status: row.status,
    as_of: new Date(row.as_of).toISOString(),
    started_at: new Date(row.started_at).toISOString(),
    finished_at: row.finished_at ? new Date(row.finished_at).toISOString() : null,
    datasets: parseProgress(row.progress),
    error: row.error,
  };
}

const emptyCounts = (): DatasetSweepCounts => ({
  deleted: 0,
  anonymized: 0,
  archived: 0,
  cascaded: {},
  done: false,
});

async function saveProgress(
  trx: Kysely<DB> | Transaction<DB>,
  sweepId: string,
  dataset: string,
  counts: DatasetSweepCounts,
) {
  await sql`UPDATE retention_sweeps SET progress = jsonb_set(progress, ${sql.raw(literal(`{${dataset}}`))}, ${JSON.stringify(counts)}::jsonb)
    WHERE id = ${sweepId}`.execute(trx);
}

/** Child tables whose rows reference this table's key (they go with a deleted row). */
function childRelations(map: DataMap, table: string, decl: TableDeclaration) {
  const key = decl.primaryKey[0] ?? 'id';
  const out: { table: string; column: string; tenantKey: string }[] = [];
  for (const [child, c] of Object.entries(map.tables)) {
    if (!c.tenantKey || child === table) continue;
    for (const rel of c.relations)
      if (rel.references === `${table}.${key}`)
        out.push({ table: child, column: rel.column, tenantKey: c.tenantKey });
  }
  return out;
}

/** Deletes the rows of `where` in batches, each in its own transaction with its counts. */
async function deleteInBatches(
  deps: RetentionDeps,
  sweepId: string,
  w: TableWork,
  where: string,
  counts: DatasetSweepCounts,
  map: DataMap,
  tenantId: string,
): Promise<void> {
  const batch = deps.batchRows ?? DEFAULT_BATCH_ROWS;
  const key = w.decl.primaryKey[0] ?? 'id';
  const single = w.decl.primaryKey.length === 1;
  const children = single ? childRelations(map, w.table, w.decl) : [];
  for (;;) {
    const n = await deps.database.db.transaction().execute(async (trx) => {
      let gone: number;
      if (single) {
        const ids = (
          await sql<{
            k: string;
          }>`${sql.raw(`SELECT t.${key}::text AS k FROM ${w.table} t WHERE ${where} LIMIT ${batch}`)}`.execute(
            trx,
          )
        ).rows.map((r) => r.k);
        if (!ids.length) return 0;
        const list = ids.map((i) => literal(i)).join(', ');
        const referring = (c: (typeof children)[number]) =>
          `SELECT count(*) AS n FROM ${c.table} c WHERE c.${c.tenantKey} = ${literal(tenantId)} AND c.${c.column} IN (${list})`;
        const before = new Map<string, number>();
        for (const c of children) before.set(c.table, await count(trx, referring(c)));
        const r = await sql`${sql.raw(`DELETE FROM ${w.table} t WHERE t.${key} IN (${list})`)}`.execute(trx);
        gone = Number(r.numAffectedRows ?? 0);
        // Rows of child tables that went with them (a cascade); a SET NULL reference leaves them.
        for (const c of children) {
          const was = before.get(c.table) ?? 0;
          if (!was) continue;
          const went = was - (await count(trx, referring(c)));
          if (went > 0) counts.cascaded[c.table] = (counts.cascaded[c.table] ?? 0) + went;
        }
      } else {
        // ctid names a row whatever its key (a composite key such as settings').
        const r = await sql`${sql.raw(
          `DELETE FROM ${w.table} WHERE ctid IN (SELECT t.ctid FROM ${w.table} t WHERE ${where} LIMIT ${batch})`,
        )}`.execute(trx);
        gone = Number(r.numAffectedRows ?? 0);
      }
      if (!gone) return 0;
      counts.deleted += gone;
      if (w.policy.action === 'archive') counts.archived += gone;
      await saveProgress(trx, sweepId, w.table, counts);
      return gone;
    });
    if (!n) break;
  }
}

async function anonymizeInBatches(
  deps: RetentionDeps,
  sweepId: string,
  w: TableWork,
  where: string,
  counts: DatasetSweepCounts,
): Promise<void> {
  const batch = deps.batchRows ?? DEFAULT_BATCH_ROWS;
  if (!w.anonymize) return;
  for (;;) {
    const n = await deps.database.db.transaction().execute(async (trx) => {
      const r = await sql`${sql.raw(
        `UPDATE ${w.table} t SET ${w.anonymize!.set} WHERE t.ctid IN (SELECT t.ctid FROM ${w.table} t WHERE ${where} LIMIT ${batch})`,
      )}`.execute(trx);
      const changed = Number(r.numAffectedRows ?? 0);
      if (!changed) return 0;
      counts.anonymized += changed;
      await saveProgress(trx, sweepId, w.table, counts);
      return changed;
    });
    if (!n) break;
  }
}

/** The archive key of a sweep's dataset. */
export function archiveKey(tenantId: string, sweepId: string, dataset: string): string {
  return `archives/${tenantId}/${sweepId}/${dataset}.zip`;
}

/**
 * Writes the rows of the dataset older than the cutoff as a ZIP package (CSV, data
 * dictionary-free, with checksums.sha256) through the export pipeline, then reads the
 * stored object back and checks its SHA-256 against what was written.
 */
async function writeArchive(
  deps: RetentionDeps,
  sweepId: string,
  tenantId: string,
  w: TableWork,
  cutoff: Date,
  asOf: Date,
  map: DataMap,
): Promise<NonNullable<DatasetSweepCounts['archive']>> {
  const dataset = Object.values(map.datasets).find((d) => d.kind === 'table' && d.source === w.table);
  if (!dataset) throw new FerryError('invalid_parameter', `${w.table} has no dataset to archive it as`);
  const existing = await sql<{
    object_key: string;
    sha256: string;
    bytes: string | number;
    records: string | number;
  }>`
    SELECT object_key, sha256, bytes, records FROM retention_archives WHERE sweep_id = ${sweepId} AND dataset = ${w.table}`.execute(
    deps.database.db,
  );
  const found = existing.rows[0];
  if (found)
    return {
      key: found.object_key,
      sha256: found.sha256,
      bytes: Number(found.bytes),
      records: Number(found.records),
    };
  const request = parseExportRequest(
    {
      tenantId,
      dataset: dataset.name,
      format: 'csv',
      pii: 'full',
      to: cutoff.toISOString(),
      timezone: 'UTC',
    },
    map,
  );
  const key = archiveKey(tenantId, sweepId, w.table);
  const keepFor = w.policy.archive_keep ? Duration.fromISO(w.policy.archive_keep) : null;
  const outcome = await runFile(
    { store: deps.store },
    {
      produce: packageProducer('zip', { root: `retention-archive-${w.table}`, mtime: asOf }, [
        {
          path: `${dataset.name}.csv`,
          produce: datasetProducer(deps.database, request, { exportId: sweepId }),
        },
      ]),
    },
    {
      key,
      contentType: 'application/zip',
      complete: async () => true,
    },
    { signal: new AbortController().signal },
  );
  if (outcome.status !== 'completed') throw new Error(`the archive of ${w.table} was not stored`);
  // Read back what the store holds: the archive is trusted only once its bytes are checked.
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of await deps.store.get(key)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  const sha256 = hash.digest('hex');
  if (sha256 !== outcome.file.sha256 || bytes !== outcome.file.bytes)
    throw new FerryError(
      'checksum_mismatch',
      `the stored archive of ${w.table} does not match what was written`,
    );
  await sql`INSERT INTO retention_archives (id, tenant_id, sweep_id, dataset, object_key, sha256, bytes, records, cutoff, created_at, expires_at)
    VALUES (${randomUUID()}, ${tenantId}, ${sweepId}, ${w.table}, ${key}, ${sha256}, ${bytes}, ${outcome.file.records}, ${cutoff}, ${asOf},
      ${keepFor ? DateTime.fromJSDate(asOf).plus(keepFor).toJSDate() : null})
    ON CONFLICT (sweep_id, dataset) DO NOTHING`.execute(deps.database.db);
  return { key, sha256, bytes, records: outcome.file.records };
}

/**
 * Completed backups taken before the cutoff, oldest first, except the newest backup (a
 * tenant always keeps one).
 */
async function expiredBackups(
  database: Database,
  tenantId: string,
  cutoff: Date,
): Promise<{ id: string; started_at: string }[]> {
  const r = await sql<{ id: string; started_at: string }>`
    SELECT id, ${sql.raw(utcInstantSql('started_at'))} AS started_at FROM backups
    WHERE tenant_id = ${tenantId} AND status = 'completed' AND started_at < ${cutoff}
      AND id <> (SELECT id FROM backups WHERE tenant_id = ${tenantId} AND status = 'completed'
        ORDER BY started_at DESC, id DESC LIMIT 1)
    ORDER BY started_at, id`.execute(database.db);
  return r.rows;
}

/**
 * Forgets the backups older than the retention period (unless a legal hold is active):
 * their catalog rows become `forgotten`, and the backup job's prune deletes their manifests
 * and every chunk no kept backup uses (docs/backup.md#retention).
 */
async function sweepBackups(
  deps: RetentionDeps,
  sweepId: string,
  tenant: TenantRow,
  policy: RetentionPolicy,
  asOf: Date,
  guard: HoldGuard,
  counts: DatasetSweepCounts,
): Promise<void> {
  const cutoff = cutoffOf(policy, asOf, tenant);
  if (!cutoff || guard.holds.length) return;
  for (const b of await expiredBackups(deps.database, tenant.id, cutoff)) {
    await sql`UPDATE backups SET status = 'forgotten', forgotten_at = ${asOf} WHERE id = ${b.id} AND status = 'completed'`.execute(
      deps.database.db,
    );
    counts.deleted += 1;
    await saveProgress(deps.database.db, sweepId, 'backups', counts);
  }
}

/** Deletes the stored files of exports older than the plan's period (the export records stay). */
async function sweepExportFiles(
  deps: RetentionDeps,
  sweepId: string,
  tenant: TenantRow,
  policy: RetentionPolicy,
  asOf: Date,
  guard: HoldGuard,
  counts: DatasetSweepCounts,
): Promise<void> {
  const cutoff = cutoffOf(policy, asOf, tenant);
  if (!cutoff || filesHeld(guard).length) return;
  const jobs = exportJobs(deps.database);
  for (const e of await expiredExports(deps.database, tenant.id, cutoff)) {
    await removeLeftovers(deps.store, exportPrefix(tenant.id, e.id));
    await jobs.expire(e.id, asOf);
    counts.deleted += 1;
    await saveProgress(deps.database.db, sweepId, 'export_files', counts);
  }
}

/** Deletes archives whose own period is over. */
async function sweepArchives(
  deps: RetentionDeps,
  tenantId: string,
  asOf: Date,
  guard: HoldGuard,
): Promise<number> {
  if (filesHeld(guard).length) return 0;
  const due = await sql<{ id: string; object_key: string }>`
    SELECT id, object_key FROM retention_archives WHERE tenant_id = ${tenantId} AND expires_at IS NOT NULL AND expires_at <= ${asOf}`.execute(
    deps.database.db,
  );
  for (const a of due.rows) {
    await deps.store.delete(a.object_key);
    await sql`DELETE FROM retention_archives WHERE id = ${a.id}`.execute(deps.database.db);
  }
  return due.rows.length;
}

/**
 * The audit trail is cut only at its start, so the chain stays whole: events up to the
 * first one still in its period (or held) are deleted, and `audit_chains` records the last
 * deleted link, from which `ferry audit verify` starts.
 */
async function sweepAuditEvents(
  deps: RetentionDeps,
  sweepId: string,
  tenantId: string,
  w: TableWork,
  counts: DatasetSweepCounts,
): Promise<void> {
  if (!w.due) return;
  const batch = deps.batchRows ?? DEFAULT_BATCH_ROWS;
  const keeper = `SELECT min(t.seq) AS s FROM audit_events t WHERE t.tenant_id = ${literal(tenantId)} AND (NOT (${w.due})${w.guard ? ` OR coalesce((${w.guard}), false)` : ''})`;
  for (;;) {
    const n = await deps.database.db.transaction().execute(async (trx) => {
      const head = await sql<{ pruned_seq: string | number; last_seq: string | number }>`
        SELECT pruned_seq, last_seq FROM audit_chains WHERE tenant_id = ${tenantId} FOR UPDATE`.execute(trx);
      const chain = head.rows[0];
      if (!chain) return 0;
      const keep = await sql<{ s: string | number | null }>`${sql.raw(keeper)}`.execute(trx);
      const firstKept = keep.rows[0]?.s;
      const limit = firstKept == null ? Number(chain.last_seq) : Number(firstKept) - 1;
      const from = Number(chain.pruned_seq);
      const upTo = Math.min(limit, from + batch);
      if (upTo <= from) return 0;
      const last = await sql<{ hash: string }>`
        SELECT hash FROM audit_events WHERE tenant_id = ${tenantId} AND seq = ${upTo}`.execute(trx);
      const r =
        await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq > ${from} AND seq <= ${upTo}`.execute(
          trx,
        );
      const gone = Number(r.numAffectedRows ?? 0);
      await sql`UPDATE audit_chains SET pruned_seq = ${upTo}, pruned_hash = ${last.rows[0]?.hash ?? null}
        WHERE tenant_id = ${tenantId}`.execute(trx);
      counts.deleted += gone;
      await saveProgress(trx, sweepId, 'audit_events', counts);
      return upTo - from;
    });
    if (!n) break;
  }
}

/** The tenant's sweeps, newest first. */
export async function listSweeps(database: Database, tenantId: string, limit = 20): Promise<SweepResult[]> {
  const rows = await sweepDb(database.db)
    .selectFrom('retention_sweeps')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .orderBy('started_at', 'desc')
    .limit(limit)
    .execute();
  return rows.map(presentSweep);
}

export interface SweepOptions {
  readonly trigger: 'schedule' | 'manual';
  readonly actor: string;
}

/**
 * Runs (or resumes) a sweep of the tenant. A scheduled sweep runs once per local day:
 * a second call that day returns the first sweep (resuming it when it did not finish). A
 * manual sweep resumes the tenant's unfinished manual sweep, or starts a new one.
 */
export async function runRetentionSweep(
  deps: RetentionDeps,
  tenantId: string,
  options: SweepOptions,
): Promise<SweepResult> {
  const { database } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const now = (deps.now ?? (() => new Date()))();
  const tenant = await tenantRow(database, tenantId);
  const day = DateTime.fromJSDate(now).setZone(tenant.timezone).toISODate()!;
  const db = sweepDb(database.db);
  let row = await db
    .selectFrom('retention_sweeps')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('trigger', '=', options.trigger)
    .where((eb) =>
      options.trigger === 'schedule' ? eb('sweep_date', '=', day) : eb('status', '!=', 'completed'),
    )
    .orderBy('started_at', 'desc')
    .executeTakeFirst();
  if (row?.status === 'completed') return presentSweep(row);
  if (!row) {
    const id = randomUUID();
    await db
      .insertInto('retention_sweeps')
      .values({
        id,
        tenant_id: tenantId,
        trigger: options.trigger,
        sweep_date: day,
        as_of: now,
        status: 'running',
        progress: '{}',
        error: null,
        actor: options.actor,
        started_at: now,
        finished_at: null,
      })
      .onConflict((oc) => oc.doNothing())
      .execute();
    row = await db.selectFrom('retention_sweeps').selectAll().where('id', '=', id).executeTakeFirst();
    // Another process started today's scheduled sweep at the same moment: it runs it.
    if (!row) {
      const other = await db
        .selectFrom('retention_sweeps')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('trigger', '=', 'schedule')
        .where('sweep_date', '=', day)
        .executeTakeFirstOrThrow();
      return presentSweep(other);
    }
  } else {
    await db
      .updateTable('retention_sweeps')
      .set({ status: 'running', error: null })
      .where('id', '=', row.id)
      .execute();
  }
  const sweepId = row.id;
  const asOf = new Date(row.as_of);
  const progress = parseProgress(row.progress);
  try {
    const policies = await effectiveRetention(database, tenantId, map);
    const guard = await holdGuard(database, tenantId, map);
    const work = await tableWork(database, tenant, policies, asOf, map, guard);
    for (const policy of policies) {
      const counts = progress[policy.dataset] ?? emptyCounts();
      progress[policy.dataset] = counts;
      if (counts.done) continue;
      const w = work.find((x) => x.table === policy.dataset);
      if (policy.dataset === 'export_files')
        await sweepExportFiles(deps, sweepId, tenant, policy, asOf, guard, counts);
      else if (policy.dataset === 'backups')
        await sweepBackups(deps, sweepId, tenant, policy, asOf, guard, counts);
      else if (w?.table === 'audit_events') await sweepAuditEvents(deps, sweepId, tenantId, w, counts);
      else if (w) {
        const where = target(w);
        if (where) {
          const guarded = `${where}${notHeld(w.guard)}`;
          if (policy.action === 'anonymize') await anonymizeInBatches(deps, sweepId, w, guarded, counts);
          else {
            if (policy.action === 'archive') {
              const cutoff = cutoffOf(policy, asOf, tenant)!;
              const pending = await count(
                database.db,
                `SELECT count(*) AS n FROM ${w.table} t WHERE ${guarded}`,
              );
              if (pending) counts.archive = await writeArchive(deps, sweepId, tenantId, w, cutoff, asOf, map);
            }
            await deleteInBatches(deps, sweepId, w, guarded, counts, map, tenantId);
          }
        }
      }
      counts.done = true;
      await saveProgress(database.db, sweepId, policy.dataset, counts);
    }
    await sweepArchives(deps, tenantId, asOf, guard);
  } catch (err) {
    await db
      .updateTable('retention_sweeps')
      .set({ status: 'failed', error: (err as Error).message.slice(0, 2000) })
      .where('id', '=', sweepId)
      .execute();
    throw err;
  }
  const totals = Object.entries(progress).map(([dataset, c]) => ({
    dataset,
    deleted: c.deleted,
    anonymized: c.anonymized,
    archived: c.archived,
  }));
  const acted = totals.filter((t) => t.deleted || t.anonymized || t.archived);
  const finished = (deps.now ?? (() => new Date()))();
  await database.db.transaction().execute(async (trx) => {
    await sweepDb(trx)
      .updateTable('retention_sweeps')
      .set({ status: 'completed', finished_at: finished })
      .where('id', '=', sweepId)
      .execute();
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: options.actor,
        action: 'retention.swept',
        targetId: sweepId,
        dataType: 'retention',
        recordCount: totals.reduce((n, t) => n + t.deleted + t.anonymized, 0),
        success: true,
        error: acted.length
          ? acted
              .map(
                (t) =>
                  `${t.dataset}: ${[t.deleted && `${t.deleted} deleted`, t.anonymized && `${t.anonymized} anonymized`, t.archived && `${t.archived} archived`].filter(Boolean).join(', ')}`,
              )
              .join('; ')
          : 'nothing past its period',
        occurredAt: finished,
      }).compile(),
    );
  });
  await emitEvent(database, tenantId, 'retention.swept', {
    data: { sweep_id: sweepId, trigger: options.trigger, as_of: asOf.toISOString(), datasets: acted },
  });
  const done = await db
    .selectFrom('retention_sweeps')
    .selectAll()
    .where('id', '=', sweepId)
    .executeTakeFirstOrThrow();
  return presentSweep(done);
}
