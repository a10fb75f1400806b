import { randomUUID } from 'node:crypto';
import { type Kysely, sql, type Transaction } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import { rowSelector } from '../collect/query.ts';
import { parseExportRequest } from '../collect/request.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { type Database, literal } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { exportPrefix, removeLeftovers } from '../export-requests/export-job.ts';
import { exportJobs } from '../export-requests/repository.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { columnInfo, type StoreCounts } from './erasure.ts';
import { type HoldGuard, holdGuard, notHeld } from './holds.ts';
import { issueReceiptInTransaction } from './receipts.ts';
import { subjectKey } from './subject-key.ts';

/**
 * Selective deletion (docs/deletion.md): a tenant deletes chosen data — one conversation,
 * the conversations an export with the same filters would export, a customer, a
 * knowledge-base document — with everything that goes with it, by the same rules as
 * erasure: a plan first, legal holds win, one audit event, one signed receipt, the erasure
 * ledger (so a restored backup deletes the rows again) and the `data.deleted` webhook.
 * The rows are chosen once, when the deletion starts, then deleted in batches, each batch
 * in its own transaction with its counts: a crashed job resumes where it stopped.
 */

export const DELETION_TARGETS = ['conversation', 'conversations', 'message', 'customer', 'document'] as const;
export type DeletionTarget = (typeof DELETION_TARGETS)[number];

/** Rows (of the chosen table) deleted per transaction. */
export const DEFAULT_DELETION_BATCH = 1000;

export interface DeletionInput {
  readonly target: string;
  /** The conversation, customer or document (targets other than `conversations`). */
  readonly id?: string | undefined;
  /** `conversations`: the conversations dataset's export filters, as text (`from`, `site_url`, `tags`, …). */
  readonly filters?: Readonly<Record<string, string>> | undefined;
  /** IANA zone the date filters' days are read in (default: the tenant's), as for an export. */
  readonly timezone?: string | undefined;
}

/** What goes with the chosen rows and is not counted as deleted rows of a table. */
export interface DerivedData {
  readonly dataset: string;
  readonly effect: 'deleted' | 'recomputed' | 'reference_removed' | 'kept';
  readonly note: string;
}

export interface DeletionPlan {
  readonly target: DeletionTarget;
  readonly id: string | null;
  readonly filters: Readonly<Record<string, string>>;
  /** Per table: rows deleted with the target, references cleared (`scrubbed`), rows kept (`retained`). */
  readonly stores: StoreCounts[];
  readonly derived: DerivedData[];
  /** Stored export files that may contain the rows: deleted with them (kept while a hold keeps some of the rows). */
  readonly files: { export_id: string; file: string }[];
  readonly holds: { hold_id: string; reason: string; datasets: string[] }[];
}

export interface Deletion {
  readonly id: string;
  readonly tenant_id: string;
  readonly target: DeletionTarget;
  readonly target_id: string | null;
  readonly filters: Readonly<Record<string, string>>;
  readonly status: 'pending' | 'running' | 'completed' | 'failed';
  /** The plan the deletion was confirmed with (counts when it was asked for). */
  readonly plan: DeletionPlan;
  /** Counts so far, per table (`stores`), and the stored export files removed. */
  readonly progress: {
    stores: StoreCounts[];
    files: { export_id: string; file: string }[];
    held: number;
  };
  /** Chosen rows (null until the job has chosen them) and how many are done. */
  readonly selected: number | null;
  readonly done: number;
  readonly receipt_id: string | null;
  readonly error: string | null;
  readonly actor: string;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly finished_at: string | null;
}

export interface DeletionDeps {
  readonly database: Database;
  readonly store: Pick<ObjectStore, 'delete' | 'list'>;
  /** Keys the ledger's hash of the deletion (HMAC). */
  readonly secretKey: string;
  /** Opens the receipt signing key. */
  readonly secrets: SecretBox;
  readonly now?: () => Date;
  readonly map?: DataMap;
  /** Rows of the chosen table per transaction. */
  readonly batchRows?: number;
  /** Called after each committed batch (tests stop a job there to prove it resumes). */
  readonly afterBatch?: (done: number) => Promise<void>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HOLD_REASON = 'kept under a legal hold';
const MAX_FILTERS = 30;

/** The table a target naming one row lives in. */
const TABLE_OF = {
  conversation: 'conversations',
  message: 'messages',
  customer: 'customers',
  document: 'documents',
} as const;

/**
 * Columns of a conversation that sum up its messages: recomputed from the messages that remain
 * when some of them are deleted (the conversation stays). Kept beside the deletion because only
 * deleting single messages changes a conversation's messages after the fact.
 */
const CONVERSATION_FROM_MESSAGES = `message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id),
  customer_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'customer'),
  ai_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'ai'),
  human_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'human'),
  ai_confidence_avg = (SELECT avg(m.confidence_score) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'ai')`;

/** The live stream's outbox events (`stream_events`) that name rows of a table, as a condition over alias e. */
const OUTBOX_EVENTS: Readonly<Record<string, (ids: string) => string>> = {
  conversations: (ids) => `e.conversation_id IN (${ids})`,
  messages: (ids) =>
    `e.event = 'message_created' AND e.data->>'message_id' IN (SELECT x::text FROM unnest(ARRAY[${ids}]::uuid[]) x)`,
};

/** The table each target's rows are chosen in, in deletion order (a customer's conversations before the customer). */
function rootTables(target: DeletionTarget): string[] {
  if (target === 'customer') return ['conversations', 'customers'];
  if (target === 'document') return ['documents'];
  if (target === 'message') return ['messages'];
  return ['conversations'];
}

interface Selection {
  readonly target: DeletionTarget;
  readonly id: string | null;
  readonly filters: Record<string, string>;
  /** Per root table, the SQL choosing its rows' ids (alias-free, without the hold condition). */
  readonly roots: { table: string; ids: string }[];
}

/** Checks the input and builds the SQL that chooses the rows; `not_found` for an id the tenant does not have. */
async function selectionOf(
  database: Database,
  tenantId: string,
  input: DeletionInput,
  map: DataMap,
): Promise<Selection> {
  if (!(DELETION_TARGETS as readonly string[]).includes(input.target))
    throw invalid('target', `"${input.target}" is not something Ferry deletes`, [...DELETION_TARGETS]);
  const target = input.target as DeletionTarget;
  const tenant = literal(tenantId);
  if (target === 'conversations') {
    if (input.id !== undefined) throw invalid('id', 'applies to one conversation: use target "conversation"');
    const filters = { ...input.filters };
    const names = Object.keys(filters);
    if (!names.length)
      throw invalid(
        'filters',
        'give at least one filter (from, to, site_url, tags, status, …): deleting every conversation is closing the account',
      );
    if (names.length > MAX_FILTERS) throw invalid('filters', `at most ${MAX_FILTERS} filters`);
    // The export engine's own validation and SQL: exactly the rows an export with these filters holds.
    const request = parseExportRequest(
      { tenantId, dataset: 'conversations', filters, timezone: input.timezone },
      map,
    );
    if (Object.keys(request.options).length)
      throw invalid(
        'filters',
        `${Object.keys(request.options).join(', ')} is an export option, not a filter`,
      );
    const zone = input.timezone ?? (await loadTenant(database, tenantId)).timezone;
    const ids = rowSelector(request, { dayZone: zone })('conversations', request.filters);
    return { target, id: null, filters, roots: [{ table: 'conversations', ids }] };
  }
  if (input.filters && Object.keys(input.filters).length)
    throw invalid('filters', `apply to target "conversations", not "${target}"`);
  const id = input.id ?? '';
  if (!id) throw invalid('id', `is required: the ${target} to delete`);
  const table = TABLE_OF[target];
  const label = target === 'document' ? 'knowledge-base document' : target;
  if (!UUID.test(id)) throw new FerryError('not_found', `no ${label} ${id}`);
  const found = await sql<{ n: number | string }>`${sql.raw(
    `SELECT count(*) AS n FROM ${table} t WHERE t.tenant_id = ${tenant} AND t.id = ${literal(id)}`,
  )}`.execute(database.db);
  if (!Number(found.rows[0]?.n ?? 0)) throw new FerryError('not_found', `no ${label} ${id}`);
  const one = `SELECT t.id FROM ${table} t WHERE t.tenant_id = ${tenant} AND t.id = ${literal(id.toLowerCase())}`;
  const roots =
    target === 'customer'
      ? [
          {
            table: 'conversations',
            ids: `SELECT t.id FROM conversations t WHERE t.tenant_id = ${tenant} AND t.customer_id = ${literal(id.toLowerCase())}`,
          },
          { table: 'customers', ids: one },
        ]
      : [{ table, ids: one }];
  return { target, id: id.toLowerCase(), filters: {}, roots };
}

/** Tables whose rows refer to `table`'s rows (the data map's relations), with what a deleted row does to them. */
async function dependents(database: Database | { db: Kysely<DB> }, table: string, map: DataMap) {
  const info = await columnInfo(database.db);
  const out: { table: string; column: string; array: boolean; effect: 'deleted' | 'reference_removed' }[] =
    [];
  for (const [name, decl] of Object.entries(map.tables)) {
    if (!decl.tenantKey || name === table) continue;
    for (const rel of decl.relations)
      if (rel.references === `${table}.id`)
        // The schema's rule (migrations 0001, 0014): a NOT NULL reference goes with the row, a nullable one is cleared.
        out.push({
          table: name,
          column: rel.column,
          array: false,
          effect: info.get(`${name}.${rel.column}`)?.nullable ? 'reference_removed' : 'deleted',
        });
    // A uuid[] list of conversations (revenue events' touchpoints) loses the deleted ids.
    if (table === 'conversations' && decl.columns.conversation_ids?.type === 'uuid[]')
      out.push({ table: name, column: 'conversation_ids', array: true, effect: 'reference_removed' });
  }
  return out;
}

/** The datasets computed from a table's rows at every export (they follow the remaining rows). */
function computedFrom(table: string, map: DataMap): DerivedData[] {
  return Object.values(map.datasets)
    .filter((d) => d.kind !== 'table' && d.source === table)
    .map((d) => ({
      dataset: d.name,
      effect: 'recomputed' as const,
      note: 'computed from the remaining rows at every export: nothing of the deleted rows stays',
    }));
}

function emptyCounts(dataset: string, store: StoreCounts['store'] = 'database'): StoreCounts {
  return { store, dataset, deleted: 0, anonymized: 0, scrubbed: 0, retained: 0, retain_reason: null };
}

function add(stores: StoreCounts[], dataset: string, field: 'deleted' | 'scrubbed' | 'retained', n: number) {
  if (!n) return;
  let entry = stores.find((s) => s.dataset === dataset && s.store === 'database');
  if (!entry) {
    entry = emptyCounts(dataset);
    stores.push(entry);
  }
  entry[field] += n;
}

async function count(db: Kysely<DB> | Transaction<DB>, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(db);
  return Number(r.rows[0]?.n ?? 0);
}

/** The chosen rows of a root table a hold does not keep, and those it keeps, as WHERE conditions over alias t. */
function rootConditions(root: { table: string; ids: string }, tenantId: string, guard: HoldGuard) {
  const base = `t.tenant_id = ${literal(tenantId)} AND t.id IN (${root.ids})`;
  const kept = guard.protectedRows(root.table, 't');
  return {
    free: `${base}${notHeld(kept)}`,
    held: kept ? `${base} AND coalesce((${kept}), false)` : null,
  };
}

/** Datasets whose stored export files may hold rows of a table (the company package holds every dataset). */
function exportDatasetsOf(table: string, map: DataMap): string[] {
  const related = new Set<string>([table]);
  if (table === 'conversations') related.add('messages');
  if (table === 'documents') related.add('document_chunks');
  return Object.values(map.datasets)
    .filter((d) => related.has(d.source))
    .map((d) => d.name);
}

/** Stored export files that may hold the chosen rows: kept exports of those datasets, made after the oldest row existed. */
async function storedFiles(
  database: Database,
  tenantId: string,
  selection: Selection,
  map: DataMap,
): Promise<{ export_id: string; file: string }[]> {
  const out: { export_id: string; file: string }[] = [];
  const seen = new Set<string>();
  for (const root of selection.roots) {
    const oldest = await sql<{ at: Date | null }>`${sql.raw(
      `SELECT min(t.created_at) AS at FROM ${root.table} t WHERE t.tenant_id = ${literal(tenantId)} AND t.id IN (${root.ids})`,
    )}`.execute(database.db);
    const at = oldest.rows[0]?.at;
    if (!at) continue;
    const datasets = exportDatasetsOf(root.table, map);
    const rows = await sql<{ export_id: string; file: string }>`
      SELECT r.id AS export_id, f.name AS file FROM export_requests r JOIN export_files f ON f.export_id = r.id
      WHERE r.tenant_id = ${tenantId} AND r.status = 'completed' AND r.files_deleted_at IS NULL
        AND r.created_at >= ${new Date(at)}
        AND (cardinality(r.datasets) = 0 OR r.datasets && ${sql.raw(
          `ARRAY[${datasets.map((d) => literal(d)).join(', ')}]::text[]`,
        )})
      ORDER BY r.created_at, r.id, f.name`.execute(database.db);
    for (const r of rows.rows) {
      const key = `${r.export_id}/${r.file}`;
      if (!seen.has(key)) out.push(r);
      seen.add(key);
    }
  }
  return out;
}

/** The active holds that keep some of the chosen rows (or rows that go with them), with the tables where they do. */
async function holdsOver(
  database: Database,
  tenantId: string,
  selection: Selection,
  guard: HoldGuard,
  map: DataMap,
): Promise<DeletionPlan['holds']> {
  const out: DeletionPlan['holds'] = [];
  const tenant = literal(tenantId);
  for (const hold of guard.holds) {
    const datasets: string[] = [];
    for (const root of selection.roots) {
      const chosen = `t.tenant_id = ${tenant} AND t.id IN (${root.ids})`;
      const own = guard.heldBy(hold, root.table, 't');
      if (
        own &&
        (await count(database.db, `SELECT count(*) AS n FROM ${root.table} t WHERE ${chosen} AND (${own})`))
      )
        datasets.push(root.table);
      for (const dep of await dependents(database, root.table, map)) {
        if (dep.effect !== 'deleted' || datasets.includes(dep.table)) continue;
        const held = guard.heldBy(hold, dep.table, 'c');
        const decl = map.tables[dep.table]!;
        if (
          held &&
          (await count(
            database.db,
            `SELECT count(*) AS n FROM ${dep.table} c WHERE c.${decl.tenantKey} = ${tenant} AND (${held})
             AND c.${dep.column} IN (SELECT t.id FROM ${root.table} t WHERE ${chosen})`,
          ))
        )
          datasets.push(dep.table);
      }
    }
    if (datasets.length) out.push({ hold_id: hold.id, reason: `${hold.matter}: ${hold.reason}`, datasets });
  }
  return out;
}

/** `dry_run`: what deleting the target would do, per table, without changing anything. */
export async function planDeletion(
  database: Database,
  tenantId: string,
  input: DeletionInput,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<DeletionPlan> {
  const selection = await selectionOf(database, tenantId, input, map);
  return planOf(database, tenantId, selection, map);
}

async function planOf(
  database: Database,
  tenantId: string,
  selection: Selection,
  map: DataMap,
): Promise<DeletionPlan> {
  const guard = await holdGuard(database, tenantId, map);
  const stores: StoreCounts[] = [];
  const derived: DerivedData[] = [];
  let heldAny = false;
  for (const root of selection.roots) {
    const { free, held } = rootConditions(root, tenantId, guard);
    add(
      stores,
      root.table,
      'deleted',
      await count(database.db, `SELECT count(*) AS n FROM ${root.table} t WHERE ${free}`),
    );
    if (held) {
      const n = await count(database.db, `SELECT count(*) AS n FROM ${root.table} t WHERE ${held}`);
      add(stores, root.table, 'retained', n);
      heldAny ||= n > 0;
    }
    const chosen = `SELECT t.id FROM ${root.table} t WHERE ${free}`;
    for (const dep of await dependents(database, root.table, map)) {
      const decl = map.tables[dep.table]!;
      const refers = dep.array ? `c.${dep.column} && ARRAY(${chosen})` : `c.${dep.column} IN (${chosen})`;
      const n = await count(
        database.db,
        `SELECT count(*) AS n FROM ${dep.table} c WHERE c.${decl.tenantKey} = ${literal(tenantId)} AND ${refers}`,
      );
      add(stores, dep.table, dep.effect === 'deleted' ? 'deleted' : 'scrubbed', n);
      if (n && dep.effect === 'reference_removed') {
        const entry = stores.find((s) => s.dataset === dep.table)!;
        entry.retain_reason = `rows kept, the reference to the deleted ${root.table} removed${decl.erasure.basis ? ` (${decl.erasure.basis})` : ''}`;
      }
      if (!derived.some((d) => d.dataset === dep.table))
        derived.push({
          dataset: dep.table,
          effect: dep.effect,
          note:
            dep.effect === 'deleted'
              ? `rows of the deleted ${root.table} go with them`
              : `rows stay; their ${dep.column} no longer names the deleted ${root.table}`,
        });
    }
    for (const d of computedFrom(root.table, map))
      if (!derived.some((x) => x.dataset === d.dataset)) derived.push(d);
    if (OUTBOX_EVENTS[root.table] && !derived.some((d) => d.dataset === 'stream_events'))
      derived.push({
        dataset: 'stream_events',
        effect: 'deleted',
        note: `the live stream's outbox forgets the events of the deleted ${root.table}`,
      });
    if (root.table === 'messages')
      derived.push({
        dataset: 'conversations',
        effect: 'recomputed',
        note: 'the conversation stays; its message counts and average AI confidence are recomputed from the messages that remain',
      });
  }
  for (const s of stores) if (s.retained && !s.retain_reason) s.retain_reason = HOLD_REASON;
  const files = await storedFiles(database, tenantId, selection, map);
  if (files.length)
    stores.push(
      heldAny
        ? {
            ...emptyCounts('export_files', 'object_store'),
            retained: files.length,
            retain_reason: HOLD_REASON,
          }
        : { ...emptyCounts('export_files', 'object_store'), deleted: files.length },
    );
  return {
    target: selection.target,
    id: selection.id,
    filters: selection.filters,
    stores,
    derived,
    files,
    holds: await holdsOver(database, tenantId, selection, guard, map),
  };
}

// ---------------------------------------------------------------------------------------
// The record, the job and its batches.

interface DeletionRow {
  id: string;
  tenant_id: string;
  target: DeletionTarget;
  target_id: string | null;
  filters: Record<string, string> | string;
  status: Deletion['status'];
  plan: DeletionPlan | string;
  progress: Deletion['progress'] | string;
  selected: number | null;
  done: number | string;
  error: string | null;
  actor: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

const parsed = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);

async function loadRow(db: Kysely<DB> | Transaction<DB>, tenantId: string, id: string) {
  if (!UUID.test(id)) return null;
  const r =
    await sql<DeletionRow>`SELECT * FROM deletions WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(db);
  return r.rows[0] ?? null;
}

async function present(database: Database, row: DeletionRow): Promise<Deletion> {
  const receipt = await sql<{ id: string }>`
    SELECT id FROM dsar_receipts WHERE tenant_id = ${row.tenant_id} AND request_id = ${`deletion:${row.id}`}`.execute(
    database.db,
  );
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    target: row.target,
    target_id: row.target_id,
    filters: parsed(row.filters),
    status: row.status,
    plan: parsed(row.plan),
    progress: {
      ...({ stores: [], files: [], held: 0 } as Deletion['progress']),
      ...(parsed(row.progress) as Partial<Deletion['progress']>),
    },
    selected: row.selected === null ? null : Number(row.selected),
    done: Number(row.done),
    receipt_id: receipt.rows[0]?.id ?? null,
    error: row.error,
    actor: row.actor,
    created_at: new Date(row.created_at).toISOString(),
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
  };
}

/** One deletion of the tenant; `not_found` for another tenant's or a made-up id. */
export async function getDeletion(database: Database, tenantId: string, id: string): Promise<Deletion> {
  const row = await loadRow(database.db, tenantId, id);
  if (!row) throw new FerryError('not_found', `no deletion ${id}`);
  return present(database, row);
}

/** The tenant's latest deletions, newest first. */
export async function listDeletions(database: Database, tenantId: string, limit = 50): Promise<Deletion[]> {
  const r = await sql<DeletionRow>`SELECT * FROM deletions WHERE tenant_id = ${tenantId}
    ORDER BY created_at DESC, id DESC LIMIT ${limit}`.execute(database.db);
  return Promise.all(r.rows.map((row) => present(database, row)));
}

/** Records a deletion (status `pending`) with the plan it is confirmed with; the caller runs it or hands it to the job. */
export async function createDeletion(
  database: Database,
  tenantId: string,
  input: DeletionInput,
  actor: string,
  options: { map?: DataMap; now?: () => Date } = {},
): Promise<Deletion> {
  const map = options.map ?? REFERENCE_DATAMAP;
  const selection = await selectionOf(database, tenantId, input, map);
  const plan = await planOf(database, tenantId, selection, map);
  const id = randomUUID();
  const now = (options.now ?? (() => new Date()))();
  await sql`INSERT INTO deletions (id, tenant_id, target, target_id, filters, status, plan, progress, actor, created_at)
    VALUES (${id}, ${tenantId}, ${selection.target}, ${selection.id}, ${JSON.stringify({
      ...selection.filters,
      ...(input.timezone ? { timezone: input.timezone } : {}),
    })}::jsonb, 'pending', ${JSON.stringify(plan)}::jsonb, '{}'::jsonb, ${actor}, ${now})`.execute(
    database.db,
  );
  return getDeletion(database, tenantId, id);
}

function inputOf(row: DeletionRow): DeletionInput {
  const { timezone, ...filters } = parsed(row.filters) as Record<string, string>;
  return {
    target: row.target,
    ...(row.target_id ? { id: row.target_id } : {}),
    ...(row.target === 'conversations' ? { filters } : {}),
    ...(timezone ? { timezone } : {}),
  };
}

async function saveProgress(
  trx: Kysely<DB> | Transaction<DB>,
  id: string,
  progress: Deletion['progress'],
  done: number,
) {
  await sql`UPDATE deletions SET progress = ${JSON.stringify(progress)}::jsonb, done = ${done} WHERE id = ${id}`.execute(
    trx,
  );
}

/**
 * Runs (or resumes) a deletion: chooses its rows once, deletes them in batches (each batch a
 * transaction with its counts), removes the stored export files that may hold them, then in
 * one transaction marks it completed, writes the erasure ledger entry, the audit event and
 * the signed receipt; then announces `data.deleted`. Running a completed deletion again
 * returns it unchanged.
 */
export async function runDeletion(deps: DeletionDeps, tenantId: string, id: string): Promise<Deletion> {
  const { database } = deps;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const clock = deps.now ?? (() => new Date());
  let row = await loadRow(database.db, tenantId, id);
  if (!row) throw new FerryError('not_found', `no deletion ${id}`);
  if (row.status === 'completed') return present(database, row);
  const batch = Math.max(1, deps.batchRows ?? DEFAULT_DELETION_BATCH);
  await sql`UPDATE deletions SET status = 'running', error = NULL, started_at = coalesce(started_at, ${clock()})
    WHERE id = ${id}`.execute(database.db);
  try {
    if (row.selected === null) {
      const selection = await selectionOf(database, tenantId, inputOf(row), map);
      await database.db.transaction().execute(async (trx) => {
        for (const root of selection.roots)
          await sql`${sql.raw(`INSERT INTO deletion_rows (deletion_id, tenant_id, dataset, row_id)
            SELECT ${literal(id)}, t.tenant_id, ${literal(root.table)}, t.id FROM ${root.table} t
            WHERE t.tenant_id = ${literal(tenantId)} AND t.id IN (${root.ids}) ON CONFLICT DO NOTHING`)}`.execute(
            trx,
          );
        // The stored export files that may hold the rows, found while the rows still exist.
        const files = await storedFiles({ ...database, db: trx } as Database, tenantId, selection, map);
        await sql`UPDATE deletions SET selected = (SELECT count(*) FROM deletion_rows WHERE deletion_id = ${id}),
          progress = ${JSON.stringify({ stores: [], files, held: 0 })}::jsonb
          WHERE id = ${id}`.execute(trx);
      });
      row = (await loadRow(database.db, tenantId, id))!;
    }
    const current = await present(database, row);
    const progress = current.progress;
    let done = current.done;
    for (const table of rootTables(row.target)) {
      const deps2 = await dependents(database, table, map);
      for (;;) {
        const n = await database.db.transaction().execute(async (trx) => {
          // A hold placed after the deletion started wins too: the guard is read per batch.
          const guard = await holdGuard({ ...database, db: trx } as Database, tenantId, map);
          const ids = (
            await sql<{ id: string }>`SELECT row_id::text AS id FROM deletion_rows
              WHERE deletion_id = ${id} AND dataset = ${table} AND state = 'pending'
              ORDER BY row_id LIMIT ${batch}`.execute(trx)
          ).rows.map((r) => r.id);
          if (!ids.length) return 0;
          const list = ids.map((x) => literal(x)).join(', ');
          const { free } = rootConditions({ table, ids: list }, tenantId, guard);
          const free_ids = (
            await sql<{
              id: string;
            }>`${sql.raw(`SELECT t.id::text AS id FROM ${table} t WHERE ${free}`)}`.execute(trx)
          ).rows.map((r) => r.id);
          const freeList = free_ids.map((x) => literal(x)).join(', ');
          const held = new Set(ids);
          for (const x of free_ids) held.delete(x);
          // Rows gone already (by another path) count as done, not as held.
          const existing = (
            await sql<{ id: string }>`${sql.raw(
              `SELECT t.id::text AS id FROM ${table} t WHERE t.tenant_id = ${literal(tenantId)} AND t.id IN (${list})`,
            )}`.execute(trx)
          ).rows.map((r) => r.id);
          const heldIds = [...held].filter((x) => existing.includes(x));
          if (free_ids.length) {
            const counts = await deleteRows(trx, tenantId, table, freeList, deps2, map);
            for (const [dataset, c] of Object.entries(counts.deleted))
              add(progress.stores, dataset, 'deleted', c);
            for (const [dataset, c] of Object.entries(counts.cleared))
              add(progress.stores, dataset, 'scrubbed', c);
          }
          if (heldIds.length) {
            add(progress.stores, table, 'retained', heldIds.length);
            const entry = progress.stores.find((s) => s.dataset === table)!;
            entry.retain_reason = HOLD_REASON;
            progress.held += heldIds.length;
            await sql`${sql.raw(`UPDATE deletion_rows SET state = 'held' WHERE deletion_id = ${literal(id)}
              AND dataset = ${literal(table)} AND row_id IN (${heldIds.map((x) => literal(x)).join(', ')})`)}`.execute(
              trx,
            );
          }
          await sql`${sql.raw(`UPDATE deletion_rows SET state = 'deleted' WHERE deletion_id = ${literal(id)}
            AND dataset = ${literal(table)} AND state = 'pending' AND row_id IN (${list})`)}`.execute(trx);
          done += ids.length;
          await saveProgress(trx, id, progress, done);
          return ids.length;
        });
        if (!n) break;
        await deps.afterBatch?.(done);
      }
    }
    // Stored export files that may hold the rows go with them, unless a hold keeps some of the rows.
    const now = clock();
    progress.stores = progress.stores.filter((s) => s.store !== 'object_store');
    if (progress.files.length) {
      if (progress.held === 0) {
        const jobs = exportJobs(database);
        for (const exportId of new Set(progress.files.map((f) => f.export_id))) {
          await removeLeftovers(deps.store as ObjectStore, exportPrefix(tenantId, exportId));
          await jobs.expire(exportId, now);
        }
        progress.stores.push({
          ...emptyCounts('export_files', 'object_store'),
          deleted: progress.files.length,
        });
      } else
        progress.stores.push({
          ...emptyCounts('export_files', 'object_store'),
          retained: progress.files.length,
          retain_reason: HOLD_REASON,
        });
    }
    await saveProgress(database.db, id, progress, done);
    return await complete(deps, row, progress, now);
  } catch (err) {
    await sql`UPDATE deletions SET status = 'failed', error = ${(err as Error).message.slice(0, 2000)}
      WHERE id = ${id} AND status <> 'completed'`.execute(database.db);
    throw err;
  }
}

/** Deletes rows of a root table (ids listed), counting what went with them and the references cleared. */
async function deleteRows(
  trx: Transaction<DB>,
  tenantId: string,
  table: string,
  list: string,
  deps: Awaited<ReturnType<typeof dependents>>,
  map: DataMap,
): Promise<{ deleted: Record<string, number>; cleared: Record<string, number> }> {
  const deleted: Record<string, number> = {};
  const cleared: Record<string, number> = {};
  const tenant = literal(tenantId);
  for (const dep of deps) {
    const decl = map.tables[dep.table]!;
    if (dep.array) {
      const r = await sql`${sql.raw(`UPDATE ${dep.table} c SET ${dep.column} = ARRAY(
          SELECT x FROM unnest(c.${dep.column}) WITH ORDINALITY AS u(x, n) WHERE x NOT IN (${list}) ORDER BY n)
        WHERE c.${decl.tenantKey} = ${tenant} AND c.${dep.column} && ARRAY[${list}]::uuid[]`)}`.execute(trx);
      cleared[dep.table] = (cleared[dep.table] ?? 0) + Number(r.numAffectedRows ?? 0);
      continue;
    }
    const n = await count(
      trx,
      `SELECT count(*) AS n FROM ${dep.table} c WHERE c.${decl.tenantKey} = ${tenant} AND c.${dep.column} IN (${list})`,
    );
    if (!n) continue;
    if (dep.effect === 'deleted') {
      // Explicit, not left to the cascade: the count is exact and the order is the data map's.
      await sql`${sql.raw(`DELETE FROM ${dep.table} c WHERE c.${decl.tenantKey} = ${tenant} AND c.${dep.column} IN (${list})`)}`.execute(
        trx,
      );
      deleted[dep.table] = (deleted[dep.table] ?? 0) + n;
    } else {
      await sql`${sql.raw(`UPDATE ${dep.table} c SET ${dep.column} = NULL WHERE c.${decl.tenantKey} = ${tenant} AND c.${dep.column} IN (${list})`)}`.execute(
        trx,
      );
      cleared[dep.table] = (cleared[dep.table] ?? 0) + n;
    }
  }
  // Single messages: their conversations stay, with the counts that sum up their messages recomputed.
  const conversations =
    table === 'messages'
      ? `SELECT DISTINCT t.conversation_id FROM messages t WHERE t.tenant_id = ${tenant} AND t.id IN (${list})`
      : null;
  const touched = conversations
    ? (
        await sql<{
          id: string;
        }>`${sql.raw(`SELECT x.conversation_id::text AS id FROM (${conversations}) x`)}`.execute(trx)
      ).rows.map((x) => literal(x.id))
    : [];
  const r =
    await sql`${sql.raw(`DELETE FROM ${table} t WHERE t.tenant_id = ${tenant} AND t.id IN (${list})`)}`.execute(
      trx,
    );
  deleted[table] = (deleted[table] ?? 0) + Number(r.numAffectedRows ?? 0);
  // The live stream's outbox (Ferry's own table, not a dataset) forgets the deleted rows' events.
  const outbox = OUTBOX_EVENTS[table];
  if (outbox)
    await sql`${sql.raw(`DELETE FROM stream_events e WHERE e.tenant_id = ${tenant} AND ${outbox(list)}`)}`.execute(
      trx,
    );
  if (touched.length)
    await sql`${sql.raw(`UPDATE conversations c SET ${CONVERSATION_FROM_MESSAGES}, last_updated = now()
      WHERE c.tenant_id = ${tenant} AND c.id IN (${touched.join(', ')})`)}`.execute(trx);
  return { deleted, cleared };
}

/** The keyed hash a deletion's ledger entry and receipt carry: it names the deletion, never a person. */
export function deletionKey(secretKey: string, tenantId: string, id: string): string {
  return subjectKey(secretKey, tenantId, `deletion:${id}`);
}

async function complete(
  deps: DeletionDeps,
  row: DeletionRow,
  progress: Deletion['progress'],
  now: Date,
): Promise<Deletion> {
  const { database } = deps;
  const plan = parsed(row.plan);
  const key = deletionKey(deps.secretKey, row.tenant_id, row.id);
  const stores = progress.stores.map((s) => ({ ...s }));
  const total = stores.reduce((n, s) => n + s.deleted, 0);
  const datasets = [...new Set(stores.filter((s) => s.store === 'database').map((s) => s.dataset))];
  const holds = progress.held ? plan.holds : [];
  await deps.secrets.ready();
  await database.db.transaction().execute(async (trx) => {
    const locked = await sql<{
      status: string;
    }>`SELECT status FROM deletions WHERE id = ${row.id} FOR UPDATE`.execute(trx);
    if (locked.rows[0]?.status === 'completed') return;
    await sql`UPDATE deletions SET status = 'completed', finished_at = ${now} WHERE id = ${row.id}`.execute(
      trx,
    );
    await sql`INSERT INTO erasure_ledger (id, tenant_id, request_id, subject_key, datasets, erased_at)
      VALUES (${randomUUID()}, ${row.tenant_id}, ${row.id}, ${key}, ${sql.raw(
        datasets.length ? `ARRAY[${datasets.map((d) => literal(d)).join(', ')}]::text[]` : `'{}'::text[]`,
      )}, ${now}) ON CONFLICT (request_id) DO NOTHING`.execute(trx);
    await trx.executeQuery(
      auditInsert(database, {
        tenantId: row.tenant_id,
        actor: row.actor,
        action: 'data.deleted',
        targetId: row.id,
        dataType: row.target,
        recordCount: total,
        success: true,
        error:
          stores
            .filter((s) => s.deleted || s.scrubbed || s.retained)
            .map(
              (s) =>
                `${s.dataset}: ${[s.deleted && `${s.deleted} deleted`, s.scrubbed && `${s.scrubbed} references removed`, s.retained && `${s.retained} kept`].filter(Boolean).join(', ')}`,
            )
            .join('; ')
            .slice(0, 2000) || 'nothing to delete',
        occurredAt: now,
      }).compile(),
    );
    await issueReceiptInTransaction(trx, deps.secrets, {
      request_id: `deletion:${row.id}`,
      tenant_id: row.tenant_id,
      type: 'deletion',
      regulation: 'gdpr',
      subject_key: key,
      received_at: new Date(row.created_at).toISOString(),
      verified_at: null,
      completed_at: now.toISOString(),
      stores,
      files: { deleted: progress.held ? [] : progress.files, out_of_reach: [] },
      processors_notified: [],
      holds,
      backup_expiry: null,
    });
  });
  const result = await getDeletion(database, row.tenant_id, row.id);
  await emitEvent(database, row.tenant_id, 'data.deleted', {
    data: {
      deletion_id: row.id,
      target: row.target,
      target_id: row.target_id,
      datasets: stores
        .filter((s) => s.deleted || s.scrubbed || s.retained)
        .map((s) => ({
          dataset: s.dataset,
          deleted: s.deleted,
          references_removed: s.scrubbed,
          kept: s.retained,
        })),
      receipt_id: result.receipt_id,
    },
  });
  return result;
}

/**
 * Deletes again, inside a restore's transaction, the rows of every completed deletion of the
 * source tenant that the restored data brought back (docs/deletion.md#restores). `mapId`
 * turns a stored id into the restored one (a sandbox's ids are mapped). Legal holds apply.
 * Returns, per deletion, the rows deleted again per table.
 */
export async function redeleteInTransaction(
  db: Kysely<DB>,
  sourceTenantId: string,
  targetTenantId: string,
  mapId: (column: string) => string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<
  { deletion_id: string; subject_key: string; erased_at: string; tables: Record<string, number> }[]
> {
  const entries = await sql<{ id: string; subject_key: string; erased_at: Date }>`
    SELECT d.id, l.subject_key, l.erased_at FROM deletions d JOIN erasure_ledger l ON l.request_id = d.id
    WHERE d.tenant_id = ${sourceTenantId} AND d.status = 'completed' ORDER BY l.erased_at, d.id`.execute(db);
  if (!entries.rows.length) return [];
  const database = { db } as Database;
  const guard = await holdGuard(database, targetTenantId, map);
  const out: {
    deletion_id: string;
    subject_key: string;
    erased_at: string;
    tables: Record<string, number>;
  }[] = [];
  for (const entry of entries.rows) {
    const tables: Record<string, number> = {};
    for (const table of ['conversations', 'messages', 'customers', 'documents']) {
      const ids = `SELECT ${mapId('r.row_id')} FROM deletion_rows r WHERE r.deletion_id = ${literal(entry.id)} AND r.dataset = ${literal(table)} AND r.state = 'deleted'`;
      const { free } = rootConditions({ table, ids }, targetTenantId, guard);
      const found = (
        await sql<{
          id: string;
        }>`${sql.raw(`SELECT t.id::text AS id FROM ${table} t WHERE ${free}`)}`.execute(db)
      ).rows.map((r) => r.id);
      if (!found.length) continue;
      const counts = await deleteRows(
        db as Transaction<DB>,
        targetTenantId,
        table,
        found.map((x) => literal(x)).join(', '),
        await dependents(database, table, map),
        map,
      );
      for (const [t, n] of Object.entries({ ...counts.deleted }))
        tables[t] = (tables[t] ?? 0) + n + (counts.cleared[t] ?? 0);
    }
    if (Object.keys(tables).length)
      out.push({
        deletion_id: entry.id,
        subject_key: entry.subject_key,
        erased_at: new Date(entry.erased_at).toISOString(),
        tables,
      });
  }
  return out;
}
