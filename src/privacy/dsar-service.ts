import { createHmac, randomInt, randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import { sql } from 'kysely';
import { auditInsert, type AuditEntry } from '../auth/audit.ts';
import type { AuthContext } from '../auth/context.ts';
import { authorize } from '../auth/policy.ts';
import { loadTenant } from '../collect/tenant.ts';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { afterPosition, instantText } from '../db/keyset.ts';
import {
  ALLOWED_STAGES,
  allows,
  APPROVAL_TYPES,
  DSAR_SOURCES,
  DSAR_STATUSES,
  DSAR_TYPES,
  type DsarOperation,
  type DsarSource,
  type DsarStage,
  type DsarStatus,
  type DsarType,
  isClosedDsar,
  REGULATIONS,
  type Regulation,
} from '../domain/dsar-state.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { JobQueue } from '../jobs/queue.ts';
import { decodeCursor, encodeCursor } from '../lib/list-cursor.ts';
import type { Logger } from '../lib/logger.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { emitEvent } from '../webhooks/emit.ts';
import { daysLeft, dueDates, extendedDue } from './deadlines.ts';
import { getReceipt, type ReceiptDocument } from './receipts.ts';
import { type ErasurePlan, planErasure } from './erasure.ts';
import { normalizeIdentifiers, resolveSubject } from './subject.ts';
import { subjectKey } from './subject-key.ts';
import { type DsarRow, dsarDb, type SubjectIdentifiers } from './tables.ts';

/**
 * Data subject requests: the register, the lifecycle and its rules (docs/dsar.md). The
 * API, the CLI and the jobs all go through these functions; the work of a request (the
 * access package, erasure, rectification) runs in the `dsar.run` job (dsar-job.ts).
 */

/** The jobs this module hands work to (id-only payloads). */
export const DSAR_RUN_JOB = 'dsar.run';
export const DSAR_CODE_JOB = 'dsar.send-code';
export const DSAR_NOTICE_JOB = 'dsar.extension-notice';

/** A one-time code lasts this long and may be tried this often. */
export const CODE_TTL_MS = 30 * 60_000;
export const CODE_ATTEMPTS = 3;
/** CCPA §1798.100(d): two free access requests per 12 months; a third is flagged. */
export const CCPA_FREE_ACCESS_REQUESTS = 2;
export const CCPA_EXCESSIVE_RULE =
  'CCPA: a consumer may make two free access requests in 12 months (Cal. Civ. Code §1798.100(d)); ' +
  'this is a further one. Approve to answer it anyway, or deny it as excessive.';

export interface DsarDeps {
  readonly database: Database;
  readonly config: Config;
  readonly queue: Pick<JobQueue, 'send'> | undefined;
  readonly now: () => Date;
  readonly logger?: Logger | undefined;
}

/**
 * Who acts on a request: a team member or API key (`auth`), or the data subject
 * themselves through the privacy center (no role; only creating a request and entering
 * the code are open to them).
 */
export type DsarCaller =
  | { readonly kind: 'team'; readonly auth: AuthContext }
  | {
      readonly kind: 'subject';
      readonly tenantId: string;
      readonly ip: string | null;
      readonly userAgent: string | null;
    };

function callerTenant(caller: DsarCaller): string {
  return caller.kind === 'team' ? caller.auth.tenantId : caller.tenantId;
}

function callerAudit(caller: DsarCaller): Pick<AuditEntry, 'tenantId' | 'actor' | 'ip' | 'userAgent'> {
  return caller.kind === 'team'
    ? {
        tenantId: caller.auth.tenantId,
        actor: caller.auth.actor,
        ip: caller.auth.ip,
        userAgent: caller.auth.userAgent,
      }
    : { tenantId: caller.tenantId, actor: 'data_subject', ip: caller.ip, userAgent: caller.userAgent };
}

function requireTeam(caller: DsarCaller): void {
  if (caller.kind !== 'team') throw new FerryError('forbidden', 'only the tenant team may do this');
  authorize(caller.auth, 'dsar:manage');
}

export interface DsarInput {
  readonly type: string;
  readonly regulation: string;
  readonly subject: {
    readonly email?: string | undefined;
    readonly phone?: string | undefined;
    readonly customer_id?: string | undefined;
    readonly team_member_id?: string | undefined;
  };
  readonly changes?: Readonly<Record<string, unknown>> | undefined;
  readonly source: string;
  readonly note?: string | undefined;
}

/** The fields a rectification may change, and what each must be. */
export const RECTIFIABLE_FIELDS = ['email', 'name', 'phone', 'country', 'language', 'custom_fields'] as const;

function oneOf<T extends string>(param: string, value: string, accepted: readonly T[]): T {
  if (!(accepted as readonly string[]).includes(value))
    throw invalid(param, `"${value}" is not accepted`, accepted);
  return value as T;
}

function parseChanges(type: DsarType, changes: DsarInput['changes']): Record<string, unknown> | null {
  if (type !== 'rectification') {
    if (changes !== undefined) throw invalid('changes', 'is only accepted with type "rectification"');
    return null;
  }
  if (!changes || typeof changes !== 'object' || Object.keys(changes).length === 0)
    throw invalid(
      'changes',
      `is required for a rectification: the fields to correct (${RECTIFIABLE_FIELDS.join(', ')})`,
    );
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(changes)) {
    const field = oneOf('changes', key, RECTIFIABLE_FIELDS);
    if (field === 'custom_fields') {
      if (!value || typeof value !== 'object' || Array.isArray(value))
        throw invalid('changes.custom_fields', 'must be an object of field names and values');
      out[field] = value;
    } else if (field === 'email' || field === 'phone') {
      if (typeof value !== 'string') throw invalid(`changes.${field}`, 'must be a string');
      out[field] = normalizeIdentifiers({ [field]: value })[field];
    } else {
      if (typeof value !== 'string' || value.trim() === '' || value.length > 500)
        throw invalid(`changes.${field}`, 'must be a non-empty string of at most 500 characters');
      if (field === 'country' && !/^[A-Za-z]{2}$/.test(value))
        throw invalid('changes.country', 'must be an ISO 3166-1 alpha-2 code such as DE');
      out[field] = field === 'country' ? value.toUpperCase() : value;
    }
  }
  return out;
}

/** The identifier the subject's keyed hash is made from: the most specific one given. */
export function primaryIdentifier(subject: SubjectIdentifiers): string {
  if (subject.email) return `email:${subject.email}`;
  if (subject.phone) return `phone:${subject.phone}`;
  if (subject.customer_id) return `customer:${subject.customer_id}`;
  return `team_member:${subject.team_member_id}`;
}

function secretKeyOf(config: Config): string {
  return loadOrCreateSecretKey(config);
}

export function keyOfSubject(config: Config, tenantId: string, subject: SubjectIdentifiers): string {
  return subjectKey(secretKeyOf(config), tenantId, primaryIdentifier(subject));
}

const YEAR_MS = 365 * 86_400_000;

/** `POST /api/v1/dsar`, `ferry dsar create`, the privacy center's forms. */
export async function createDsar(deps: DsarDeps, caller: DsarCaller, input: DsarInput): Promise<DsarView> {
  if (caller.kind === 'team') authorize(caller.auth, 'dsar:manage');
  const tenantId = callerTenant(caller);
  const type = oneOf('type', input.type, DSAR_TYPES);
  const regulation = oneOf('regulation', input.regulation, REGULATIONS);
  const source = oneOf('source', input.source, DSAR_SOURCES);
  if (caller.kind === 'subject' && source !== 'privacy_center')
    throw invalid('source', 'must be "privacy_center" for a request made by the data subject');
  const subject = normalizeIdentifiers(input.subject ?? {});
  const changes = parseChanges(type, input.changes);
  if (input.note !== undefined && input.note.length > 2000)
    throw invalid('note', 'is longer than 2000 characters');
  const tenant = await loadTenant(deps.database, tenantId);
  const now = deps.now();
  const key = keyOfSubject(deps.config, tenantId, subject);
  const db = dsarDb(deps.database);

  const open = await db
    .selectFrom('dsar_requests')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('subject_key', '=', key)
    .where('type', '=', type)
    .where('duplicate_of', 'is', null)
    .where('status', 'not in', ['completed', 'denied', 'cancelled'])
    .orderBy('received_at')
    .executeTakeFirst();
  let excessive = false;
  if (!open && regulation === 'ccpa' && (type === 'access' || type === 'portability')) {
    const earlier = await db
      .selectFrom('dsar_requests')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('subject_key', '=', key)
      .where('regulation', '=', 'ccpa')
      .where('type', 'in', ['access', 'portability'])
      .where('duplicate_of', 'is', null)
      .where('status', 'not in', ['denied', 'cancelled'])
      .where('received_at', '>', new Date(now.getTime() - YEAR_MS))
      .executeTakeFirstOrThrow();
    excessive = Number(earlier.n) >= CCPA_FREE_ACCESS_REQUESTS;
  }
  const deadlines = dueDates({ regulation, receivedAt: now, timeZone: tenant.timezone });
  const id = randomUUID();
  const duplicate = open?.id ?? null;
  const stage: DsarStage = duplicate ? 'cancelled' : 'received';
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('dsar_requests')
      .values({
        id,
        tenant_id: tenantId,
        type,
        regulation,
        source,
        status: stage,
        stage,
        subject: JSON.stringify(duplicate ? null : subject),
        subject_key: key,
        changes: JSON.stringify(duplicate ? null : changes),
        note: input.note ?? null,
        excessive,
        duplicate_of: duplicate,
        received_at: now,
        confirm_by: deadlines.confirm_by,
        due_at: deadlines.due_at,
        original_due_at: deadlines.due_at,
        closed_reason: duplicate ? `duplicate of open request ${duplicate}` : null,
        outcome: duplicate ? 'duplicate' : null,
        actor: callerAudit(caller).actor,
        created_at: now,
        updated_at: now,
      })
      .execute();
    await trx.executeQuery(
      auditInsert(deps.database, {
        ...callerAudit(caller),
        action: 'dsar.received',
        targetId: id,
        dataType: type,
        success: true,
        occurredAt: now,
        error: duplicate ? `duplicate of ${duplicate}` : null,
      }).compile(),
    );
  });
  await announce(deps, tenantId, id, 'dsar.received');
  if (!duplicate && subject.email && deps.config.smtp && deps.queue)
    await deps.queue.send(DSAR_CODE_JOB, { id });
  return getDsarView(deps, tenantId, id);
}

/** Reads a request of the tenant, or not_found. */
export async function loadDsar(database: Database, tenantId: string, id: string): Promise<DsarRow> {
  if (!/^[0-9a-f-]{36}$/i.test(id))
    throw new FerryError('not_found', `no data subject request "${id}" in this tenant`);
  const row = await dsarDb(database)
    .selectFrom('dsar_requests')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `no data subject request "${id}" in this tenant`);
  return row as DsarRow;
}

async function getDsarView(deps: DsarDeps, tenantId: string, id: string): Promise<DsarView> {
  const tenant = await loadTenant(deps.database, tenantId);
  return presentDsar(await loadDsar(deps.database, tenantId, id), deps.now(), tenant.timezone);
}

export async function getDsar(deps: DsarDeps, caller: DsarCaller, id: string): Promise<DsarView> {
  requireTeam(caller);
  return getDsarView(deps, callerTenant(caller), id);
}

/** Stages in which a request waits; an extended request shows `extended` while it waits. */
const WAITING_STAGES: readonly DsarStage[] = [
  'received',
  'identity_pending',
  'verified',
  'awaiting_approval',
];

interface Transition {
  readonly stage: DsarStage;
  /**
   * The stages the request may stand in for the change (default: where the caller saw
   * it). An operation allowed from several stages passes them all, so a job that moved
   * the request meanwhile (the code went out: received → identity_pending) does not
   * turn a team member's action into a conflict.
   */
  readonly from?: readonly DsarStage[];
  /** Leave the stage as it is in the database (an extension moves only the deadline). */
  readonly keepStage?: boolean;
  readonly set?: Partial<Record<string, unknown>>;
  readonly action: string;
  readonly error?: string | null;
}

/**
 * Moves a request to a stage in one statement that only matches when the request still
 * stands where the caller saw it, records the audit event with it, then fires the webhook.
 */
async function transition(
  deps: DsarDeps,
  caller: DsarCaller | 'system',
  row: DsarRow,
  change: Transition,
): Promise<void> {
  const now = deps.now();
  const closing = isClosedDsar(change.stage);
  // `extended` shows over a waiting stage: read from the row as it is now, not as the caller saw it.
  const extendedNow = 'extended_at' in (change.set ?? {}) || row.extended_at !== null;
  const waitingList = sql.join(WAITING_STAGES.map((w) => sql`${w}`));
  const status = change.keepStage
    ? sql<DsarStatus>`CASE WHEN stage IN (${waitingList}) AND (extended_at IS NOT NULL OR ${extendedNow}) THEN 'extended' ELSE stage END`
    : sql<DsarStatus>`CASE WHEN ${WAITING_STAGES.includes(change.stage)} AND (extended_at IS NOT NULL OR ${extendedNow}) THEN 'extended' ELSE ${change.stage} END`;
  const audit =
    caller === 'system'
      ? { tenantId: row.tenant_id, actor: 'system', ip: null, userAgent: null }
      : callerAudit(caller);
  const db = dsarDb(deps.database);
  const moved = await db.transaction().execute(async (trx) => {
    const result = await trx
      .updateTable('dsar_requests')
      .set({
        ...(change.set ?? {}),
        ...(change.keepStage ? {} : { stage: change.stage }),
        status,
        ...(closing ? { subject: JSON.stringify(null), changes: JSON.stringify(null) } : {}),
        updated_at: now,
      })
      .where('id', '=', row.id)
      .where('stage', 'in', [...(change.from ?? [row.stage])])
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return false;
    await trx.executeQuery(
      auditInsert(deps.database, {
        ...audit,
        action: change.action,
        targetId: row.id,
        dataType: row.type,
        success: true,
        error: change.error ?? null,
        occurredAt: now,
      }).compile(),
    );
    return true;
  });
  if (!moved)
    throw new FerryError(
      'conflict',
      `data subject request ${row.id} changed meanwhile; read it again and retry`,
    );
  await announce(deps, row.tenant_id, row.id, change.action);
  if (change.stage === 'in_progress' && deps.queue) await deps.queue.send(DSAR_RUN_JOB, { id: row.id });
}

function refuse(row: DsarRow, operation: DsarOperation): never {
  throw new FerryError(
    'conflict',
    `data subject request ${row.id} is ${row.status === 'extended' ? `extended (${row.stage})` : row.status}; ` +
      `it cannot be ${operation === 'run' ? 'run again' : `${operation === 'deny' ? 'deni' : operation}ed`} now`,
  );
}

/** After verification: destructive and excessive requests wait for approval, the others run. */
function afterVerification(row: Pick<DsarRow, 'type' | 'excessive'>): DsarStage {
  return APPROVAL_TYPES.includes(row.type) || row.excessive ? 'awaiting_approval' : 'in_progress';
}

function keyedCode(config: Config, requestId: string, code: string, secret = secretKeyOf(config)): string {
  const key = createHash('sha256').update('ferry:dsar-code:v1\0').update(secret).digest();
  return createHmac('sha256', key).update(`${requestId}\n${code}`).digest('hex');
}

/** Whether `code` matches the stored hash, made under the secret key or a previous one (a code sent just before the secret changed). */
function codeMatches(config: Config, requestId: string, code: string, storedHash: string): boolean {
  const stored = Buffer.from(storedHash, 'hex');
  return [secretKeyOf(config), ...(config.previousSecretKeys ?? [])].some((secret) => {
    const given = Buffer.from(keyedCode(config, requestId, code, secret), 'hex');
    return given.length === stored.length && timingSafeEqual(given, stored);
  });
}

/** How long a sent code keeps a retried job from sending another. */
export const CODE_RESEND_GUARD_MS = 60_000;

/** Records that the current code's email went out. */
export async function markCodeSent(deps: DsarDeps, row: DsarRow): Promise<void> {
  await dsarDb(deps.database)
    .updateTable('dsar_requests')
    .set({ verification_sent_at: deps.now() })
    .where('id', '=', row.id)
    .execute();
}

/** A new one-time code for a request, stored only as a keyed hash; the caller sends it. */
export async function issueVerificationCode(deps: DsarDeps, row: DsarRow): Promise<string> {
  const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
  const now = deps.now();
  await dsarDb(deps.database)
    .updateTable('dsar_requests')
    .set({
      verification_code_hash: keyedCode(deps.config, row.id, code),
      verification_expires_at: new Date(now.getTime() + CODE_TTL_MS),
      verification_attempts: 0,
      updated_at: now,
    })
    .where('id', '=', row.id)
    .execute();
  return code;
}

/** Marks a request as waiting for its code (after the code went out). */
export async function markIdentityPending(deps: DsarDeps, row: DsarRow): Promise<void> {
  const now = await loadDsar(deps.database, row.tenant_id, row.id);
  if (now.stage !== 'received') return;
  await transition(deps, 'system', now, { stage: 'identity_pending', action: 'dsar.identity_pending' }).catch(
    (err: unknown) => {
      // A team member verified (or closed) the request meanwhile: the code is simply not needed.
      if (!(err instanceof FerryError && err.code === 'conflict')) throw err;
    },
  );
}

/**
 * `POST /api/v1/dsar/{id}/verify`: with `code`, the subject's one-time code (three
 * attempts, 30 minutes); with `reason`, a team member vouches for the subject's identity.
 */
export async function verifyDsar(
  deps: DsarDeps,
  caller: DsarCaller,
  id: string,
  input: { code?: string | undefined; reason?: string | undefined },
): Promise<DsarView> {
  const tenantId = callerTenant(caller);
  if (caller.kind === 'team') authorize(caller.auth, 'dsar:manage');
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('verify', row.stage)) refuse(row, 'verify');
  const hasCode = input.code !== undefined;
  if (hasCode === (input.reason !== undefined))
    throw invalid('code', 'give either the one-time code or, as a team member, a reason');
  let method: string;
  if (hasCode) {
    const now = deps.now();
    if (!row.verification_code_hash || !row.verification_expires_at)
      throw new FerryError('verification_failed', 'no code was sent for this request', { attempts_left: 0 });
    if (row.verification_attempts >= CODE_ATTEMPTS)
      throw new FerryError('verification_failed', 'the code was tried three times; ask for a new one', {
        attempts_left: 0,
      });
    if (row.verification_expires_at.getTime() <= now.getTime())
      throw new FerryError('verification_failed', 'the code has expired; ask for a new one', {
        attempts_left: 0,
      });
    if (!codeMatches(deps.config, row.id, String(input.code).trim(), row.verification_code_hash)) {
      const used = row.verification_attempts + 1;
      await dsarDb(deps.database)
        .updateTable('dsar_requests')
        .set({ verification_attempts: sql`verification_attempts + 1` as unknown as number })
        .where('id', '=', row.id)
        .execute();
      throw new FerryError('verification_failed', 'the code is not right', {
        attempts_left: Math.max(0, CODE_ATTEMPTS - used),
      });
    }
    method = 'email_code';
  } else {
    requireTeam(caller);
    const reason = String(input.reason).trim();
    if (reason.length < 3 || reason.length > 1000)
      throw invalid('reason', 'must say how the identity was checked (3 to 1000 characters)');
    method = 'team_member';
  }
  const now = deps.now();
  await transition(deps, caller, row, {
    stage: 'verified',
    from: ALLOWED_STAGES.verify,
    action: 'dsar.verified',
    set: {
      verified_at: now,
      verification_method: method,
      verification_code_hash: null,
      verification_expires_at: null,
    },
    error: method === 'team_member' ? `verified by a team member: ${String(input.reason).trim()}` : null,
  });
  const verified = await loadDsar(deps.database, tenantId, id);
  const next = afterVerification(verified);
  await transition(deps, 'system', verified, { stage: next, action: `dsar.${next}` });
  return getDsarView(deps, tenantId, id);
}

/** `POST /api/v1/dsar/{id}/resend-code`: a new code replaces the old one. */
export async function resendCode(deps: DsarDeps, caller: DsarCaller, id: string): Promise<DsarView> {
  const tenantId = callerTenant(caller);
  if (caller.kind === 'team') authorize(caller.auth, 'dsar:manage');
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('verify', row.stage)) refuse(row, 'verify');
  if (!row.subject?.email) throw invalid('subject', 'the request names no email to send a code to');
  if (!deps.config.smtp || !deps.queue)
    throw new FerryError(
      'conflict',
      'no mail server is configured (FERRY_SMTP_URL): verify as a team member instead',
    );
  // Asked for: the job sends a new code even if one went out a moment ago.
  await dsarDb(deps.database)
    .updateTable('dsar_requests')
    .set({ verification_sent_at: null })
    .where('id', '=', id)
    .execute();
  await deps.queue.send(DSAR_CODE_JOB, { id });
  return getDsarView(deps, tenantId, id);
}

export async function approveDsar(deps: DsarDeps, caller: DsarCaller, id: string): Promise<DsarView> {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('approve', row.stage)) refuse(row, 'approve');
  await transition(deps, caller, row, {
    stage: 'in_progress',
    action: 'dsar.approved',
    set: { approved_at: deps.now() },
  });
  return getDsarView(deps, tenantId, id);
}

function reasonOf(reason: string | undefined): string {
  const text = (reason ?? '').trim();
  if (text.length < 3 || text.length > 2000) throw invalid('reason', 'is required (3 to 2000 characters)');
  return text;
}

export async function denyDsar(deps: DsarDeps, caller: DsarCaller, id: string, reason: string | undefined) {
  requireTeam(caller);
  const text = reasonOf(reason);
  const tenantId = callerTenant(caller);
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('deny', row.stage)) refuse(row, 'deny');
  await transition(deps, caller, row, {
    stage: 'denied',
    from: ALLOWED_STAGES.deny,
    action: 'dsar.denied',
    set: { closed_reason: text, outcome: 'denied', completed_at: deps.now() },
    error: text,
  });
  return getDsarView(deps, tenantId, id);
}

export async function cancelDsar(
  deps: DsarDeps,
  caller: DsarCaller,
  id: string,
  reason?: string | undefined,
) {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('cancel', row.stage)) refuse(row, 'cancel');
  const text = reason?.trim() || 'cancelled';
  await transition(deps, caller, row, {
    stage: 'cancelled',
    from: ALLOWED_STAGES.cancel,
    action: 'dsar.cancelled',
    set: { closed_reason: text, outcome: 'cancelled', completed_at: deps.now() },
    error: text,
  });
  return getDsarView(deps, tenantId, id);
}

/**
 * `POST /api/v1/dsar/{id}/extend`: once per request, with a reason that is sent to the
 * subject. GDPR: by two further months, and only within the first month; CCPA: by 45 days.
 */
export async function extendDsar(deps: DsarDeps, caller: DsarCaller, id: string, reason: string | undefined) {
  requireTeam(caller);
  const text = reasonOf(reason);
  const tenantId = callerTenant(caller);
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('extend', row.stage)) refuse(row, 'extend');
  if (row.extended_at)
    throw new FerryError(
      'conflict',
      `data subject request ${row.id} was already extended; a deadline moves once`,
    );
  const now = deps.now();
  if (now.getTime() > row.original_due_at.getTime())
    throw new FerryError(
      'conflict',
      'the extension must be notified to the subject before the first deadline, which has passed',
    );
  const tenant = await loadTenant(deps.database, tenantId);
  const due = extendedDue({
    regulation: row.regulation,
    receivedAt: row.received_at,
    timeZone: tenant.timezone,
  });
  const extendedRow = { ...row, extended_at: now };
  await transition(deps, caller, extendedRow, {
    stage: row.stage,
    keepStage: true,
    from: ALLOWED_STAGES.extend,
    action: 'dsar.extended',
    set: { extended_at: now, extension_reason: text, due_at: due, overdue_notified_at: null },
    error: text,
  });
  if (deps.queue && deps.config.smtp && row.subject?.email) await deps.queue.send(DSAR_NOTICE_JOB, { id });
  return getDsarView(deps, tenantId, id);
}

/** `POST /api/v1/dsar/{id}/run`, `ferry dsar run`: resumes a failed request at its failed step. */
export async function rerunDsar(deps: DsarDeps, caller: DsarCaller, id: string): Promise<DsarView> {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  const row = await loadDsar(deps.database, tenantId, id);
  if (!allows('run', row.stage)) refuse(row, 'run');
  await transition(deps, caller, row, {
    stage: 'in_progress',
    action: 'dsar.resumed',
    set: { error_message: null },
  });
  return getDsarView(deps, tenantId, id);
}

/**
 * `POST /api/v1/dsar/{id}/plan`: the dry run of an open erasure request — per table and
 * column what it would delete, anonymize, scrub or keep, the files it would remove and the
 * holds that exempt data — without changing anything.
 */
export async function planDsar(deps: DsarDeps, caller: DsarCaller, id: string): Promise<ErasurePlan> {
  requireTeam(caller);
  const row = await loadDsar(deps.database, callerTenant(caller), id);
  if (row.type !== 'erasure')
    throw new FerryError('conflict', `request ${id} is ${row.type}: only an erasure has a plan`);
  if (!row.subject)
    throw new FerryError('conflict', `request ${id} is ${row.status}: it no longer names its subject`);
  const subject = await resolveSubject(deps.database, row.tenant_id, row.subject);
  return planErasure(deps.database, row.tenant_id, subject, { secretKey: secretKeyOf(deps.config) });
}

/** `GET /api/v1/dsar/{id}/receipt`: the signed receipt of a completed request. */
export async function dsarReceipt(deps: DsarDeps, caller: DsarCaller, id: string): Promise<ReceiptDocument> {
  requireTeam(caller);
  const row = await loadDsar(deps.database, callerTenant(caller), id);
  if (!row.receipt_id)
    throw new FerryError(
      'not_found',
      `request ${id} has no receipt yet (status ${row.status}); receipts come with completion`,
    );
  return (await getReceipt(deps.database, row.tenant_id, { receiptId: row.receipt_id })).document;
}

/** The job's side: the run finished. */
export async function completeDsar(
  deps: DsarDeps,
  row: DsarRow,
  outcome: { outcome: string; result: Record<string, unknown>; receiptId: string | null },
): Promise<void> {
  await transition(deps, 'system', row, {
    stage: 'completed',
    action: 'dsar.completed',
    set: {
      completed_at: deps.now(),
      outcome: outcome.outcome,
      result: JSON.stringify(outcome.result),
      receipt_id: outcome.receiptId,
      failed_step: null,
      error_message: null,
    },
  });
}

/** The job's side: a step failed; running the request again resumes there. */
export async function failDsar(deps: DsarDeps, row: DsarRow, step: string, message: string): Promise<void> {
  await transition(deps, 'system', row, {
    stage: 'failed',
    action: 'dsar.failed',
    set: { failed_step: step, error_message: message.slice(0, 2000) },
    error: `${step}: ${message}`,
  });
}

/** Records what a run step produced, so a resumed run skips it. */
export async function saveProgress(
  deps: DsarDeps,
  row: DsarRow,
  result: Record<string, unknown>,
): Promise<DsarRow> {
  const now = deps.now();
  await dsarDb(deps.database)
    .updateTable('dsar_requests')
    .set({ result: JSON.stringify(result), updated_at: now })
    .where('id', '=', row.id)
    .execute();
  return loadDsar(deps.database, row.tenant_id, row.id);
}

async function announce(deps: DsarDeps, tenantId: string, id: string, action: string): Promise<void> {
  const row = await loadDsar(deps.database, tenantId, id);
  const tenant = await loadTenant(deps.database, tenantId);
  const view = presentDsar(row, deps.now(), tenant.timezone);
  const event = action === 'dsar.approved' || action === 'dsar.resumed' ? 'dsar.in_progress' : action;
  await emitEvent(
    deps.database,
    tenantId,
    event,
    {
      dsar_id: id,
      data: {
        type: view.type,
        regulation: view.regulation,
        status: view.status,
        source: view.source,
        received_at: view.received_at,
        due_at: view.due_at,
        days_left: view.days_left,
        overdue: view.overdue,
        outcome: view.outcome,
      },
    },
    { now: deps.now },
  );
}

/** The daily check: fires `dsar.overdue` once for each open request past its deadline. */
export async function notifyOverdue(deps: DsarDeps): Promise<number> {
  const now = deps.now();
  const rows = await dsarDb(deps.database)
    .selectFrom('dsar_requests')
    .selectAll()
    .where('status', 'not in', ['completed', 'denied', 'cancelled'])
    .where('due_at', '<', now)
    .where('overdue_notified_at', 'is', null)
    .where('duplicate_of', 'is', null)
    .limit(1000)
    .execute();
  for (const row of rows) {
    const claimed = await dsarDb(deps.database)
      .updateTable('dsar_requests')
      .set({ overdue_notified_at: now })
      .where('id', '=', row.id)
      .where('overdue_notified_at', 'is', null)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) !== 1) continue;
    await auditInsert(deps.database, {
      tenantId: row.tenant_id,
      actor: 'system',
      action: 'dsar.overdue',
      targetId: row.id,
      dataType: row.type,
      success: true,
      occurredAt: now,
    }).execute();
    await announce(deps, row.tenant_id, row.id, 'dsar.overdue');
  }
  return rows.length;
}

/** A request as the API shows it. Identifiers appear only while the request is open. */
export interface DsarView {
  id: string;
  type: DsarType;
  regulation: Regulation;
  source: DsarSource;
  status: DsarStatus;
  stage: DsarStage;
  subject: SubjectIdentifiers | null;
  subject_key: string;
  changes: Record<string, unknown> | null;
  note: string | null;
  excessive: boolean;
  excessive_rule: string | null;
  duplicate_of: string | null;
  received_at: string;
  confirm_by: string | null;
  due_at: string;
  original_due_at: string;
  days_left: number;
  overdue: boolean;
  extended_at: string | null;
  extension_reason: string | null;
  verified_at: string | null;
  verification_method: string | null;
  approved_at: string | null;
  completed_at: string | null;
  outcome: string | null;
  closed_reason: string | null;
  failed_step: string | null;
  error: string | null;
  result: Record<string, unknown> | null;
  receipt_id: string | null;
  links: { self: string; receipt: string | null };
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentDsar(row: DsarRow, now: Date, timeZone: string): DsarView {
  const open = !isClosedDsar(row.status);
  return {
    id: row.id,
    type: row.type,
    regulation: row.regulation,
    source: row.source,
    status: row.status,
    stage: row.stage,
    subject: row.subject,
    subject_key: row.subject_key,
    changes: row.changes,
    note: row.note,
    excessive: row.excessive,
    excessive_rule: row.excessive ? CCPA_EXCESSIVE_RULE : null,
    duplicate_of: row.duplicate_of,
    received_at: row.received_at.toISOString(),
    confirm_by: iso(row.confirm_by),
    due_at: row.due_at.toISOString(),
    original_due_at: row.original_due_at.toISOString(),
    days_left: daysLeft(row.due_at, row.completed_at ?? now, timeZone),
    overdue: open
      ? row.due_at.getTime() < now.getTime()
      : (row.completed_at?.getTime() ?? 0) > row.due_at.getTime(),
    extended_at: iso(row.extended_at),
    extension_reason: row.extension_reason,
    verified_at: iso(row.verified_at),
    verification_method: row.verification_method,
    approved_at: iso(row.approved_at),
    completed_at: iso(row.completed_at),
    outcome: row.outcome,
    closed_reason: row.closed_reason,
    failed_step: row.failed_step,
    error: row.error_message,
    result: row.result,
    receipt_id: row.receipt_id,
    links: {
      self: `/api/v1/dsar/${row.id}`,
      receipt: row.receipt_id ? `/api/v1/dsar/${row.id}/receipt` : null,
    },
  };
}

export interface DsarListQuery {
  status?: string | undefined;
  type?: string | undefined;
  overdue?: boolean | undefined;
  due_before?: string | undefined;
  cursor?: string | undefined;
  limit?: number | undefined;
}

function dueBefore(text: string): Date {
  const date = /^\d{4}-\d{2}-\d{2}$/.test(text) ? new Date(`${text}T00:00:00Z`) : new Date(text);
  if (Number.isNaN(date.getTime()))
    throw invalid('due_before', 'must be a date (YYYY-MM-DD) or an ISO 8601 time');
  return date;
}

function listQuery(deps: DsarDeps, tenantId: string, query: DsarListQuery) {
  let q = dsarDb(deps.database)
    .selectFrom('dsar_requests')
    .selectAll()
    .select(instantText('received_at').as('cursor_at'))
    .where('tenant_id', '=', tenantId);
  if (query.status) q = q.where('status', '=', oneOf('status', query.status, DSAR_STATUSES));
  if (query.type) q = q.where('type', '=', oneOf('type', query.type, DSAR_TYPES));
  const now = deps.now();
  if (query.overdue === true)
    q = q.where('status', 'not in', ['completed', 'denied', 'cancelled']).where('due_at', '<', now);
  if (query.overdue === false)
    q = q.where((eb) =>
      eb.or([eb('status', 'in', ['completed', 'denied', 'cancelled']), eb('due_at', '>=', now)]),
    );
  if (query.due_before) q = q.where('due_at', '<', dueBefore(query.due_before));
  return q;
}

/** `GET /api/v1/dsar`: newest first, filtered, cursor-paged. */
export async function listDsars(
  deps: DsarDeps,
  caller: DsarCaller,
  query: DsarListQuery,
): Promise<{ data: DsarView[]; next_cursor: string | null }> {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  const limit = query.limit ?? 50;
  let q = listQuery(deps, tenantId, query);
  if (query.cursor) q = q.where(afterPosition('received_at', decodeCursor(query.cursor, 'pipe'), 'desc'));
  const rows = await q
    .orderBy('received_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit + 1)
    .execute();
  const tenant = await loadTenant(deps.database, tenantId);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    data: page.map((r) => presentDsar(r as DsarRow, deps.now(), tenant.timezone)),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ at: last.cursor_at, id: last.id }, 'pipe') : null,
  };
}

/** The request register's columns (`GET /api/v1/dsar?format=csv`), for record-keeping. */
export const REGISTER_COLUMNS = [
  'id',
  'type',
  'regulation',
  'received',
  'verified',
  'due',
  'completed',
  'status',
  'outcome',
] as const;

/** Every request matching the filters as register rows, oldest first, read in pages. */
export async function* registerRows(
  deps: DsarDeps,
  caller: DsarCaller,
  query: DsarListQuery,
): AsyncGenerator<string[]> {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  let position: { at: string; id: string } | null = null;
  for (;;) {
    let q = listQuery(deps, tenantId, query);
    if (position) q = q.where(afterPosition('received_at', position, 'asc'));
    const rows = await q.orderBy('received_at', 'asc').orderBy('id', 'asc').limit(500).execute();
    for (const r of rows)
      yield [
        r.id,
        r.type,
        r.regulation,
        r.received_at.toISOString(),
        iso(r.verified_at) ?? '',
        r.due_at.toISOString(),
        iso(r.completed_at) ?? '',
        r.status,
        r.outcome ?? '',
      ];
    const last = rows.at(-1);
    if (!last || rows.length < 500) return;
    position = { at: last.cursor_at, id: last.id };
  }
}

export interface DsarSummary {
  open_by_status: Record<string, number>;
  open: number;
  due_this_week: number;
  overdue: number;
  completed_last_12_months: number;
  median_days_to_complete: number | null;
}

/** `GET /api/v1/dsar/summary`: the operator's view of the register. */
export async function dsarSummary(deps: DsarDeps, caller: DsarCaller): Promise<DsarSummary> {
  requireTeam(caller);
  const tenantId = callerTenant(caller);
  const now = deps.now();
  const db = dsarDb(deps.database);
  const open = await db
    .selectFrom('dsar_requests')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .where('tenant_id', '=', tenantId)
    .where('status', 'not in', ['completed', 'denied', 'cancelled'])
    .groupBy('status')
    .execute();
  const counts = await db
    .selectFrom('dsar_requests')
    .select([
      sql<number>`count(*) FILTER (WHERE due_at < ${now})`.as('overdue'),
      sql<number>`count(*) FILTER (WHERE due_at >= ${now} AND due_at < ${new Date(now.getTime() + 7 * 86_400_000)})`.as(
        'week',
      ),
    ])
    .where('tenant_id', '=', tenantId)
    .where('status', 'not in', ['completed', 'denied', 'cancelled'])
    .executeTakeFirstOrThrow();
  const done = await db
    .selectFrom('dsar_requests')
    .select([
      sql<number>`count(*)`.as('n'),
      sql<
        number | null
      >`percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - received_at) / 86400)`.as(
        'median',
      ),
    ])
    .where('tenant_id', '=', tenantId)
    .where('status', '=', 'completed')
    .where('completed_at', '>', new Date(now.getTime() - YEAR_MS))
    .executeTakeFirstOrThrow();
  const byStatus: Record<string, number> = {};
  for (const r of open) byStatus[r.status] = Number(r.n);
  return {
    open_by_status: byStatus,
    open: Object.values(byStatus).reduce((a, b) => a + b, 0),
    due_this_week: Number(counts.week),
    overdue: Number(counts.overdue),
    completed_last_12_months: Number(done.n),
    median_days_to_complete: done.median == null ? null : Math.round(Number(done.median) * 10) / 10,
  };
}
