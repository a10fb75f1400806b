import { randomUUID } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import { type Database, literal } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, SubjectLink, TableDeclaration } from '../datamap/types.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { exportPrefix, removeLeftovers } from '../export-requests/export-job.ts';
import { exportJobs } from '../export-requests/repository.ts';
import { exportDb } from '../export-requests/tables.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { type HoldGuard, holdGuard, notHeld } from './holds.ts';
import type { Mailer } from '../deliver/mailer.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import { notifyProcessors, PROCESSOR_CATEGORIES, type ProcessorNotice } from './processors.ts';
import { mentionCondition, type ResolvedSubject, scrubColumns, subjectRowCondition } from './subject.ts';
import { subjectKey } from './subject-key.ts';
import { dsarDb } from './tables.ts';

/**
 * Erasure of a data subject (docs/erasure.md): planned first, then executed one store at a
 * time — the database in one transaction, then the object store — each store's outcome
 * recorded with its changes so a repeated run reports the first run's totals instead of
 * erasing twice. The data map says what happens to each table (`erasure`); this module
 * names no table of its own except through it.
 */

/** Per store and table: what erasure did (or, in a plan, would do). */
export interface StoreCounts {
  store: 'database' | 'object_store';
  dataset: string;
  deleted: number;
  anonymized: number;
  scrubbed: number;
  retained: number;
  retain_reason: string | null;
}

export interface ErasedFiles {
  deleted: { export_id: string; file: string }[];
  out_of_reach: { export_id: string; where: string; when: string }[];
}

export interface ErasureOutcome {
  stores: StoreCounts[];
  files: ErasedFiles;
  processors_notified: {
    processor: string;
    channel: string;
    notified_at: string;
    acknowledged_at: string | null;
  }[];
  holds: { hold_id: string; reason: string; datasets: string[] }[];
  backup_expiry: string | null;
  /** Every processor notice of the request: sent, failed, or pending with manual instructions. */
  processor_notices?: ProcessorNotice[];
  /** The tables that held the subject (for the erasure ledger). */
  datasets: string[];
}

export interface ErasurePlan extends ErasureOutcome {
  readonly dry_run: true;
  /** Per table and column, what the erasure does to the subject's rows. */
  readonly columns: { table: string; column: string; action: 'delete' | 'clear' | 'scrub' | 'keep' }[];
}

export interface ErasureDeps {
  readonly database: Database;
  readonly store: Pick<ObjectStore, 'delete' | 'list'> & Partial<ObjectStore>;
  readonly secretKey: string;
  readonly now?: () => Date;
  readonly map?: DataMap;
  /** Called between the stores (tests stop a run there to prove it resumes). */
  readonly between?: (store: 'database' | 'object_store') => Promise<void>;
  /** Sends the deletion notices of processors reached by email. */
  readonly mailer?: Mailer | undefined;
  /** The outbound rules webhook notices to processors follow (default: public hosts only). */
  readonly outbound?: OutboundPolicy | undefined;
}

export interface ColumnInfo {
  nullable: boolean;
  type: string;
  default: string | null;
}

/** Nullability, type and default of every column of the current schema, by `table.column`. */
export async function columnInfo(db: Kysely<DB>): Promise<Map<string, ColumnInfo>> {
  const result = await sql<{ t: string; c: string; nullable: string; type: string; def: string | null }>`
    SELECT table_name AS t, column_name AS c, is_nullable AS nullable, data_type AS type, column_default AS def
    FROM information_schema.columns WHERE table_schema = current_schema()`.execute(db);
  return new Map(
    result.rows.map((r) => [
      `${r.t}.${r.c}`,
      { nullable: r.nullable === 'YES', type: r.type, default: r.def },
    ]),
  );
}

const KINDS: readonly SubjectLink['subject'][] = ['customer', 'team_member'];

/** The subject kinds a table's rows describe: those of the link on its first linked column. */
function primaryKinds(table: TableDeclaration): Set<SubjectLink['subject']> {
  const first = table.subjectLinks[0];
  if (!first) return new Set();
  return new Set(table.subjectLinks.filter((l) => l.column === first.column).map((l) => l.subject));
}

/** What clearing a column writes: NULL, or a neutral value when the column may not be empty. */
export function clearedValue(
  table: string,
  column: string,
  decl: TableDeclaration,
  info: Map<string, ColumnInfo>,
): string {
  const c = info.get(`${table}.${column}`);
  if (!c || c.nullable) return 'NULL';
  if (c.type === 'jsonb' || c.type === 'json')
    return c.default?.includes('[]') ? `'[]'::jsonb` : `'{}'::jsonb`;
  if (c.type === 'ARRAY') return `'{}'`;
  if (decl.columns[column]?.pii === 'email')
    return `'erased+' || t.${decl.primaryKey[0] ?? 'id'} || '@invalid.invalid'`;
  if (decl.columns[column]?.class === 'free_text') return `''`;
  return `'[erased]'`;
}

/** The columns anonymization clears in a row describing the subject (its own links stay out). */
export function personalColumns(decl: TableDeclaration): string[] {
  const key = decl.primaryKey[0] ?? 'id';
  return Object.entries(decl.columns)
    .filter(([name, c]) => {
      if (name === key || name === decl.tenantKey) return false;
      if (['contact', 'network', 'location', 'free_text', 'secret'].includes(c.class)) return true;
      return c.pii === 'session' || c.pii === 'person_id';
    })
    .map(([name]) => name);
}

/** Link columns of one kind (besides the primary key), which a row that merely refers to the subject loses. */
function linkColumns(decl: TableDeclaration, kind: SubjectLink['subject']): string[] {
  const key = decl.primaryKey[0] ?? 'id';
  return decl.subjectLinks
    .filter((l) => l.subject === kind && l.by !== 'parent' && l.column !== key)
    .map((l) => l.column);
}

const textArray = (values: readonly string[]) =>
  values.length ? `ARRAY[${values.map((v) => literal(v)).join(', ')}]::text[]` : `'{}'::text[]`;

function eraseTextSql(expr: string, type: string | undefined, subject: ResolvedSubject): string {
  const args = `${textArray(subject.emails)}, ${textArray(subject.phones)}, ${textArray(subject.names)}`;
  if (type === 'jsonb' || type === 'json') return `ferry_erase_text((${expr})::text, ${args})::${type}`;
  if (type === 'ARRAY') return `ferry_erase_text((${expr})::text, ${args})::text[]`;
  return `ferry_erase_text(${expr}, ${args})`;
}

/**
 * Tables with parent links first (their rows are found through parents that erasure is
 * about to change), tables whose rows are deleted last (deleting a row clears or removes
 * the references to it, so the rows that refer to it must be dealt with before).
 */
function inOrder(map: DataMap): [string, TableDeclaration][] {
  const entries = Object.entries(map.tables).filter(([, t]) => t.tenantKey);
  const deleted = new Set(entries.filter(([, t]) => t.erasure.action === 'delete').map(([name]) => name));
  // A deleted table that refers to another deleted one goes before it (consent records before their customer).
  const refersToDeleted = (t: TableDeclaration) =>
    t.relations.some((r) => deleted.has(r.references.split('.')[0]!));
  const rank = (t: TableDeclaration) =>
    (t.subjectLinks.some((l) => l.by === 'parent') ? 0 : 1) +
    (t.erasure.action === 'delete' ? (refersToDeleted(t) ? 2 : 4) : 0);
  return entries.sort((a, b) => rank(a[1]) - rank(b[1]));
}

interface Statement {
  table: string;
  kind: 'delete' | 'anonymize' | 'retain' | 'scrub' | 'scrub_delete' | 'hold';
  count: string;
  run: string;
}

/** Every statement the database part of the erasure runs, with the count query that plans it. */
function databaseStatements(
  tenantId: string,
  subject: ResolvedSubject,
  map: DataMap,
  info: Map<string, ColumnInfo>,
  guard: HoldGuard,
): { statements: Statement[]; columns: ErasurePlan['columns'] } {
  const statements: Statement[] = [];
  const columns: ErasurePlan['columns'] = [];
  for (const [table, decl] of inOrder(map)) {
    const tenant = `t.${decl.tenantKey} = ${literal(tenantId)}`;
    const primary = primaryKinds(decl);
    // Rows deleted or anonymized as the subject's own: their text is already gone, not scrubbed.
    const covered: string[] = [];
    // Rows a legal hold keeps stay as they are; a row they refer to is not deleted either.
    const held = guard.held(table, 't');
    const keptRows = guard.protectedRows(table, 't');
    for (const kind of KINDS) {
      const condition = subjectRowCondition(table, subject, 't', map, kind);
      if (!condition) continue;
      const action = primary.has(kind) ? decl.erasure.action : 'refer';
      const guardCondition = action === 'delete' ? keptRows : held;
      if (guardCondition && action !== 'retain')
        statements.push({
          table,
          kind: 'hold',
          count: `SELECT count(*)::int AS n FROM ${table} t WHERE ${tenant} AND (${condition}) AND coalesce((${guardCondition}), false)`,
          run: '',
        });
      const where = `${tenant} AND (${condition})${notHeld(guardCondition)}`;
      const count = `SELECT count(*)::int AS n FROM ${table} t WHERE ${where}`;
      if (action === 'delete' || action === 'anonymize') covered.push(condition);
      if (action === 'delete') {
        statements.push({ table, kind: 'delete', count, run: `DELETE FROM ${table} t WHERE ${where}` });
        columns.push({ table, column: '*', action: 'delete' });
      } else if (action === 'anonymize' || action === 'refer') {
        const cleared = action === 'anonymize' ? personalColumns(decl) : linkColumns(decl, kind);
        const settable = cleared.filter((c) => {
          const i = info.get(`${table}.${c}`);
          // A NOT NULL identifier cannot be cleared without breaking the row's references.
          return i && !(decl.columns[c]?.class === 'identifier' && !i.nullable);
        });
        if (!settable.length) continue;
        const set = settable.map((c) => `${c} = ${clearedValue(table, c, decl, info)}`).join(', ');
        statements.push({
          table,
          kind: 'anonymize',
          count,
          run: `UPDATE ${table} t SET ${set} WHERE ${where}`,
        });
        for (const c of settable) columns.push({ table, column: c, action: 'clear' });
      } else {
        statements.push({ table, kind: 'retain', count, run: '' });
        columns.push({ table, column: '*', action: 'keep' });
      }
    }
    for (const column of scrubColumns(decl)) {
      const mention = mentionCondition(`t.${column}::text`, subject);
      if (!mention) continue;
      const own = covered.length
        ? ` AND NOT coalesce(${covered.map((c) => `(${c})`).join(' OR ')}, false)`
        : '';
      const where = `${tenant} AND (${mention})${own}${notHeld(decl.erasure.onScrub === 'delete' ? keptRows : held)}`;
      const count = `SELECT count(*)::int AS n FROM ${table} t WHERE ${where}`;
      const type = info.get(`${table}.${column}`)?.type;
      if (decl.erasure.onScrub === 'delete') {
        statements.push({ table, kind: 'scrub_delete', count, run: `DELETE FROM ${table} t WHERE ${where}` });
        columns.push({ table, column, action: 'delete' });
      } else {
        statements.push({
          table,
          kind: 'scrub',
          count,
          run: `UPDATE ${table} t SET ${column} = ${eraseTextSql(`t.${column}`, type, subject)} WHERE ${where}`,
        });
        columns.push({ table, column, action: 'scrub' });
      }
    }
  }
  return { statements, columns };
}

/**
 * Ferry's own text that may repeat what a person wrote or was sent: webhook payloads and
 * their attempts' answers, the live-stream outbox, delivery errors. They are not data-map
 * datasets, so they are listed here; the audit trail is in the map.
 */
const OWN_TEXT: readonly { table: string; columns: readonly string[] }[] = [
  { table: 'webhook_messages', columns: ['payload', 'last_error'] },
  { table: 'webhook_attempts', columns: ['error', 'response_excerpt'] },
  { table: 'stream_events', columns: ['data'] },
  { table: 'deliveries', columns: ['error'] },
];

function ownTextStatements(
  tenantId: string,
  subject: ResolvedSubject,
  info: Map<string, ColumnInfo>,
): Statement[] {
  const out: Statement[] = [];
  for (const { table, columns } of OWN_TEXT) {
    for (const column of columns) {
      const c = info.get(`${table}.${column}`);
      if (!c) continue;
      const tenantColumn = info.has(`${table}.tenant_id`) ? 'tenant_id' : null;
      const mention = mentionCondition(`t.${column}::text`, subject);
      if (!mention) continue;
      const scope = tenantColumn
        ? `t.tenant_id = ${literal(tenantId)}`
        : // Attempts belong to a message of the tenant.
          `t.message_id IN (SELECT m.id FROM webhook_messages m WHERE m.tenant_id = ${literal(tenantId)})`;
      const where = `${scope} AND (${mention})`;
      out.push({
        table,
        kind: 'scrub',
        count: `SELECT count(*)::int AS n FROM ${table} t WHERE ${where}`,
        run: `UPDATE ${table} t SET ${column} = ${eraseTextSql(`t.${column}`, c.type, subject)} WHERE ${where}`,
      });
    }
  }
  return out;
}

const HOLD_REASON = 'kept under a legal hold';

function emptyCounts(table: string, store: StoreCounts['store'], decl?: TableDeclaration): StoreCounts {
  return {
    store,
    dataset: table,
    deleted: 0,
    anonymized: 0,
    scrubbed: 0,
    retained: 0,
    retain_reason: decl?.erasure.action === 'retain' ? (decl.erasure.basis ?? null) : null,
  };
}

function tally(map: DataMap, results: { statement: Statement; n: number }[]): StoreCounts[] {
  const byTable = new Map<string, StoreCounts>();
  for (const { statement, n } of results) {
    if (n === 0) continue;
    const entry =
      byTable.get(statement.table) ?? emptyCounts(statement.table, 'database', map.tables[statement.table]);
    byTable.set(statement.table, entry);
    if (statement.kind === 'delete' || statement.kind === 'scrub_delete') entry.deleted += n;
    else if (statement.kind === 'anonymize') entry.anonymized += n;
    else if (statement.kind === 'scrub') entry.scrubbed += n;
    else {
      entry.retained += n;
      if (statement.kind === 'hold')
        entry.retain_reason = entry.retain_reason ? `${entry.retain_reason}; ${HOLD_REASON}` : HOLD_REASON;
    }
  }
  return [...byTable.values()];
}

/** Levels that keep identifiers in a file (the anonymized levels remove them). */
const IDENTIFYING_LEVELS = new Set(['full', 'basic']);

interface FileCandidate {
  exportId: string;
  files: string[];
}

/**
 * Stored export files that may hold the subject: completed exports of the tenant still
 * kept, at a level that keeps identifiers, of datasets that link subjects, whose scope
 * covers them. The rule is deliberately wide: a file is removed when it may hold them.
 */
async function fileCandidates(
  database: Database,
  tenantId: string,
  subject: ResolvedSubject,
  map: DataMap,
  secretKey: string | undefined,
): Promise<FileCandidate[]> {
  const db = exportDb(database);
  const rows = await db
    .selectFrom('export_requests')
    .select(['id', 'config', 'datasets'])
    .where('tenant_id', '=', tenantId)
    .where('status', '=', 'completed')
    .where('files_deleted_at', 'is', null)
    .execute();
  const linking = new Set(
    Object.values(map.datasets)
      .filter((d) => map.tables[d.source]?.subjectLinks.length || d.kind !== 'table')
      .map((d) => d.name),
  );
  // Another person's access package holds only that person's rows: it stays. A package is
  // this subject's when its request's keyed hash is one of the subject's identifiers'.
  const ownKeys = secretKey
    ? new Set(
        [
          ...subject.emails.map((e) => `email:${e}`),
          ...subject.phones.map((p) => `phone:${p}`),
          ...subject.customerIds.map((c) => `customer:${c}`),
          ...subject.teamMemberIds.map((t) => `team_member:${t}`),
        ].map((identifier) => subjectKey(secretKey, tenantId, identifier)),
      )
    : null;
  const packageRequests = rows
    .map((r) => (r.config as ExportConfig).subject_request)
    .filter((id): id is string => Boolean(id));
  const requestKeys = new Map<string, string>();
  if (ownKeys && packageRequests.length) {
    const found = await dsarDb(database)
      .selectFrom('dsar_requests')
      .select(['id', 'subject_key'])
      .where('tenant_id', '=', tenantId)
      .where('id', 'in', packageRequests)
      .execute();
    for (const r of found) requestKeys.set(r.id, r.subject_key);
  }
  const out: FileCandidate[] = [];
  for (const row of rows) {
    const config = row.config as ExportConfig;
    if (!IDENTIFYING_LEVELS.has(config.pii)) continue;
    if (ownKeys && config.subject_request) {
      const key = requestKeys.get(config.subject_request);
      if (key !== undefined && !ownKeys.has(key)) continue;
    }
    const datasets = row.datasets.length ? row.datasets : Object.keys(map.datasets);
    if (config.package === 'none' && !datasets.some((d) => linking.has(d))) continue;
    const scope = config.scope;
    if (scope.kind === 'customer' && !subject.customerIds.includes(scope.customer_id)) continue;
    if (scope.kind === 'team_member' && !subject.teamMemberIds.includes(scope.team_member_id)) continue;
    const files = await db
      .selectFrom('export_files')
      .select('name')
      .where('export_id', '=', row.id)
      .execute();
    out.push({ exportId: row.id, files: files.map((f) => f.name) });
  }
  return out;
}

/** Where the copies of a file went that Ferry cannot reach: deliveries and downloads. */
async function outOfReach(database: Database, tenantId: string, exportIds: readonly string[]) {
  if (!exportIds.length) return [];
  const list = exportIds.map((id) => literal(id)).join(', ');
  const delivered = await sql<{ export_id: string; where: string; at: Date }>`
    SELECT export_id, target_type || ': ' || target_label AS "where", created_at AS at FROM deliveries
    WHERE tenant_id = ${tenantId} AND status = 'delivered' AND export_id IN (${sql.raw(list)})`
    .execute(database.db)
    .catch(() => ({ rows: [] as { export_id: string; where: string; at: Date }[] }));
  const downloaded = await sql<{ export_id: string; where: string; at: Date }>`
    SELECT target_id AS export_id, 'downloaded by ' || actor AS "where", occurred_at AS at FROM audit_events
    WHERE tenant_id = ${tenantId} AND action = 'export.downloaded' AND target_id IN (${sql.raw(list)})`.execute(
    database.db,
  );
  return [...delivered.rows, ...downloaded.rows]
    .map((r) => ({ export_id: r.export_id, where: r.where, when: new Date(r.at).toISOString() }))
    .sort((a, b) => a.when.localeCompare(b.when));
}

/** The active holds that keep some of the subject's rows, with the tables where they do. */
async function holdsOf(
  database: Database | { db: Kysely<DB> },
  guard: HoldGuard,
  tenantId: string,
  subject: ResolvedSubject,
  map: DataMap,
): Promise<ErasureOutcome['holds']> {
  const out: ErasureOutcome['holds'] = [];
  for (const hold of guard.holds) {
    const datasets: string[] = [];
    for (const [table, decl] of Object.entries(map.tables)) {
      if (!decl.tenantKey) continue;
      const condition = subjectRowCondition(table, subject, 't', map);
      const held = guard.heldBy(hold, table, 't');
      if (!condition || !held) continue;
      const r = await sql<{ n: number }>`${sql.raw(
        `SELECT count(*)::int AS n FROM ${table} t WHERE t.${decl.tenantKey} = ${literal(tenantId)} AND (${condition}) AND (${held})`,
      )}`.execute(database.db);
      if (Number(r.rows[0]?.n ?? 0) > 0) datasets.push(table);
    }
    if (datasets.length) out.push({ hold_id: hold.id, reason: `${hold.matter}: ${hold.reason}`, datasets });
  }
  return out;
}

/** The notices that went out, as the receipt states them (pending and failed ones are on the request). */
function processorsOf(notices: readonly ProcessorNotice[]): ErasureOutcome['processors_notified'] {
  return notices
    .filter((n) => n.notified_at !== null)
    .map((n) => ({
      processor: n.processor,
      channel: n.channel,
      notified_at: n.notified_at!,
      acknowledged_at: n.acknowledged_at,
    }));
}

/** The data-map categories of the subject's data: the personal column classes of the tables that held them. */
function categoriesOf(map: DataMap, datasets: readonly string[]): string[] {
  const out = new Set<string>();
  for (const name of datasets)
    for (const c of Object.values(map.tables[name]?.columns ?? {}))
      if ((PROCESSOR_CATEGORIES as readonly string[]).includes(c.class)) out.add(c.class);
  return [...out];
}

/** `dry_run`: what erasing the subject would do, per table and column, without changing anything. */
export async function planErasure(
  database: Database,
  tenantId: string,
  subject: ResolvedSubject,
  options: { map?: DataMap; secretKey?: string } = {},
): Promise<ErasurePlan> {
  const map = options.map ?? REFERENCE_DATAMAP;
  const guard = await holdGuard(database, tenantId, map);
  const info = await columnInfo(database.db);
  const { statements, columns } = databaseStatements(tenantId, subject, map, info, guard);
  const own = ownTextStatements(tenantId, subject, info);
  const results: { statement: Statement; n: number }[] = [];
  for (const statement of [...statements, ...own]) {
    const r = await sql<{ n: number }>`${sql.raw(statement.count)}`.execute(database.db);
    results.push({ statement, n: Number(r.rows[0]?.n ?? 0) });
  }
  const candidates = await fileCandidates(database, tenantId, subject, map, options.secretKey);
  const holds = await holdsOf(database, guard, tenantId, subject, map);
  const stores = tally(map, results);
  const fileCount = candidates.reduce((n, c) => n + c.files.length, 0);
  // Stored files that copy held rows stay, as `executeErasure` keeps them.
  if (fileCount)
    stores.push(
      holds.length
        ? { ...emptyCounts('export_files', 'object_store'), retained: fileCount, retain_reason: HOLD_REASON }
        : { ...emptyCounts('export_files', 'object_store'), deleted: fileCount },
    );
  return {
    dry_run: true,
    stores,
    columns,
    files: {
      deleted: holds.length
        ? []
        : candidates.flatMap((c) => c.files.map((file) => ({ export_id: c.exportId, file }))),
      out_of_reach: await outOfReach(
        database,
        tenantId,
        candidates.map((c) => c.exportId),
      ),
    },
    processors_notified: [],
    holds,
    backup_expiry: null,
    datasets: stores.map((s) => s.dataset),
  };
}

/**
 * The database part of an erasure inside the caller's transaction, without its ledger entry
 * or audit event: how a restore erases again, before it commits, a subject the erasure
 * ledger names (docs/backup.md#erasure-replay). Legal holds apply as in `executeErasure`.
 */
export async function eraseRowsInTransaction(
  database: Database,
  tenantId: string,
  subject: ResolvedSubject,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<StoreCounts[]> {
  const guard = await holdGuard(database, tenantId, map);
  const info = await columnInfo(database.db);
  const { statements } = databaseStatements(tenantId, subject, map, info, guard);
  const results: { statement: Statement; n: number }[] = [];
  for (const statement of statements) {
    if (statement.kind === 'retain' || statement.kind === 'hold') {
      const r = await sql<{ n: number }>`${sql.raw(statement.count)}`.execute(database.db);
      results.push({ statement, n: Number(r.rows[0]?.n ?? 0) });
      continue;
    }
    const r = await sql`${sql.raw(statement.run)}`.execute(database.db);
    results.push({ statement, n: Number(r.numAffectedRows ?? 0) });
  }
  return tally(map, results);
}

interface StoredRun {
  outcome: Partial<ErasureOutcome>;
}

async function finishedRun(db: Kysely<DB>, requestId: string, store: string): Promise<StoredRun | null> {
  const r = await sql<{ outcome: Partial<ErasureOutcome> | string }>`
    SELECT outcome FROM erasure_runs WHERE request_id = ${requestId} AND store = ${store}`.execute(db);
  const row = r.rows[0];
  if (!row) return null;
  return { outcome: typeof row.outcome === 'string' ? JSON.parse(row.outcome) : row.outcome };
}

/**
 * Erases the subject: the database in one transaction (rows deleted, anonymized, retained
 * as the data map says; the subject's identifiers scrubbed from every other row's free
 * text and from Ferry's own logs; the erasure ledger entry; an audit event that names the
 * subject only by keyed hash), then the stored export files that may hold them. Each
 * store's outcome is saved with its changes: run again (after a crash), it reports the
 * same totals and erases nothing twice.
 */
export async function executeErasure(
  deps: ErasureDeps,
  input: { tenantId: string; requestId: string; subject: ResolvedSubject },
): Promise<ErasureOutcome> {
  const { database } = deps;
  const { tenantId, requestId, subject } = input;
  const map = deps.map ?? REFERENCE_DATAMAP;
  const now = (deps.now ?? (() => new Date()))();
  const guard = await holdGuard(database, tenantId, map);
  const holds = await holdsOf(database, guard, tenantId, subject, map);
  const key = subjectKey(
    deps.secretKey,
    tenantId,
    subject.identifiers.email
      ? `email:${subject.identifiers.email}`
      : subject.identifiers.phone
        ? `phone:${subject.identifiers.phone}`
        : subject.identifiers.customer_id
          ? `customer:${subject.identifiers.customer_id}`
          : `team_member:${subject.identifiers.team_member_id}`,
  );

  let databasePart = await finishedRun(database.db, requestId, 'database');
  if (!databasePart) {
    const info = await columnInfo(database.db);
    const { statements } = databaseStatements(tenantId, subject, map, info, guard);
    const own = ownTextStatements(tenantId, subject, info);
    const outcome = await database.db.transaction().execute(async (trx) => {
      // The audit trail's scrubbed events name this request (the chain stays verifiable).
      await sql`SELECT set_config('ferry.redaction', ${requestId}, true)`.execute(trx);
      const results: { statement: Statement; n: number }[] = [];
      for (const statement of [...statements, ...own]) {
        if (statement.kind === 'retain' || statement.kind === 'hold') {
          const r = await sql<{ n: number }>`${sql.raw(statement.count)}`.execute(trx);
          results.push({ statement, n: Number(r.rows[0]?.n ?? 0) });
          continue;
        }
        const r = await sql`${sql.raw(statement.run)}`.execute(trx);
        results.push({ statement, n: Number(r.numAffectedRows ?? 0) });
      }
      const stores = tally(map, results);
      const part: Partial<ErasureOutcome> = { stores, datasets: stores.map((s) => s.dataset) };
      await sql`INSERT INTO erasure_runs (request_id, tenant_id, store, outcome, finished_at)
        VALUES (${requestId}, ${tenantId}, 'database', ${JSON.stringify(part)}::jsonb, ${now})`.execute(trx);
      await sql`INSERT INTO erasure_ledger (id, tenant_id, request_id, subject_key, datasets, erased_at)
        VALUES (${randomUUID()}, ${tenantId}, ${requestId}, ${key}, ${sql.raw(textArray(part.datasets ?? []))}, ${now})
        ON CONFLICT (request_id) DO NOTHING`.execute(trx);
      await trx.executeQuery(
        auditInsert(database, {
          tenantId,
          actor: `dsar:${requestId}`,
          action: 'dsar.erased',
          targetId: requestId,
          dataType: 'erasure',
          recordCount: stores.reduce((n, s) => n + s.deleted + s.anonymized + s.scrubbed, 0),
          success: true,
          error: `subject ${key}`,
          occurredAt: now,
        }).compile(),
      );
      return part;
    });
    databasePart = { outcome };
  }
  await deps.between?.('database');

  let filesPart = await finishedRun(database.db, requestId, 'object_store');
  if (!filesPart) {
    const candidates = await fileCandidates(database, tenantId, subject, map, deps.secretKey);
    const reach = await outOfReach(
      database,
      tenantId,
      candidates.map((c) => c.exportId),
    );
    const deleted: ErasedFiles['deleted'] = [];
    const jobs = exportJobs(database);
    // A legal hold that keeps some of the subject's rows keeps the stored files that copy them too.
    const keptFiles = holds.length ? candidates.reduce((n, c) => n + c.files.length, 0) : 0;
    for (const c of holds.length ? [] : candidates) {
      await removeLeftovers(deps.store as ObjectStore, exportPrefix(tenantId, c.exportId));
      await jobs.expire(c.exportId, now);
      await sql`INSERT INTO audit_events (id, tenant_id, occurred_at, actor, action, target_id, success)
        VALUES (${randomUUID()}, ${tenantId}, ${now}, ${`dsar:${requestId}`}, 'export.deleted', ${c.exportId}, true)`.execute(
        database.db,
      );
      for (const file of c.files) deleted.push({ export_id: c.exportId, file });
    }
    const part: Partial<ErasureOutcome> = {
      files: { deleted, out_of_reach: reach },
      stores: deleted.length
        ? [{ ...emptyCounts('export_files', 'object_store'), deleted: deleted.length }]
        : keptFiles
          ? [
              {
                ...emptyCounts('export_files', 'object_store'),
                retained: keptFiles,
                retain_reason: HOLD_REASON,
              },
            ]
          : [],
    };
    await sql`INSERT INTO erasure_runs (request_id, tenant_id, store, outcome, finished_at)
      VALUES (${requestId}, ${tenantId}, 'object_store', ${JSON.stringify(part)}::jsonb, ${now})
      ON CONFLICT (request_id, store) DO NOTHING`.execute(database.db);
    filesPart = { outcome: part };
  }
  await deps.between?.('object_store');

  const notices = await notifyProcessors(
    { database, mailer: deps.mailer, outbound: deps.outbound, now: () => now },
    { tenantId, requestId, categories: categoriesOf(map, databasePart.outcome.datasets ?? []) },
  );
  return {
    stores: [...(databasePart.outcome.stores ?? []), ...(filesPart.outcome.stores ?? [])],
    files: filesPart.outcome.files ?? { deleted: [], out_of_reach: [] },
    processors_notified: processorsOf(notices),
    processor_notices: notices,
    holds,
    backup_expiry: null,
    datasets: databasePart.outcome.datasets ?? [],
  };
}
