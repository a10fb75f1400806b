import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { auditInsert } from '../auth/audit.ts';
import type { Database } from '../db/database.ts';
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

export interface ConsentInput {
  subject: { email?: string | undefined; customer_id?: string | undefined };
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
  readonly purpose: string;
  readonly granted: boolean;
  readonly legal_basis: string;
  readonly source: string;
  readonly policy_version: string | null;
  readonly ip_address: string | null;
  /** UTC, microseconds. */
  readonly recorded_at: string;
}

export interface ConsentState {
  readonly purpose: string;
  readonly status: 'given' | 'withdrawn';
  readonly legal_basis: string;
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
const INSTANT = `to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/** The customer the subject names: by id, or by email (case-insensitive). Unknown: 404. */
export async function consentSubject(
  database: Database,
  tenantId: string,
  subject: ConsentInput['subject'] | string,
): Promise<string> {
  const given =
    typeof subject === 'string'
      ? UUID.test(subject.trim())
        ? { customer_id: subject.trim() }
        : { email: subject }
      : subject;
  if (given.email === undefined && given.customer_id === undefined)
    throw invalid('subject', 'names no one: give an email or customer_id');
  const ids = normalizeIdentifiers(given);
  const found = await sql<{ id: string }>`
    SELECT id::text AS id FROM customers WHERE tenant_id = ${tenantId}
      AND (${ids.customer_id ? sql`id = ${ids.customer_id}::uuid` : sql`false`}
        OR ${ids.email ? sql`lower(email) = ${ids.email}` : sql`false`})
    ORDER BY created_at, id LIMIT 1`.execute(database.db);
  const id = found.rows[0]?.id;
  if (!id) throw new FerryError('not_found', 'no customer of this tenant has that email or id');
  return id;
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

/** Records consent given or withdrawn; audited as `consent.given` / `consent.withdrawn` (without the email). */
export async function recordConsent(
  database: Database,
  tenantId: string,
  input: ConsentInput,
  who: ConsentActor,
): Promise<ConsentRecord> {
  if (!(CONSENT_PURPOSES as readonly string[]).includes(input.purpose))
    throw invalid('purpose', `"${input.purpose}" is not a consent purpose`, [...CONSENT_PURPOSES]);
  const basis = input.legal_basis ?? 'consent';
  if (!(LEGAL_BASES as readonly string[]).includes(basis))
    throw invalid('legal_basis', `"${basis}" is not a legal basis of GDPR Art. 6(1)`, [...LEGAL_BASES]);
  if (typeof input.granted !== 'boolean') throw invalid('granted', 'must be true or false');
  const source = text('source', input.source, 200, true)!;
  const policyVersion = text('policy_version', input.policy_version, 100, false);
  const ip = text('ip_address', input.ip_address, 100, false);
  let at: Date | null = null;
  if (input.recorded_at !== undefined) {
    at = new Date(input.recorded_at);
    // The text goes to the database as given, so microseconds are kept.
    if (
      !/^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:?\d{2})$/.test(input.recorded_at) ||
      Number.isNaN(at.getTime())
    )
      throw invalid('recorded_at', 'is not an ISO 8601 timestamp');
    if (at.getTime() > Date.now() + 60_000) throw invalid('recorded_at', 'is in the future');
  }
  const customerId = await consentSubject(database, tenantId, input.subject);
  const id = randomUUID();
  const row = await database.db.transaction().execute(async (trx) => {
    const inserted = await sql<{ recorded_at: string }>`
      INSERT INTO consent_records (id, tenant_id, customer_id, purpose, granted, source, ip_address, recorded_at, legal_basis, policy_version)
      VALUES (${id}, ${tenantId}, ${customerId}, ${input.purpose}, ${input.granted}, ${source}, ${ip},
        ${at ? sql`${input.recorded_at}::timestamptz` : sql`clock_timestamp()`}, ${basis}, ${policyVersion})
      RETURNING ${sql.raw(INSTANT)} AS recorded_at`.execute(trx);
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
        error: `${input.purpose} (${basis})`,
      }).compile(),
    );
    return inserted.rows[0]!;
  });
  return {
    id,
    customer_id: customerId,
    purpose: input.purpose,
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
  subject: ConsentInput['subject'] | string,
): Promise<ConsentView> {
  const customerId = await consentSubject(database, tenantId, subject);
  const rows = await sql<Omit<ConsentRecord, 'customer_id'>>`
    SELECT id::text AS id, purpose, granted, legal_basis, source, policy_version, ip_address, ${sql.raw(INSTANT)} AS recorded_at
    FROM consent_records WHERE tenant_id = ${tenantId} AND customer_id = ${customerId}
    ORDER BY recorded_at, id`.execute(database.db);
  const history = rows.rows.map((r) => ({ ...r, customer_id: customerId }));
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
