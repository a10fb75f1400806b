import { parsePhoneNumberFromString } from 'libphonenumber-js';
import { sql } from 'kysely';
import { type Database, literal } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, SubjectLink, TableDeclaration } from '../datamap/types.ts';
import { invalid } from '../domain/ferry-error.ts';
import type { SubjectIdentifiers } from './tables.ts';

/**
 * Finding a data subject: every row the data map links to them, and every free-text
 * column that mentions them. Nothing here names a table: the data map's subject links
 * and column classes say where to look (docs/dsar.md, "Finding the subject").
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** The identifiers of a request, normalized: email trimmed and lower-cased, phone E.164, ids as uuids. */
export function normalizeIdentifiers(input: {
  email?: string | undefined;
  phone?: string | undefined;
  customer_id?: string | undefined;
  team_member_id?: string | undefined;
}): SubjectIdentifiers {
  const out: { email?: string; phone?: string; customer_id?: string; team_member_id?: string } = {};
  if (input.email !== undefined) {
    const email = input.email.trim().toLowerCase();
    if (!EMAIL.test(email) || email.length > 254) throw invalid('subject.email', 'is not an email address');
    out.email = email;
  }
  if (input.phone !== undefined) {
    const phone = parsePhoneNumberFromString(input.phone.trim());
    if (!phone?.isValid()) throw invalid('subject.phone', 'is not a phone number in international form (+…)');
    out.phone = phone.number;
  }
  for (const key of ['customer_id', 'team_member_id'] as const) {
    const value = input[key];
    if (value === undefined) continue;
    if (!UUID.test(value)) throw invalid(`subject.${key}`, 'is not a uuid');
    out[key] = value.toLowerCase();
  }
  if (Object.keys(out).length === 0)
    throw invalid('subject', 'names no one: give an email, phone, customer_id or team_member_id');
  return out;
}

/** How the rows of one table were found. */
export interface SubjectMatch {
  readonly table: string;
  readonly rows: number;
  /** `link:<column>` for each subject link that matched, `free_text:<table>.<column>` for mentions. */
  readonly matched_by: readonly string[];
}

export interface ResolvedSubject {
  readonly tenantId: string;
  readonly identifiers: SubjectIdentifiers;
  /** Customer records of the subject (by id, email or phone). */
  readonly customerIds: readonly string[];
  /** Team member records of the subject (by id or email). */
  readonly teamMemberIds: readonly string[];
  /** Every email address of the subject: given, and on their records (lower case). */
  readonly emails: readonly string[];
  /** Every phone number of the subject (E.164). */
  readonly phones: readonly string[];
  /** Names on their records that are specific enough to search free text for. */
  readonly names: readonly string[];
  readonly matches: readonly SubjectMatch[];
}

/**
 * A name is searched for in free text only when it is specific: at least two words and
 * eight characters ("Ana Souza"), so "Ana" alone never scrubs every Ana of the tenant.
 */
export function specificName(name: string | null | undefined): boolean {
  if (!name) return false;
  const trimmed = name.trim();
  return trimmed.length >= 8 && trimmed.split(/\s+/).length >= 2;
}

const textArray = (values: readonly string[]) =>
  values.length ? `ARRAY[${values.map((v) => literal(v)).join(', ')}]::text[]` : `'{}'::text[]`;

/** The SQL condition of one link over `alias`, or null when the subject has nothing it could match. */
function linkCondition(
  map: DataMap,
  tenantId: string,
  link: SubjectLink,
  subject: Pick<ResolvedSubject, 'customerIds' | 'teamMemberIds' | 'emails' | 'phones'>,
  alias: string,
  depth: number,
): string | null {
  const column = `${alias}.${link.column}`;
  const ids = link.subject === 'customer' ? subject.customerIds : subject.teamMemberIds;
  switch (link.by) {
    case 'id':
      return ids.length ? `${column}::text = ANY (${textArray(ids)})` : null;
    case 'email':
      return subject.emails.length ? `lower(${column}) = ANY (${textArray(subject.emails)})` : null;
    case 'phone':
      return subject.phones.length ? `${column} = ANY (${textArray(subject.phones)})` : null;
    case 'parent': {
      const parent = link.parent ? map.tables[link.parent] : undefined;
      if (!parent || depth > 3) return null;
      const p = `p${depth}`;
      const inner = tableCondition(map, tenantId, link.parent!, subject, p, depth + 1, link.subject);
      if (!inner) return null;
      const key = parent.primaryKey[0] ?? 'id';
      return `${column} IN (SELECT ${p}.${key} FROM ${link.parent} ${p} WHERE ${p}.${parent.tenantKey} = ${literal(tenantId)} AND (${inner}))`;
    }
  }
}

function tableCondition(
  map: DataMap,
  tenantId: string,
  table: string,
  subject: Pick<ResolvedSubject, 'customerIds' | 'teamMemberIds' | 'emails' | 'phones'>,
  alias: string,
  depth = 0,
  only?: SubjectLink['subject'],
): string | null {
  const declaration = map.tables[table];
  if (!declaration) return null;
  const parts = declaration.subjectLinks
    .filter((l) => !only || l.subject === only)
    .map((l) => linkCondition(map, tenantId, l, subject, alias, depth))
    .filter((c): c is string => c !== null);
  return parts.length ? parts.map((c) => `(${c})`).join(' OR ') : null;
}

/**
 * The SQL condition (over `alias`) that selects a table's rows linked to the subject, or
 * null when none can be: the access package narrows export datasets by it and erasure
 * acts on the rows it selects. Values are quoted literals; the tenant condition is the
 * caller's (parents are tenant-scoped here).
 */
export function subjectRowCondition(
  table: string,
  subject: ResolvedSubject,
  alias: string,
  map: DataMap = REFERENCE_DATAMAP,
  /** Only the links to this kind of subject (a customer's rows, or a team member's). */
  kind?: SubjectLink['subject'],
): string | null {
  return tableCondition(map, subject.tenantId, table, subject, alias, 0, kind);
}

/** The free-text columns of a table that may mention a subject (the erasure's scrub columns). */
export function scrubColumns(table: TableDeclaration): string[] {
  if (table.erasure.scrub) return [...table.erasure.scrub];
  return Object.entries(table.columns)
    .filter(([, c]) => c.class === 'free_text')
    .map(([name]) => name);
}

/**
 * SQL that is true when a text (or JSON, as text) value mentions one of the subject's
 * identifiers. Phone numbers are matched by their national digits in any writing by the
 * erasure's own function, so here only their last eight digits pre-filter.
 */
export function mentionCondition(
  expr: string,
  subject: Pick<ResolvedSubject, 'emails' | 'phones' | 'names'>,
): string | null {
  const needles = [...subject.emails, ...subject.names.map((n) => n.toLowerCase())].map(
    (n) => `strpos(lower(${expr}), ${literal(n)}) > 0`,
  );
  for (const phone of subject.phones) {
    const digits = phone.replace(/\D/g, '');
    if (digits.length >= 8)
      needles.push(`strpos(regexp_replace(${expr}, '[^0-9]', '', 'g'), ${literal(digits.slice(-8))}) > 0`);
  }
  return needles.length ? needles.map((n) => `(${n})`).join(' OR ') : null;
}

async function rows<T>(database: Database, statement: string): Promise<T[]> {
  return (await sql<T>`${sql.raw(statement)}`.execute(database.db)).rows;
}

/**
 * Resolves a subject: their customer and team member records (by id, case-insensitive
 * email, E.164 phone), everything those records add (their other addresses, numbers and
 * names), then per table of the data map how many rows are theirs and how they were found,
 * and which free-text columns mention them.
 */
export async function resolveSubject(
  database: Database,
  tenantId: string,
  given: SubjectIdentifiers,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<ResolvedSubject> {
  const identifiers = normalizeIdentifiers(given);
  const emails = new Set<string>(identifiers.email ? [identifiers.email] : []);
  const phones = new Set<string>(identifiers.phone ? [identifiers.phone] : []);
  const names = new Set<string>();
  const seed = {
    customerIds: identifiers.customer_id ? [identifiers.customer_id] : [],
    teamMemberIds: identifiers.team_member_id ? [identifiers.team_member_id] : [],
    emails: [...emails],
    phones: [...phones],
  };
  const customerIds = new Set<string>();
  const teamMemberIds = new Set<string>();
  // The subject's own records: the tables whose `id` link names them.
  for (const [name, table] of Object.entries(map.tables)) {
    const self = table.subjectLinks.find((l) => l.by === 'id' && l.column === (table.primaryKey[0] ?? 'id'));
    if (!self || !table.tenantKey) continue;
    const condition = tableCondition(map, tenantId, name, seed, 't', 0, self.subject);
    if (!condition) continue;
    const contact = Object.entries(table.columns).filter(
      ([, c]) => c.pii === 'email' || c.pii === 'phone' || c.pii === 'name',
    );
    const found = await rows<Record<string, string | null>>(
      database,
      `SELECT t.${self.column}::text AS id${contact.map(([c]) => `, t.${c}::text AS ${c}`).join('')} FROM ${name} t WHERE t.${table.tenantKey} = ${literal(tenantId)} AND (${condition})`,
    );
    for (const row of found) {
      (self.subject === 'customer' ? customerIds : teamMemberIds).add(String(row.id));
      for (const [column, c] of contact) {
        const value = row[column];
        if (!value) continue;
        if (c.pii === 'email') emails.add(value.trim().toLowerCase());
        else if (c.pii === 'phone') {
          const phone = parsePhoneNumberFromString(value);
          if (phone?.isValid()) phones.add(phone.number);
        } else if (specificName(value)) names.add(value.trim());
      }
    }
  }
  const subject = {
    tenantId,
    identifiers,
    customerIds: [...customerIds],
    teamMemberIds: [...teamMemberIds],
    emails: [...emails],
    phones: [...phones],
    names: [...names],
  };
  // Names the subject gave in rows linked by email only (a visitor before they were identified).
  for (const [name, table] of Object.entries(map.tables)) {
    if (!table.tenantKey) continue;
    const nameColumns = Object.entries(table.columns).filter(([, c]) => c.pii === 'name');
    const emailLinks = table.subjectLinks.filter((l) => l.by === 'email' && l.subject === 'customer');
    if (!nameColumns.length || !emailLinks.length || !subject.emails.length) continue;
    const condition = emailLinks
      .map((l) => `lower(t.${l.column}) = ANY (${textArray(subject.emails)})`)
      .join(' OR ');
    for (const [column] of nameColumns) {
      const found = await rows<{ n: string | null }>(
        database,
        `SELECT DISTINCT t.${column} AS n FROM ${name} t WHERE t.${table.tenantKey} = ${literal(tenantId)} AND (${condition})`,
      );
      for (const r of found) if (specificName(r.n)) names.add(r.n!.trim());
    }
  }
  const resolved: ResolvedSubject = { ...subject, names: [...names], matches: [] };
  const matches: SubjectMatch[] = [];
  for (const [name, table] of Object.entries(map.tables)) {
    if (!table.tenantKey) continue;
    const tenant = `t.${table.tenantKey} = ${literal(tenantId)}`;
    const matchedBy: string[] = [];
    let linked = 0;
    const condition = subjectRowCondition(name, resolved, 't', map);
    if (condition) {
      const perLink = table.subjectLinks
        .map((l) => ({ l, c: linkCondition(map, tenantId, l, resolved, 't', 0) }))
        .filter((x): x is { l: SubjectLink; c: string } => x.c !== null);
      const counts = await rows<Record<string, number>>(
        database,
        `SELECT count(*) FILTER (WHERE ${condition}) AS total${perLink.map((x, i) => `, count(*) FILTER (WHERE ${x.c}) AS l${i}`).join('')} FROM ${name} t WHERE ${tenant}`,
      );
      const first = counts[0] ?? {};
      linked = Number(first.total ?? 0);
      perLink.forEach((x, i) => {
        if (Number(first[`l${i}`] ?? 0) > 0)
          matchedBy.push(`link:${x.l.column}${x.l.by === 'parent' ? `→${x.l.parent}` : ''}`);
      });
    }
    let mentioned = 0;
    for (const column of scrubColumns(table)) {
      const mention = mentionCondition(`t.${column}::text`, resolved);
      if (!mention) continue;
      const [found] = await rows<{ n: number }>(
        database,
        `SELECT count(*) AS n FROM ${name} t WHERE ${tenant} AND (${mention})${condition ? ` AND NOT coalesce(${condition}, false)` : ''}`,
      );
      const n = Number(found?.n ?? 0);
      if (n > 0) {
        mentioned += n;
        matchedBy.push(`free_text:${name}.${column}`);
      }
    }
    if (linked + mentioned > 0)
      matches.push({ table: name, rows: linked + mentioned, matched_by: matchedBy });
  }
  return { ...resolved, matches };
}
