import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import { COLUMN_CLASSES, type ColumnClass } from '../datamap/types.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type OutboundPolicy, outboundPolicy } from '../lib/ssrf.ts';
import { checkEndpointUrl } from '../webhooks/endpoints.ts';
import { postWebhook } from '../webhooks/post.ts';

/**
 * The third-party processors registry (docs/processors.md): who else holds the tenant's
 * data, what of it (data-map categories), where, for how long, how an erasure reaches them,
 * and how a person gets their data out of them. Erasure notifies each processor that holds a
 * category of the erased person's data, once per request, and tracks the acknowledgement.
 */

/** Column classes that are not personal data a third party receives: keys, credentials, bookkeeping, plain facts. */
const NOT_SHARED: readonly ColumnClass[] = ['identifier', 'secret', 'internal', 'none'];

/** The data map's personal column classes: contact, network, location, free_text. */
export const PERSONAL_CLASSES: readonly ColumnClass[] = COLUMN_CLASSES.filter((c) => !NOT_SHARED.includes(c));

/**
 * The data-map column classes a processor may receive: identifiers, and every personal class
 * of the data map (so a class added to `COLUMN_CLASSES` is accepted here without a change).
 */
export const PROCESSOR_CATEGORIES: readonly ColumnClass[] = ['identifier', ...PERSONAL_CLASSES];
export const DELETION_CHANNELS = ['email', 'webhook', 'manual'] as const;
export type DeletionChannel = (typeof DELETION_CHANNELS)[number];

/** A third party that processes the tenant's data. */
export interface Processor {
  readonly id: string;
  readonly name: string;
  readonly purpose: string;
  readonly data_categories: string[];
  readonly location: string;
  readonly retention: string;
  /** How a deletion instruction reaches them. */
  readonly channel: DeletionChannel;
  /** An email address (email) or an https URL (webhook). */
  readonly deletion_contact: string | null;
  readonly deletion_instructions: string | null;
  readonly included_in_exports: boolean;
  readonly export_instructions_url: string | null;
  readonly created_at: string;
  readonly updated_at: string;
}

export interface ProcessorInput {
  name?: string | undefined;
  purpose?: string | undefined;
  data_categories?: string[] | undefined;
  location?: string | undefined;
  retention?: string | undefined;
  deletion_channel?: string | undefined;
  deletion_contact?: string | null | undefined;
  deletion_instructions?: string | null | undefined;
  included_in_exports?: boolean | undefined;
  export_instructions_url?: string | null | undefined;
}

interface Row {
  id: string;
  name: string;
  purpose: string;
  data_categories: string[];
  location: string;
  retention: string;
  deletion_channel: DeletionChannel;
  deletion_contact: string | null;
  deletion_instructions: string | null;
  included_in_exports: boolean;
  export_instructions_url: string | null;
  created_at: Date;
  updated_at: Date;
}

const present = (r: Row): Processor => ({
  id: r.id,
  name: r.name,
  purpose: r.purpose,
  data_categories: r.data_categories,
  location: r.location,
  retention: r.retention,
  channel: r.deletion_channel,
  deletion_contact: r.deletion_contact,
  deletion_instructions: r.deletion_instructions,
  included_in_exports: r.included_in_exports,
  export_instructions_url: r.export_instructions_url,
  created_at: new Date(r.created_at).toISOString(),
  updated_at: new Date(r.updated_at).toISOString(),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function text(field: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || !value.trim()) throw invalid(field, 'is required');
  if (value.trim().length > max) throw invalid(field, `is longer than ${max} characters`);
  return value.trim();
}

/** An absolute web URL; `plain` also accepts http (the API then holds a webhook URL to the outbound rules). */
function webUrl(field: string, value: string, plain = false): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(field, `"${value}" is not a URL`);
  }
  if (url.protocol !== 'https:' && !(plain && url.protocol === 'http:'))
    throw invalid(field, 'must be an https URL');
  if (url.username || url.password) throw invalid(field, 'must not contain a user name or password');
  return url.toString();
}

/** The processor as it will be stored: every field checked, the deletion channel's contact fitting it. */
function checked(input: ProcessorInput, base?: Processor) {
  const merged = {
    name: input.name ?? base?.name,
    purpose: input.purpose ?? base?.purpose,
    data_categories: input.data_categories ?? base?.data_categories,
    location: input.location ?? base?.location,
    retention: input.retention ?? base?.retention,
    deletion_channel: input.deletion_channel ?? base?.channel,
    deletion_contact:
      input.deletion_contact !== undefined ? input.deletion_contact : (base?.deletion_contact ?? null),
    deletion_instructions:
      input.deletion_instructions !== undefined
        ? input.deletion_instructions
        : (base?.deletion_instructions ?? null),
    included_in_exports: input.included_in_exports ?? base?.included_in_exports ?? false,
    export_instructions_url:
      input.export_instructions_url !== undefined
        ? input.export_instructions_url
        : (base?.export_instructions_url ?? null),
  };
  const categories = merged.data_categories;
  if (!Array.isArray(categories) || !categories.length)
    throw invalid('data_categories', 'name at least one category of data the processor receives', [
      ...PROCESSOR_CATEGORIES,
    ]);
  categories.forEach((c, i) => {
    if (!(PROCESSOR_CATEGORIES as readonly string[]).includes(c))
      throw invalid(`data_categories[${i}]`, `"${c}" is not a data category`, [...PROCESSOR_CATEGORIES]);
  });
  const channel = merged.deletion_channel;
  if (!(DELETION_CHANNELS as readonly string[]).includes(String(channel)))
    throw invalid('deletion_channel', `"${String(channel)}" is not a deletion channel`, [
      ...DELETION_CHANNELS,
    ]);
  let contact = merged.deletion_contact?.trim() || null;
  if (channel === 'email') {
    if (!contact || !EMAIL.test(contact) || contact.length > 254)
      throw invalid('deletion_contact', 'the email address deletion instructions go to');
  } else if (channel === 'webhook') {
    if (!contact) throw invalid('deletion_contact', 'the https URL deletion instructions are posted to');
    contact = webUrl('deletion_contact', contact, true);
  }
  const instructions = merged.deletion_instructions?.trim() || null;
  if (channel === 'manual' && !instructions)
    throw invalid(
      'deletion_instructions',
      'say how a deletion reaches this processor (it is shown on each erasure)',
    );
  if (instructions && instructions.length > 4000)
    throw invalid('deletion_instructions', 'is longer than 4000 characters');
  const exportUrl = merged.export_instructions_url?.trim()
    ? webUrl('export_instructions_url', merged.export_instructions_url.trim())
    : null;
  return {
    name: text('name', merged.name, 200),
    purpose: text('purpose', merged.purpose, 1000),
    data_categories: [...new Set(categories)],
    location: text('location', merged.location, 200),
    retention: text('retention', merged.retention, 500),
    deletion_channel: channel as DeletionChannel,
    deletion_contact: contact,
    deletion_instructions: instructions,
    included_in_exports: Boolean(merged.included_in_exports),
    export_instructions_url: exportUrl,
  };
}

export interface ProcessorActor {
  actor: string;
  ip?: string | null;
  userAgent?: string | null;
}

async function audit(database: Database, tenantId: string, who: ProcessorActor, action: string, id: string) {
  await recordAudit(database, {
    tenantId,
    actor: who.actor,
    action,
    targetId: id,
    dataType: 'processors',
    ip: who.ip ?? null,
    userAgent: who.userAgent ?? null,
    success: true,
  });
}

/** The tenant's registered processors, by name. Erasure asks this one function. */
export async function tenantProcessors(database: Database, tenantId: string): Promise<Processor[]> {
  const r = await sql<Row>`SELECT * FROM processors WHERE tenant_id = ${tenantId} ORDER BY name, id`.execute(
    database.db,
  );
  return r.rows.map(present);
}

export async function getProcessor(database: Database, tenantId: string, id: string): Promise<Processor> {
  if (!UUID.test(id)) throw new FerryError('not_found', `no processor ${id}`);
  const r = await sql<Row>`SELECT * FROM processors WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(
    database.db,
  );
  if (!r.rows[0]) throw new FerryError('not_found', `no processor ${id}`);
  return present(r.rows[0]);
}

export async function createProcessor(
  database: Database,
  tenantId: string,
  input: ProcessorInput,
  who: ProcessorActor,
): Promise<Processor> {
  const p = checked(input);
  const id = randomUUID();
  const now = new Date();
  const r = await sql<Row>`
    INSERT INTO processors (id, tenant_id, name, purpose, data_categories, location, retention, deletion_channel,
      deletion_contact, deletion_instructions, included_in_exports, export_instructions_url, created_at, updated_at)
    VALUES (${id}, ${tenantId}, ${p.name}, ${p.purpose}, ${p.data_categories}, ${p.location}, ${p.retention},
      ${p.deletion_channel}, ${p.deletion_contact}, ${p.deletion_instructions}, ${p.included_in_exports},
      ${p.export_instructions_url}, ${now}, ${now})
    ON CONFLICT (tenant_id, name) DO NOTHING RETURNING *`.execute(database.db);
  if (!r.rows[0]) throw new FerryError('conflict', `a processor named "${p.name}" is already registered`);
  await audit(database, tenantId, who, 'processor.created', id);
  return present(r.rows[0]);
}

export async function updateProcessor(
  database: Database,
  tenantId: string,
  id: string,
  input: ProcessorInput,
  who: ProcessorActor,
): Promise<Processor> {
  const base = await getProcessor(database, tenantId, id);
  const p = checked(input, base);
  try {
    await sql`UPDATE processors SET name = ${p.name}, purpose = ${p.purpose}, data_categories = ${p.data_categories},
      location = ${p.location}, retention = ${p.retention}, deletion_channel = ${p.deletion_channel},
      deletion_contact = ${p.deletion_contact}, deletion_instructions = ${p.deletion_instructions},
      included_in_exports = ${p.included_in_exports}, export_instructions_url = ${p.export_instructions_url},
      updated_at = ${new Date()}
      WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(database.db);
  } catch (err) {
    if (String((err as { code?: string }).code) === '23505')
      throw new FerryError('conflict', `a processor named "${p.name}" is already registered`);
    throw err;
  }
  await audit(database, tenantId, who, 'processor.updated', id);
  return getProcessor(database, tenantId, id);
}

export async function deleteProcessor(
  database: Database,
  tenantId: string,
  id: string,
  who: ProcessorActor,
): Promise<Processor> {
  const processor = await getProcessor(database, tenantId, id);
  await sql`DELETE FROM processors WHERE tenant_id = ${tenantId} AND id = ${id}`.execute(database.db);
  await audit(database, tenantId, who, 'processor.deleted', id);
  return processor;
}

// ---------------------------------------------------------------------------------------
// Erasure notices.

export type NoticeStatus = 'pending' | 'sent' | 'failed' | 'acknowledged';

/** One processor's notice of one erasure request. */
export interface ProcessorNotice {
  readonly notification_id: string;
  /** The erasure request (the DSAR id) the notice belongs to. */
  readonly request_id: string;
  readonly processor_id: string;
  /** The processor's name. */
  readonly processor: string;
  readonly channel: string;
  /** `pending` (manual: the team carries out the instructions), `sent`, `failed` or `acknowledged`. */
  readonly status: NoticeStatus;
  /** When the email or webhook went out; null while pending or failed. */
  readonly notified_at: string | null;
  /** When the processor confirmed the deletion. */
  readonly acknowledged_at: string | null;
  /** Manual processors: what the team must do. */
  readonly instructions: string | null;
  /** Why the last attempt to send failed. */
  readonly error: string | null;
}

export interface NoticeDeps {
  readonly database: Database;
  /** Sends the notices of `email` processors; without it they fail (and a later call retries them). */
  readonly mailer?: Mailer | undefined;
  readonly now?: (() => Date) | undefined;
  /**
   * The outbound guard for `webhook` processors (`outboundPolicy(config.outboundAllow)`);
   * without it only public addresses are reached, as with an empty FERRY_OUTBOUND_ALLOW.
   */
  readonly outbound?: OutboundPolicy | undefined;
  /** How long a webhook may take to answer. */
  readonly timeoutMs?: number | undefined;
}

const WEBHOOK_TIMEOUT_MS = 10_000;
const STRICT = outboundPolicy([]);

/** The JSON body POSTed to a `webhook` processor: references only, no personal data. */
export interface ErasureWebhookBody {
  readonly type: 'erasure_request';
  readonly request_id: string;
  readonly notification_id: string;
  readonly tenant_id: string;
  /** The controller: the tenant's name. */
  readonly controller: string;
  readonly processor: string;
  readonly data_categories: string[];
  readonly requested_at: string;
}

/**
 * Tells each processor of the tenant whose `data_categories` meet `categories` (the
 * data-map column classes of the erased person's data) to delete what it holds about them.
 *
 * Contract, for erasure and any other caller:
 * - One `processor_notifications` row per request and processor (unique on both): a call
 *   repeated with the same `requestId` (a retried erasure job) sends nothing that was
 *   already sent, acknowledged or left pending; it only sends again the notices whose
 *   last attempt `failed`.
 * - `email`: one message through `deps.mailer` to the processor's `deletion_contact`;
 *   `webhook`: one JSON POST (`ErasureWebhookBody`) to its https URL through the outbound
 *   guard (`deps.outbound`), no redirects followed, a 2xx answer within `timeoutMs` counts;
 *   `manual`: no message, the notice stays `pending` and carries the processor's
 *   `deletion_instructions` for the team.
 * - Neither message names the person: the request id is the reference, and the processor
 *   gets the identifiers over the channel agreed with the tenant.
 * - A failed send does not throw: the notice is `failed` with its `error`.
 * - Answers every notice of the request (also those of earlier calls), by processor name:
 *   `{ processor, channel, status, notified_at, acknowledged_at, ... }`.
 */
export async function notifyProcessors(
  deps: NoticeDeps,
  input: { tenantId: string; requestId: string; categories: readonly string[] },
): Promise<ProcessorNotice[]> {
  const { database } = deps;
  if (!UUID.test(input.requestId)) throw invalid('request_id', `"${input.requestId}" is not a request id`);
  const now = (deps.now ?? (() => new Date()))();
  const processors = (await tenantProcessors(database, input.tenantId)).filter((p) =>
    p.data_categories.some((c) => input.categories.includes(c)),
  );
  if (!processors.length) return listNotices(database, input.tenantId, input.requestId);
  const tenant = await database.db
    .selectFrom('tenants')
    .select('name')
    .where('id', '=', input.tenantId)
    .executeTakeFirst();
  for (const p of processors) {
    const id = await claimNotice(database, input, p, now);
    if (!id || p.channel === 'manual') continue;
    const categories = p.data_categories.filter((c) => input.categories.includes(c));
    let error: string | null = null;
    try {
      if (p.channel === 'email') {
        if (!deps.mailer) throw new Error('no SMTP server is configured (FERRY_SMTP_URL)');
        await deps.mailer.send({
          to: [p.deletion_contact!],
          subject: `Deletion request ${input.requestId} from ${tenant?.name ?? input.tenantId}`,
          text:
            `${tenant?.name ?? 'Our company'} received a request from a data subject to erase their personal data ` +
            `(GDPR Art. 17), and asks you, as our processor "${p.name}", to delete the data you process for us ` +
            `about this person (${categories.join(', ')}) and to confirm when it is done (Art. 28(3)(g)).\n\n` +
            `Reference: ${input.requestId}\nTenant: ${input.tenantId}\n\n` +
            'This message holds none of the person’s identifiers; we send them over our agreed channel.\n',
        });
      } else {
        const body: ErasureWebhookBody = {
          type: 'erasure_request',
          request_id: input.requestId,
          notification_id: id,
          tenant_id: input.tenantId,
          controller: tenant?.name ?? '',
          processor: p.name,
          data_categories: categories,
          requested_at: now.toISOString(),
        };
        const outbound = deps.outbound ?? STRICT;
        const url = await checkEndpointUrl(p.deletion_contact!, outbound);
        const res = await postWebhook(
          url,
          { 'content-type': 'application/json', 'user-agent': 'Ferry', 'idempotency-key': id },
          JSON.stringify(body),
          { outbound, timeoutMs: deps.timeoutMs ?? WEBHOOK_TIMEOUT_MS },
        );
        if (res.error) throw new Error(res.error);
      }
    } catch (err) {
      error = (err as Error).message.replace(/^url: /, '').slice(0, 500) || 'failed';
    }
    await sql`UPDATE processor_notifications SET status = ${error ? 'failed' : 'sent'},
      notified_at = ${error ? null : now}, error = ${error} WHERE id = ${id}`.execute(database.db);
  }
  return listNotices(database, input.tenantId, input.requestId);
}

/**
 * The notice this call may send, or null: a new row for the request and processor, or a
 * `failed` one taken back (atomically, so two concurrent retries do not both send).
 */
async function claimNotice(
  database: Database,
  input: { tenantId: string; requestId: string },
  p: Processor,
  now: Date,
): Promise<string | null> {
  const inserted = await sql<{ id: string }>`
    INSERT INTO processor_notifications (id, tenant_id, processor_id, request_id, channel, status, created_at)
    VALUES (${randomUUID()}, ${input.tenantId}, ${p.id}, ${input.requestId}, ${p.channel}, 'pending', ${now})
    ON CONFLICT (request_id, processor_id) DO NOTHING RETURNING id`.execute(database.db);
  if (inserted.rows[0]) return inserted.rows[0].id;
  const retried = await sql<{ id: string }>`
    UPDATE processor_notifications SET status = 'pending', channel = ${p.channel}, error = NULL
    WHERE tenant_id = ${input.tenantId} AND request_id = ${input.requestId} AND processor_id = ${p.id}
      AND status = 'failed'
    RETURNING id`.execute(database.db);
  return retried.rows[0]?.id ?? null;
}

interface NoticeRow {
  id: string;
  processor_id: string;
  request_id: string;
  name: string;
  channel: string;
  status: NoticeStatus;
  notified_at: Date | null;
  acknowledged_at: Date | null;
  deletion_instructions: string | null;
  error: string | null;
}

const presentNotice = (n: NoticeRow): ProcessorNotice => ({
  notification_id: n.id,
  request_id: n.request_id,
  processor_id: n.processor_id,
  processor: n.name,
  channel: n.channel,
  status: n.status,
  notified_at: n.notified_at ? new Date(n.notified_at).toISOString() : null,
  acknowledged_at: n.acknowledged_at ? new Date(n.acknowledged_at).toISOString() : null,
  instructions: n.channel === 'manual' ? n.deletion_instructions : null,
  error: n.error,
});

/** The notices of one erasure request, by processor name. */
export async function listNotices(
  database: Database,
  tenantId: string,
  requestId: string,
): Promise<ProcessorNotice[]> {
  const r = await sql<NoticeRow>`
    SELECT n.id, n.processor_id, n.request_id, p.name, n.channel, n.status, n.notified_at, n.acknowledged_at,
      p.deletion_instructions, n.error
    FROM processor_notifications n JOIN processors p ON p.id = n.processor_id
    WHERE n.tenant_id = ${tenantId} AND n.request_id = ${requestId} ORDER BY p.name, n.id`.execute(
    database.db,
  );
  return r.rows.map(presentNotice);
}

export const NOTICE_STATUSES: readonly NoticeStatus[] = ['pending', 'sent', 'failed', 'acknowledged'];

/** One processor's notices, newest first: to find those still waiting for an acknowledgement. */
export async function processorNotices(
  database: Database,
  tenantId: string,
  processorId: string,
  filter: { status?: string | undefined; requestId?: string | undefined; limit?: number | undefined } = {},
): Promise<ProcessorNotice[]> {
  const processor = await getProcessor(database, tenantId, processorId);
  if (filter.status !== undefined && !(NOTICE_STATUSES as readonly string[]).includes(filter.status))
    throw invalid('status', `"${filter.status}" is not a notice status`, NOTICE_STATUSES);
  if (filter.requestId !== undefined && !UUID.test(filter.requestId))
    throw invalid('request_id', `"${filter.requestId}" is not a request id`);
  const limit = Math.min(Math.max(Math.trunc(filter.limit ?? 100), 1), 500);
  const status = filter.status !== undefined ? sql`AND n.status = ${filter.status}` : sql``;
  const request = filter.requestId !== undefined ? sql`AND n.request_id = ${filter.requestId}` : sql``;
  const r = await sql<NoticeRow>`
    SELECT n.id, n.processor_id, n.request_id, p.name, n.channel, n.status, n.notified_at, n.acknowledged_at,
      p.deletion_instructions, n.error
    FROM processor_notifications n JOIN processors p ON p.id = n.processor_id
    WHERE n.tenant_id = ${tenantId} AND n.processor_id = ${processor.id} ${status} ${request}
    ORDER BY n.created_at DESC, n.id LIMIT ${limit}`.execute(database.db);
  return r.rows.map(presentNotice);
}

/**
 * Records that a processor confirmed the deletion of one notice (a manual one: that the
 * team carried out the instructions). Repeating it keeps the first acknowledgement time.
 * `not_found` for another tenant's notice or, with `processorId`, another processor's.
 */
export async function acknowledgeNotification(
  database: Database,
  tenantId: string,
  notificationId: string,
  actor: string | ProcessorActor,
  options: { processorId?: string; now?: Date } = {},
): Promise<ProcessorNotice> {
  const who = typeof actor === 'string' ? { actor } : actor;
  const missing = () =>
    new FerryError(
      'not_found',
      options.processorId
        ? `no notification ${notificationId} of processor ${options.processorId}`
        : `no notification ${notificationId}`,
    );
  if (!UUID.test(notificationId) || (options.processorId !== undefined && !UUID.test(options.processorId)))
    throw missing();
  const byProcessor = options.processorId ? sql`AND processor_id = ${options.processorId}` : sql``;
  const r = await sql<{ id: string; request_id: string }>`
    UPDATE processor_notifications
    SET status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, ${options.now ?? new Date()})
    WHERE tenant_id = ${tenantId} AND id = ${notificationId} ${byProcessor}
    RETURNING id, request_id`.execute(database.db);
  const row = r.rows[0];
  if (!row) throw missing();
  await audit(database, tenantId, who, 'processor.acknowledged', notificationId);
  const notice = (await listNotices(database, tenantId, row.request_id)).find(
    (n) => n.notification_id === notificationId,
  );
  return notice!;
}

/** `acknowledgeNotification` for a notice reached through its processor (the API's path). */
export function acknowledgeNotice(
  database: Database,
  tenantId: string,
  processorId: string,
  notificationId: string,
  who: ProcessorActor,
): Promise<ProcessorNotice> {
  return acknowledgeNotification(database, tenantId, notificationId, who, { processorId });
}
