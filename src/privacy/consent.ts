import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { sql } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import { isCalendarDate } from '../collect/request.ts';
import type { Database } from '../db/database.ts';
import { utcInstantSql } from '../db/keyset.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { normalizeIdentifiers } from './subject.ts';

/**
 * Consent records (docs/consent.md): each record is an event, consent given (`granted`) or
 * withdrawn, for one purpose, with its legal basis, source and the policy version the person
 * saw. The table is the full history; the current state of a purpose is its latest record.
 * They are exported as the `consent_records` dataset and in the person's access package.
 */

export const CONSENT_PURPOSES = ['chat_transcripts', 'analytics', 'marketing', 'ai_training'] as const;
export const LEGAL_BASES = [
  'consent',
  'contract',
  'legal_obligation',
  'vital_interests',
  'public_task',
  'legitimate_interests',
] as const;
export type ConsentPurpose = (typeof CONSENT_PURPOSES)[number];
export type LegalBasis = (typeof LEGAL_BASES)[number];

/** A customer, by email or id. */
export interface ConsentSubject {
  email?: string | undefined;
  customer_id?: string | undefined;
}

export interface ConsentInput {
  /** The identifiers, or one text as an operator types it: a customer id, else an email. */
  subject: ConsentSubject | string;
  purpose: string;
  granted: boolean;
  legal_basis?: string | undefined;
  source: string;
  policy_version?: string | undefined;
  ip_address?: string | undefined;
  recorded_at?: string | undefined;
}

export interface ConsentRecord {
  readonly id: string;
  readonly customer_id: string;
  readonly purpose: ConsentPurpose;
  readonly granted: boolean;
  readonly legal_basis: LegalBasis;
  readonly source: string;
  readonly policy_version: string | null;
  readonly ip_address: string | null;
  /** UTC, microseconds. */
  readonly recorded_at: string;
}

export interface ConsentState {
  readonly purpose: ConsentPurpose;
  readonly status: 'given' | 'withdrawn';
  readonly legal_basis: LegalBasis;
  readonly policy_version: string | null;
  readonly source: string;
  /** When the consent in force was given (null when withdrawn without a later grant). */
  readonly given_at: string | null;
  readonly withdrawn_at: string | null;
}

export interface ConsentView {
  readonly subject: { readonly customer_id: string };
  readonly current: ConsentState[];
  readonly history: ConsentRecord[];
}

export interface ConsentActor {
  actor: string;
  ip?: string | null;
  userAgent?: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RECORDED_AT = sql.raw(utcInstantSql('recorded_at'));
/** ISO 8601 with a zone; at most microseconds, which the database keeps. */
const ISO_INSTANT = /^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$/;
const EARLIEST = Date.UTC(1970, 0, 1);

/** The subject as an operator types it (`--subject`, `?subject=`): a customer id, else an email. */
export function parseSubject(text: string): ConsentSubject {
  const trimmed = text.trim();
  return UUID.test(trimmed) ? { customer_id: trimmed } : { email: trimmed };
}

/**
 * The customer the subject names: by id, or by email (case-insensitive); given both, one
 * customer must have both. Unknown: 404. An email on more than one customer record is
 * refused (400): the record would land on a guess, so the caller names the customer id.
 */
export async function consentSubject(
  database: Database,
  tenantId: string,
  subject: ConsentSubject | string,
): Promise<string> {
  const typed = typeof subject === 'string';
  const given = typed ? parseSubject(subject) : subject;
  if (given.email === undefined && given.customer_id === undefined)
    throw invalid('subject', 'names no one: give an email or customer_id');
  let ids: ReturnType<typeof normalizeIdentifiers>;
  try {
    ids = normalizeIdentifiers({ email: given.email, customer_id: given.customer_id });
  } catch (err) {
    // One text parameter (`?subject=`, `--subject`): the error names it, not a field inside it.
    if (typed && err instanceof FerryError)
      throw invalid('subject', 'is neither a customer id nor an email address (in a URL, write + as %2B)');
    throw err;
  }
  const found = await sql<{ id: string }>`
    SELECT id::text AS id FROM customers WHERE tenant_id = ${tenantId}
      ${ids.customer_id ? sql`AND id = ${ids.customer_id}::uuid` : sql``}
      ${ids.email ? sql`AND lower(email) = ${ids.email}` : sql``}
    ORDER BY created_at, id LIMIT 2`.execute(database.db);
  const [first, second] = found.rows;
  if (!first) throw new FerryError('not_found', 'no customer of this tenant has that email or id');
  if (second)
    throw invalid(
      typed ? 'subject' : 'subject.email',
      'is the email of more than one customer of this tenant: name the customer by its id',
    );
  return first.id;
}

function text(field: string, value: unknown, max: number, required: boolean): string | null {
  if (value === undefined || value === null || value === '') {
    if (required) throw invalid(field, 'is required');
    return null;
  }
  if (typeof value !== 'string') throw invalid(field, 'must be text');
  const v = value.trim();
  if (!v && required) throw invalid(field, 'is required');
  if (v.length > max) throw invalid(field, `is longer than ${max} characters`);
  return v || null;
}

function oneOf<T extends string>(field: string, value: unknown, accepted: readonly T[], why: string): T {
  if (typeof value === 'string' && (accepted as readonly string[]).includes(value)) return value as T;
  throw invalid(field, `${JSON.stringify(value)} ${why}`, accepted);
}

/** `recorded_at` as given (the database reads the text, so microseconds are kept), checked. */
function recordedAt(value: string | undefined, now: number): string | null {
  if (value === undefined) return null;
  const match = ISO_INSTANT.exec(value);
  const at = Date.parse(value);
  if (!match || !isCalendarDate(match[1]!) || Number.isNaN(at))
    throw invalid(
      'recorded_at',
      `"${value}" is not an ISO 8601 timestamp with a zone (2026-11-01T10:00:00.123456Z)`,
    );
  if (at < EARLIEST) throw invalid('recorded_at', 'is before 1970');
  if (at > now + 60_000) throw invalid('recorded_at', 'is in the future');
  return value;
}

/** Records consent given or withdrawn; audited as `consent.given` / `consent.withdrawn` (without the email). */
export async function recordConsent(
  database: Database,
  tenantId: string,
  input: ConsentInput,
  who: ConsentActor,
): Promise<ConsentRecord> {
  const purpose = oneOf('purpose', input.purpose, CONSENT_PURPOSES, 'is not a consent purpose');
  const basis = oneOf(
    'legal_basis',
    input.legal_basis ?? 'consent',
    LEGAL_BASES,
    'is not a legal basis of GDPR Art. 6(1)',
  );
  if (typeof input.granted !== 'boolean') throw invalid('granted', 'must be true or false');
  const source = text('source', input.source, 200, true)!;
  const policyVersion = text('policy_version', input.policy_version, 100, false);
  const ip = text('ip_address', input.ip_address, 100, false);
  if (ip !== null && !isIP(ip)) throw invalid('ip_address', `"${ip}" is not an IPv4 or IPv6 address`);
  const at = recordedAt(input.recorded_at, Date.now());
  const customerId = await consentSubject(database, tenantId, input.subject);
  const id = randomUUID();
  // The record and its audit event are written together or not at all.
  const row = await database.db.transaction().execute(async (trx) => {
    const inserted = await sql<{ recorded_at: string }>`
      INSERT INTO consent_records (id, tenant_id, customer_id, purpose, granted, source, ip_address, recorded_at, legal_basis, policy_version)
      VALUES (${id}, ${tenantId}, ${customerId}, ${purpose}, ${input.granted}, ${source}, ${ip},
        ${at ? sql`${at}::timestamptz` : sql`clock_timestamp()`}, ${basis}, ${policyVersion})
      RETURNING ${RECORDED_AT} AS recorded_at`.execute(trx);
    await trx.executeQuery(
      auditInsert(database, {
        tenantId,
        actor: who.actor,
        action: input.granted ? 'consent.given' : 'consent.withdrawn',
        targetId: id,
        dataType: 'consent_records',
        ip: who.ip ?? null,
        userAgent: who.userAgent ?? null,
        success: true,
        // What changed, never who: the customer is the record's, found through target_id.
        error: `${purpose} (${basis})`,
      }).compile(),
    );
    return inserted.rows[0]!;
  });
  return {
    id,
    customer_id: customerId,
    purpose,
    granted: input.granted,
    legal_basis: basis,
    source,
    policy_version: policyVersion,
    ip_address: ip,
    recorded_at: row.recorded_at,
  };
}

/** The subject's consents: the state of each purpose and every record, oldest first. */
export async function listConsent(
  database: Database,
  tenantId: string,
  subject: ConsentSubject | string,
): Promise<ConsentView> {
  const customerId = await consentSubject(database, tenantId, subject);
  const rows = await sql<Omit<ConsentRecord, 'customer_id'>>`
    SELECT id::text AS id, purpose, granted, legal_basis, source, policy_version, ip_address, ${RECORDED_AT} AS recorded_at
    FROM consent_records WHERE tenant_id = ${tenantId} AND customer_id = ${customerId}
    ORDER BY recorded_at, id`.execute(database.db);
  const history = rows.rows.map(({ id, ...rest }) => ({ id, customer_id: customerId, ...rest }));
  const current: ConsentState[] = [];
  for (const purpose of CONSENT_PURPOSES) {
    const records = history.filter((r) => r.purpose === purpose);
    const last = records.at(-1);
    if (!last) continue;
    current.push({
      purpose,
      status: last.granted ? 'given' : 'withdrawn',
      legal_basis: last.legal_basis,
      policy_version: last.policy_version,
      source: last.source,
      given_at: last.granted ? last.recorded_at : null,
      withdrawn_at: last.granted ? null : last.recorded_at,
    });
  }
  return { subject: { customer_id: customerId }, current, history };
}
