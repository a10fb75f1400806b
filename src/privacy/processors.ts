import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import type { Database } from '../db/database.ts';
import type { Mailer } from '../deliver/mailer.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';

/**
 * The third-party processors registry (docs/processors.md): who else holds the tenant's
 * data, what of it (data-map categories), where, for how long, how an erasure reaches them,
 * and how a person gets their data out of them. Erasure notifies each processor that holds a
 * category of the erased person's data, once per request, and tracks the acknowledgement.
 */

/** The data-map column classes a processor may receive (everything personal, and identifiers). */
export const PROCESSOR_CATEGORIES = ['identifier', 'contact', 'network', 'location', 'free_text'] as const;
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
  if (url.protocol !== 'https:' && !(plain && url.protocol === 'http:')) throw invalid(field, 'must be an https URL');
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

export interface ProcessorNotice {
  readonly notification_id: string;
  readonly processor: string;
  readonly channel: string;
  readonly status: 'pending' | 'sent' | 'failed' | 'acknowledged';
  readonly notified_at: string | null;
  readonly acknowledged_at: string | null;
  /** Manual processors: what the team must do. */
  readonly instructions: string | null;
}

export interface NoticeDeps {
  readonly database: Database;
  readonly mailer?: Mailer | undefined;
  readonly now?: () => Date;
  /** How long a webhook may take to answer. */
  readonly timeoutMs?: number;
}

const WEBHOOK_TIMEOUT_MS = 10_000;

/**
 * Tells each processor that holds one of `categories` of the erased person's data to
 * delete it: an email, a JSON POST (no personal data: the request id is the reference), or
 * for `manual` processors a pending notice with their instructions for the team. One
 * notice per request and processor: a retried erasure finds the notices already made and
 * sends nothing twice. The person is named only by the request id; the processor asks the
 * tenant for the identifiers over its own agreed channel.
 */
export async function notifyProcessors(
  deps: NoticeDeps,
  input: { tenantId: string; requestId: string; categories: readonly string[] },
): Promise<ProcessorNotice[]> {
  const { database } = deps;
  const now = (deps.now ?? (() => new Date()))();
  const processors = (await tenantProcessors(database, input.tenantId)).filter((p) =>
    p.data_categories.some((c) => input.categories.includes(c)),
  );
  for (const p of processors) {
    const inserted = await sql<{ id: string }>`
      INSERT INTO processor_notifications (id, tenant_id, processor_id, request_id, channel, status, created_at)
      VALUES (${randomUUID()}, ${input.tenantId}, ${p.id}, ${input.requestId}, ${p.channel}, 'pending', ${now})
      ON CONFLICT (request_id, processor_id) DO NOTHING RETURNING id`.execute(database.db);
    const id = inserted.rows[0]?.id;
    if (!id || p.channel === 'manual') continue;
    const subject = `Deletion request ${input.requestId}`;
    const body = {
      type: 'erasure_request',
      request_id: input.requestId,
      tenant_id: input.tenantId,
      processor: p.name,
      data_categories: p.data_categories.filter((c) => input.categories.includes(c)),
      requested_at: now.toISOString(),
    };
    let error: string | null = null;
    try {
      if (p.channel === 'email') {
        if (!deps.mailer) throw new Error('no SMTP server is configured (FERRY_SMTP_URL)');
        await deps.mailer.send({
          to: [p.deletion_contact!],
          subject,
          text:
            `A data subject asked for the erasure of their personal data (GDPR Art. 17).\n\n` +
            `Please delete the data you process for us about this person (${body.data_categories.join(', ')}) ` +
            `and confirm to us when it is done. Reference: ${input.requestId}.\n\n` +
            'We send the person’s identifiers separately over our agreed channel; this message holds none.\n',
        });
      } else {
        const res = await fetch(p.deletion_contact!, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          redirect: 'error',
          signal: AbortSignal.timeout(deps.timeoutMs ?? WEBHOOK_TIMEOUT_MS),
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
      }
    } catch (err) {
      error = (err as Error).message.slice(0, 500);
    }
    await sql`UPDATE processor_notifications SET status = ${error ? 'failed' : 'sent'},
      notified_at = ${error ? null : now}, error = ${error} WHERE id = ${id}`.execute(database.db);
  }
  return listNotices(database, input.tenantId, input.requestId);
}

/** The notices of one erasure request. */
export async function listNotices(
  database: Database,
  tenantId: string,
  requestId: string,
): Promise<ProcessorNotice[]> {
  const r = await sql<{
    id: string;
    name: string;
    channel: string;
    status: ProcessorNotice['status'];
    notified_at: Date | null;
    acknowledged_at: Date | null;
    deletion_instructions: string | null;
  }>`SELECT n.id, p.name, n.channel, n.status, n.notified_at, n.acknowledged_at, p.deletion_instructions
    FROM processor_notifications n JOIN processors p ON p.id = n.processor_id
    WHERE n.tenant_id = ${tenantId} AND n.request_id = ${requestId} ORDER BY p.name`.execute(database.db);
  return r.rows.map((n) => ({
    notification_id: n.id,
    processor: n.name,
    channel: n.channel,
    status: n.status,
    notified_at: n.notified_at ? new Date(n.notified_at).toISOString() : null,
    acknowledged_at: n.acknowledged_at ? new Date(n.acknowledged_at).toISOString() : null,
    instructions: n.channel === 'manual' ? n.deletion_instructions : null,
  }));
}

/** Records that a processor confirmed the deletion. */
export async function acknowledgeNotice(
  database: Database,
  tenantId: string,
  processorId: string,
  notificationId: string,
  who: ProcessorActor,
): Promise<ProcessorNotice> {
  if (!UUID.test(notificationId)) throw new FerryError('not_found', `no notification ${notificationId}`);
  const r = await sql<{ request_id: string; acknowledged_at: Date | null }>`
    UPDATE processor_notifications SET status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, ${new Date()})
    WHERE tenant_id = ${tenantId} AND processor_id = ${processorId} AND id = ${notificationId}
    RETURNING request_id, acknowledged_at`.execute(database.db);
  const row = r.rows[0];
  if (!row)
    throw new FerryError('not_found', `no notification ${notificationId} of processor ${processorId}`);
  await audit(database, tenantId, who, 'processor.acknowledged', notificationId);
  const notice = (await listNotices(database, tenantId, row.request_id)).find(
    (n) => n.notification_id === notificationId,
  );
  return notice!;
}
