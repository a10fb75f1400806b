import { randomUUID } from 'node:crypto';
import { type ColumnType, type Kysely, type Selectable, sql } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import { type Database, literal } from '../db/database.ts';
import type { DB } from '../db/schema.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap } from '../datamap/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { normalizeIdentifiers, type ResolvedSubject, subjectRowCondition } from './subject.ts';
import type { SubjectIdentifiers } from './tables.ts';

/**
 * Legal holds (docs/legal-holds.md): data no deletion may touch while the hold is active.
 * Every deletion path (retention sweeps, erasure, account purge) asks `holdGuard` for the
 * SQL condition of held rows and leaves them in place; this module is the one place that
 * decides what a hold keeps.
 */

export const HOLD_SCOPES = ['tenant', 'subject', 'dataset', 'conversation_ids', 'date_range'] as const;
export type HoldScope = (typeof HOLD_SCOPES)[number];

type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface LegalHoldsTable {
  id: string;
  tenant_id: string;
  scope: HoldScope;
  subject: ColumnType<SubjectIdentifiers | null, string | null, string | null>;
  datasets: ColumnType<string[], string[] | undefined, string[]>;
  conversation_ids: ColumnType<string[], string[] | undefined, string[]>;
  date_from: Timestamp | null;
  date_to: Timestamp | null;
  reason: string;
  matter: string;
  created_at: Timestamp;
  created_by: string;
  released_at: Timestamp | null;
  released_by: string | null;
  release_reason: string | null;
}

export type HoldTables = { legal_holds: LegalHoldsTable };

export function holdDb(database: Database | { db: Kysely<DB> }): Kysely<DB & HoldTables> {
  return database.db.withTables<HoldTables>();
}

/** A hold as the API shows it. */
export interface LegalHold {
  readonly id: string;
  readonly scope: HoldScope;
  readonly subject: SubjectIdentifiers | null;
  /** `dataset` scope: the tables held. */
  readonly datasets: string[];
  readonly conversation_ids: string[];
  /** Narrows any scope to rows whose time column is in [from, to). */
  readonly from: string | null;
  readonly to: string | null;
  readonly reason: string;
  readonly matter: string;
  readonly created_at: string;
  readonly created_by: string;
  readonly released_at: string | null;
  readonly released_by: string | null;
  readonly release_reason: string | null;
}

export interface HoldInput {
  scope: string;
  subject?: { email?: string; customer_id?: string } | undefined;
  datasets?: string[] | undefined;
  conversation_ids?: string[] | undefined;
  from?: string | undefined;
  to?: string | undefined;
  reason: string;
  matter: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_IDS = 10_000;

type HoldRow = Selectable<LegalHoldsTable>;

function present(row: HoldRow): LegalHold {
  const iso = (d: Date | null) => (d ? d.toISOString() : null);
  return {
    id: row.id,
    scope: row.scope,
    subject: (typeof row.subject === 'string'
      ? JSON.parse(row.subject)
      : row.subject) as SubjectIdentifiers | null,
    datasets: row.datasets,
    conversation_ids: row.conversation_ids,
    from: iso(row.date_from),
    to: iso(row.date_to),
    reason: row.reason,
    matter: row.matter,
    created_at: row.created_at.toISOString(),
    created_by: row.created_by,
    released_at: iso(row.released_at),
    released_by: row.released_by,
    release_reason: row.release_reason,
  };
}

function parseInstant(field: string, value: string | undefined): Date | null {
  if (value === undefined) return null;
  const v = /^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value;
  const d = new Date(v);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(d.getTime()))
    throw invalid(field, `"${value}" is not a date (YYYY-MM-DD) or an ISO 8601 timestamp`);
  return d;
}

/** The tables a hold may name: the data map's tables of a tenant, by table or dataset name. */
function holdableTables(map: DataMap): string[] {
  return Object.entries(map.tables)
    .filter(([name, t]) => t.tenantKey && name !== 'tenants')
    .map(([name]) => name);
}

function tablesOf(names: readonly string[], map: DataMap): string[] {
  const tables = holdableTables(map);
  return names.map((name, i) => {
    if (tables.includes(name)) return name;
    const dataset = map.datasets[name];
    if (dataset && tables.includes(dataset.source)) return dataset.source;
    throw invalid(`datasets[${i}]`, `"${name}" is not a dataset that holds rows`, tables);
  });
}

export interface HoldActor {
  actor: string;
  ip?: string | null;
  userAgent?: string | null;
}

/** Places a hold; audited and announced (`legal_hold.created`). */
export async function createHold(
  database: Database,
  tenantId: string,
  input: HoldInput,
  who: HoldActor,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<LegalHold> {
  if (!(HOLD_SCOPES as readonly string[]).includes(input.scope))
    throw invalid('scope', `"${input.scope}" is not a hold scope`, [...HOLD_SCOPES]);
  const scope = input.scope as HoldScope;
  const reason = input.reason?.trim() ?? '';
  const matter = input.matter?.trim() ?? '';
  if (!reason) throw invalid('reason', 'is required: say why the data must be kept');
  if (!matter) throw invalid('matter', 'is required: the matter or case reference');
  if (reason.length > 2000) throw invalid('reason', 'is longer than 2000 characters');
  if (matter.length > 200) throw invalid('matter', 'is longer than 200 characters');
  let subject: SubjectIdentifiers | null = null;
  if (scope === 'subject') {
    if (!input.subject) throw invalid('subject', 'is required for a subject hold: an email or customer_id');
    const { email, customer_id } = input.subject;
    if (email === undefined && customer_id === undefined)
      throw invalid('subject', 'names no one: give an email or customer_id');
    subject = normalizeIdentifiers({ email, customer_id });
  } else if (input.subject) throw invalid('subject', `applies only to the subject scope, not ${scope}`);
  const datasets = input.datasets?.length ? tablesOf(input.datasets, map) : [];
  if (scope === 'dataset' && !datasets.length)
    throw invalid('datasets', 'is required for a dataset hold', holdableTables(map));
  if (scope !== 'dataset' && datasets.length)
    throw invalid('datasets', `applies only to the dataset scope, not ${scope}`);
  const ids = input.conversation_ids ?? [];
  if (scope === 'conversation_ids' && !ids.length)
    throw invalid('conversation_ids', 'is required for a conversation_ids hold');
  if (scope !== 'conversation_ids' && ids.length)
    throw invalid('conversation_ids', `applies only to the conversation_ids scope, not ${scope}`);
  if (ids.length > MAX_IDS) throw invalid('conversation_ids', `holds at most ${MAX_IDS} ids per hold`);
  ids.forEach((id, i) => {
    if (!UUID.test(id)) throw invalid(`conversation_ids[${i}]`, `"${id}" is not a uuid`);
  });
  const from = parseInstant('from', input.from);
  const to = parseInstant('to', input.to);
  if (scope === 'date_range' && !from && !to)
    throw invalid('from', 'a date_range hold needs from, to or both');
  if (from && to && from >= to) throw invalid('to', 'must be after from');
  const now = new Date();
  const id = randomUUID();
  const row = await database.db.transaction().execute(async (trx) => {
    const inserted = await trx
      .withTables<HoldTables>()
      .insertInto('legal_holds')
      .values({
        id,
        tenant_id: tenantId,
        scope,
        subject: subject ? JSON.stringify(subject) : null,
        datasets,
        conversation_ids: ids.map((x) => x.toLowerCase()),
        date_from: from,
        date_to: to,
        reason,
        matter,
        created_at: now,
        created_by: who.actor,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: who.actor,
        action: 'legal_hold.created',
        targetId: id,
        dataType: scope,
        ip: who.ip ?? null,
        userAgent: who.userAgent ?? null,
        success: true,
        error: `matter ${matter}`,
        occurredAt: now,
      }).compile(),
    );
    return inserted;
  });
  const hold = present(row);
  await emitEvent(database, tenantId, 'legal_hold.created', {
    data: { hold_id: id, scope, matter, datasets },
  });
  return hold;
}

export async function listHolds(
  database: Database,
  tenantId: string,
  options: { includeReleased?: boolean } = {},
): Promise<LegalHold[]> {
  let q = holdDb(database).selectFrom('legal_holds').selectAll().where('tenant_id', '=', tenantId);
  if (!options.includeReleased) q = q.where('released_at', 'is', null);
  const rows = await q.orderBy('created_at').orderBy('id').execute();
  return rows.map((r) => present(r));
}

export async function getHold(database: Database, tenantId: string, id: string): Promise<LegalHold> {
  if (!UUID.test(id)) throw new FerryError('not_found', `no legal hold ${id}`);
  const row = await holdDb(database)
    .selectFrom('legal_holds')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `no legal hold ${id}`);
  return present(row);
}

/** Releases a hold (with a reason; the row stays as the record). Audited and announced. */
export async function releaseHold(
  database: Database,
  tenantId: string,
  id: string,
  reason: string,
  who: HoldActor,
): Promise<LegalHold> {
  const hold = await getHold(database, tenantId, id);
  const why = reason?.trim() ?? '';
  if (!why) throw invalid('reason', 'is required: say why the hold ends');
  if (why.length > 2000) throw invalid('reason', 'is longer than 2000 characters');
  if (hold.released_at)
    throw new FerryError('conflict', `legal hold ${id} was released at ${hold.released_at}`);
  const now = new Date();
  await database.db.transaction().execute(async (trx) => {
    const updated = await trx
      .withTables<HoldTables>()
      .updateTable('legal_holds')
      .set({ released_at: now, released_by: who.actor, release_reason: why })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('released_at', 'is', null)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1)
      throw new FerryError('conflict', `legal hold ${id} was released meanwhile`);
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: who.actor,
        action: 'legal_hold.released',
        targetId: id,
        dataType: hold.scope,
        ip: who.ip ?? null,
        userAgent: who.userAgent ?? null,
        success: true,
        error: `matter ${hold.matter}`,
        occurredAt: now,
      }).compile(),
    );
  });
  await emitEvent(database, tenantId, 'legal_hold.released', {
    data: { hold_id: id, scope: hold.scope, matter: hold.matter },
  });
  return getHold(database, tenantId, id);
}

/** The tenant's active holds (erasure lists them on its receipt when they keep the subject's data). */
export async function activeHolds(database: Database, tenantId: string): Promise<LegalHold[]> {
  return listHolds(database, tenantId);
}

// ---------------------------------------------------------------------------------------
// What a hold keeps, as SQL.

interface CompiledHold {
  readonly hold: LegalHold;
  readonly subject: ResolvedSubject | null;
}

/** The SQL conditions of held rows for every table, over a given alias. */
export interface HoldGuard {
  readonly holds: readonly LegalHold[];
  /** True for a row a hold keeps (its own scope, or a child of a held row); null when no hold reaches the table. */
  held(table: string, alias: string): string | null;
  /** `held`, or a row that held rows refer to (deleting it would take them along). */
  protectedRows(table: string, alias: string): string | null;
  /** One hold's own condition (for the report). */
  heldBy(hold: LegalHold, table: string, alias: string): string | null;
}

const uuidArray = (ids: readonly string[]) => `ARRAY[${ids.map((i) => literal(i)).join(', ')}]::uuid[]`;
const textArray = (values: readonly string[]) =>
  values.length ? `ARRAY[${values.map((v) => literal(v)).join(', ')}]::text[]` : `'{}'::text[]`;

/** The subject's records as a hold sees them: their customer ids (by id or email) and emails. */
async function holdSubject(
  database: Database,
  tenantId: string,
  identifiers: SubjectIdentifiers,
): Promise<ResolvedSubject> {
  const emails = identifiers.email ? [identifiers.email] : [];
  const given = identifiers.customer_id ? [identifiers.customer_id] : [];
  const found = await sql<{ id: string; email: string | null }>`
    SELECT id::text AS id, lower(email) AS email FROM customers
    WHERE tenant_id = ${tenantId}
      AND (id = ANY (${sql.raw(given.length ? uuidArray(given) : `'{}'::uuid[]`)})
        OR lower(email) = ANY (${sql.raw(textArray(emails))}))`.execute(database.db);
  const customerIds = new Set(given);
  const allEmails = new Set(emails);
  for (const r of found.rows) {
    customerIds.add(r.id);
    if (r.email) allEmails.add(r.email);
  }
  return {
    tenantId,
    identifiers,
    customerIds: [...customerIds],
    teamMemberIds: [],
    emails: [...allEmails],
    phones: [],
    names: [],
    matches: [],
  };
}

function ownCondition(c: CompiledHold, table: string, alias: string, map: DataMap): string | null {
  const decl = map.tables[table];
  if (!decl?.tenantKey || table === 'tenants') return null;
  const { hold } = c;
  let base: string | null;
  switch (hold.scope) {
    case 'tenant':
    case 'date_range':
      base = 'true';
      break;
    case 'dataset':
      base = hold.datasets.includes(table) ? 'true' : null;
      break;
    case 'subject':
      base = c.subject ? subjectRowCondition(table, c.subject, alias, map, 'customer') : null;
      break;
    case 'conversation_ids': {
      if (table === 'conversations') base = `${alias}.id = ANY (${uuidArray(hold.conversation_ids)})`;
      else {
        const rel = decl.relations.find((r) => r.references === 'conversations.id');
        const arrayColumn = Object.entries(decl.columns).find(
          ([name, col]) => name === 'conversation_ids' && col.type === 'uuid[]',
        );
        base = rel
          ? `${alias}.${rel.column} = ANY (${uuidArray(hold.conversation_ids)})`
          : arrayColumn
            ? `${alias}.conversation_ids && ${uuidArray(hold.conversation_ids)}`
            : null;
      }
      break;
    }
  }
  if (!base) return null;
  if (hold.from || hold.to) {
    const time = decl.timeColumn;
    if (!time) return hold.scope === 'date_range' ? null : base;
    const parts = [base];
    if (hold.from) parts.push(`${alias}.${time} >= ${literal(hold.from)}::timestamptz`);
    if (hold.to) parts.push(`${alias}.${time} < ${literal(hold.to)}::timestamptz`);
    return parts.map((p) => `(${p})`).join(' AND ');
  }
  return base;
}

/** Builds the guard from the tenant's active holds (subjects resolved now, so later records of theirs are held too). */
export async function holdGuard(
  database: Database,
  tenantId: string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<HoldGuard> {
  const holds = await activeHolds(database, tenantId);
  const compiled: CompiledHold[] = [];
  for (const hold of holds)
    compiled.push({
      hold,
      subject:
        hold.scope === 'subject' && hold.subject ? await holdSubject(database, tenantId, hold.subject) : null,
    });
  return guardFrom(compiled, tenantId, map);
}

function guardFrom(compiled: readonly CompiledHold[], tenantId: string, map: DataMap): HoldGuard {
  const own = (table: string, alias: string): string | null => {
    const parts = compiled
      .map((c) => ownCondition(c, table, alias, map))
      .filter((p): p is string => p !== null);
    return parts.length ? parts.map((p) => `(${p})`).join(' OR ') : null;
  };
  const depthAlias = (alias: string, n: string) => `${alias}_${n}`;
  const held = (table: string, alias: string): string | null => {
    const decl = map.tables[table];
    if (!decl) return null;
    const parts: string[] = [];
    const self = own(table, alias);
    if (self) parts.push(self);
    // A row that belongs to a held row is held: the data map's `parent` links (a message of
    // a held conversation). Other references (a conversation's site or customer) do not make it so.
    for (const link of decl.subjectLinks) {
      if (link.by !== 'parent' || !link.parent || link.parent === table) continue;
      const pDecl = map.tables[link.parent];
      if (!pDecl?.tenantKey) continue;
      const p = depthAlias(alias, 'p');
      const parentHeld = own(link.parent, p);
      if (!parentHeld) continue;
      const key = pDecl.primaryKey[0] ?? 'id';
      parts.push(
        `${alias}.${link.column} IN (SELECT ${p}.${key} FROM ${link.parent} ${p} WHERE ${p}.${pDecl.tenantKey} = ${literal(tenantId)} AND (${parentHeld}))`,
      );
    }
    return parts.length ? parts.map((x) => `(${x})`).join(' OR ') : null;
  };
  // A row that protected rows refer to stays too: deleting it would delete (cascade) or orphan
  // them. Followed down three levels (a site, its conversations, their messages).
  const protectedRows = (table: string, alias: string, depth = 0): string | null => {
    const parts: string[] = [];
    const self = held(table, alias);
    if (self) parts.push(self);
    const decl = map.tables[table];
    const key = decl?.primaryKey[0] ?? 'id';
    if (depth < 3)
      for (const [child, cDecl] of Object.entries(map.tables)) {
        if (!cDecl.tenantKey || child === table) continue;
        for (const rel of cDecl.relations) {
          if (rel.references !== `${table}.${key}`) continue;
          const c = depthAlias(alias, 'c');
          const childKept = protectedRows(child, c, depth + 1);
          if (!childKept) continue;
          parts.push(
            `EXISTS (SELECT 1 FROM ${child} ${c} WHERE ${c}.${cDecl.tenantKey} = ${literal(tenantId)} AND ${c}.${rel.column} = ${alias}.${key} AND (${childKept}))`,
          );
        }
      }
    return parts.length ? parts.map((x) => `(${x})`).join(' OR ') : null;
  };
  return {
    holds: compiled.map((c) => c.hold),
    held,
    protectedRows: (table, alias) => protectedRows(table, alias),
    heldBy: (hold, table, alias) => {
      const c = compiled.find((x) => x.hold.id === hold.id);
      return c ? guardFrom([c], tenantId, map).held(table, alias) : null;
    },
  };
}

/** `AND NOT (condition)` for a statement's WHERE, or nothing when no hold reaches the table. */
export function notHeld(condition: string | null): string {
  return condition ? ` AND NOT coalesce((${condition}), false)` : '';
}

export interface HoldReport {
  readonly hold: LegalHold;
  /** Rows the hold keeps, per table (tables with none left out). */
  readonly datasets: { dataset: string; rows: number }[];
}

/** What each active hold keeps, counted per table. */
export async function holdReport(
  database: Database,
  tenantId: string,
  map: DataMap = REFERENCE_DATAMAP,
  holdId?: string,
): Promise<HoldReport[]> {
  const guard = await holdGuard(database, tenantId, map);
  const out: HoldReport[] = [];
  for (const hold of guard.holds) {
    if (holdId && hold.id !== holdId) continue;
    const datasets: HoldReport['datasets'] = [];
    for (const [table, decl] of Object.entries(map.tables)) {
      if (!decl.tenantKey || table === 'tenants') continue;
      const condition = guard.heldBy(hold, table, 't');
      if (!condition) continue;
      const r = await sql<{ n: number | string }>`${sql.raw(
        `SELECT count(*) AS n FROM ${table} t WHERE t.${decl.tenantKey} = ${literal(tenantId)} AND (${condition})`,
      )}`.execute(database.db);
      const n = Number(r.rows[0]?.n ?? 0);
      if (n > 0) datasets.push({ dataset: table, rows: n });
    }
    out.push({ hold, datasets });
  }
  if (holdId && !out.length) {
    const hold = await getHold(database, tenantId, holdId);
    out.push({ hold, datasets: [] });
  }
  return out;
}
