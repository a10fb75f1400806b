import { randomUUID } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { maskSecret } from '../lib/secret-box.ts';
import { type OutboundPolicy, resolveOutbound } from '../lib/ssrf.ts';
import { ALL_EVENTS, WEBHOOK_EVENTS } from './events.ts';
import { generateSecret } from './signing.ts';
import { webhookDb } from './tables.ts';

/** Endpoints one tenant may register. */
export const MAX_ENDPOINTS = 20;
/** How long the previous secret keeps signing after a rotation. */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000;

export interface WebhookEndpoint {
  readonly id: string;
  readonly url: string;
  readonly description: string | null;
  readonly events: string[];
  readonly status: 'active' | 'disabled';
  readonly disabled_at: string | null;
  readonly disabled_reason: string | null;
  /** The current secret, masked: `••••` and its last four characters. */
  readonly secret_hint: string;
  readonly previous_secret_expires_at: string | null;
  readonly created_at: string;
  readonly updated_at: string;
}

export interface EndpointInput {
  readonly url: string;
  readonly events?: readonly string[];
  readonly description?: string | null;
}

interface Deps {
  readonly secrets: SecretBox;
  readonly outbound: OutboundPolicy;
  readonly now?: () => Date;
}

/**
 * Checks an endpoint URL: https (plain http only for hosts the operator allow-listed),
 * no credentials in it, and a host that resolves to public addresses only.
 */
export async function checkEndpointUrl(url: string, outbound: OutboundPolicy): Promise<string> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid('url', 'must be an absolute URL such as https://example.com/hooks/ferry');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')
    throw invalid('url', 'must be an https URL', ['https']);
  if (parsed.username || parsed.password) throw invalid('url', 'must not contain a user name or password');
  if (parsed.hash) throw invalid('url', 'must not contain a #fragment');
  if (url.length > 2000) throw invalid('url', 'must be at most 2000 characters');
  let allowListed: boolean;
  try {
    allowListed = (await resolveOutbound(parsed.hostname, outbound)).allowListed;
  } catch (err) {
    if (err instanceof FerryError) throw invalid('url', err.message);
    throw err;
  }
  if (parsed.protocol === 'http:' && !allowListed)
    throw invalid('url', 'must use https (plain http is only accepted for hosts in FERRY_OUTBOUND_ALLOW)', [
      'https',
    ]);
  return parsed.toString();
}

function checkEvents(events: readonly string[] | undefined): string[] {
  if (events === undefined) return [ALL_EVENTS];
  if (events.length === 0)
    throw invalid('events', 'must list at least one event, or "*" for all', [ALL_EVENTS, ...WEBHOOK_EVENTS]);
  events.forEach((event, i) => {
    if (event !== ALL_EVENTS && !(WEBHOOK_EVENTS as readonly string[]).includes(event))
      throw invalid(`events[${i}]`, `unknown event "${event}"`, [ALL_EVENTS, ...WEBHOOK_EVENTS]);
  });
  return [...new Set(events)];
}

interface Row {
  id: string;
  url: string;
  description: string | null;
  status: string;
  disabled_reason: string | null;
  secret_sealed: string;
  events: string[];
  disabled_at: Date | string | null;
  previous_secret_expires_at: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

function iso(value: Date | string | null): string | null {
  return value === null ? null : new Date(value).toISOString();
}

async function present(row: Row, secrets: SecretBox): Promise<WebhookEndpoint> {
  let hint = '••••';
  try {
    hint = maskSecret(await secrets.open(row.secret_sealed));
  } catch {
    // An unreadable secret (its key is gone) is shown fully masked; rotate it.
  }
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    events: row.events,
    status: row.status as 'active' | 'disabled',
    disabled_at: iso(row.disabled_at),
    disabled_reason: row.disabled_reason,
    secret_hint: hint,
    previous_secret_expires_at: iso(row.previous_secret_expires_at),
    created_at: iso(row.created_at)!,
    updated_at: iso(row.updated_at)!,
  };
}

/** Registers an endpoint; the signing secret is returned here and never again. */
export async function createEndpoint(
  database: Database,
  tenantId: string,
  input: EndpointInput,
  deps: Deps,
): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
  const url = await checkEndpointUrl(input.url, deps.outbound);
  const events = checkEvents(input.events);
  const description = input.description?.trim() || null;
  if (description && description.length > 500) throw invalid('description', 'must be at most 500 characters');
  const db = webhookDb(database);
  const count = await db
    .selectFrom('webhook_endpoints')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('tenant_id', '=', tenantId)
    .executeTakeFirstOrThrow();
  if (Number(count.n) >= MAX_ENDPOINTS)
    throw new FerryError(
      'conflict',
      `a tenant can register at most ${MAX_ENDPOINTS} webhook endpoints; delete one first`,
    );
  const secret = generateSecret();
  const now = (deps.now ?? (() => new Date()))();
  const row = await db
    .insertInto('webhook_endpoints')
    .values({
      id: randomUUID(),
      tenant_id: tenantId,
      url,
      description,
      events: JSON.stringify(events),
      secret_sealed: await deps.secrets.seal(secret),
      created_at: now,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { endpoint: await present(row as unknown as Row, deps.secrets), secret };
}

export async function listEndpoints(
  database: Database,
  tenantId: string,
  secrets: SecretBox,
): Promise<WebhookEndpoint[]> {
  const rows = await webhookDb(database)
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return Promise.all(rows.map((r) => present(r as unknown as Row, secrets)));
}

function notFound(id: string): FerryError {
  return new FerryError('not_found', `no webhook endpoint ${id} in this tenant`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function getEndpoint(
  database: Database,
  tenantId: string,
  id: string,
  secrets: SecretBox,
): Promise<WebhookEndpoint> {
  if (!UUID.test(id)) throw notFound(id);
  const row = await webhookDb(database)
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw notFound(id);
  return present(row as unknown as Row, secrets);
}

/** Deletes an endpoint with its pending messages and its delivery log. */
export async function deleteEndpoint(database: Database, tenantId: string, id: string): Promise<void> {
  if (!UUID.test(id)) throw notFound(id);
  const deleted = await webhookDb(database)
    .deleteFrom('webhook_endpoints')
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (Number(deleted.numDeletedRows) === 0) throw notFound(id);
}

/**
 * Replaces the signing secret. The previous secret keeps signing (a second `v1,`
 * signature) for 24 hours, so receivers can switch without losing messages; rotating
 * again within that window drops the oldest secret.
 */
export async function rotateSecret(
  database: Database,
  tenantId: string,
  id: string,
  deps: Pick<Deps, 'secrets' | 'now'>,
): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
  if (!UUID.test(id)) throw notFound(id);
  const db = webhookDb(database);
  const now = (deps.now ?? (() => new Date()))();
  const secret = generateSecret();
  const sealed = await deps.secrets.seal(secret);
  const row = await db
    .updateTable('webhook_endpoints')
    .set((eb) => ({
      previous_secret_sealed: eb.ref('secret_sealed'),
      previous_secret_expires_at: new Date(now.getTime() + ROTATION_OVERLAP_MS),
      secret_sealed: sealed,
      updated_at: now,
    }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
  if (!row) throw notFound(id);
  return { endpoint: await present(row as unknown as Row, deps.secrets), secret };
}

/** Re-enables a disabled endpoint; its failure counters start over. */
export async function enableEndpoint(
  database: Database,
  tenantId: string,
  id: string,
  deps: Pick<Deps, 'secrets' | 'now'>,
): Promise<WebhookEndpoint> {
  if (!UUID.test(id)) throw notFound(id);
  const now = (deps.now ?? (() => new Date()))();
  const row = await webhookDb(database)
    .updateTable('webhook_endpoints')
    .set({
      status: 'active',
      disabled_at: null,
      disabled_reason: null,
      consecutive_failures: 0,
      failing_since: null,
      updated_at: now,
    })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
  if (!row) throw notFound(id);
  return present(row as unknown as Row, deps.secrets);
}

export interface DeliveryLogEntry {
  readonly message_id: string;
  readonly event: string;
  readonly status: 'pending' | 'delivered' | 'failed';
  readonly attempts: number;
  readonly created_at: string;
  readonly next_attempt_at: string | null;
  readonly delivered_at: string | null;
  readonly failed_at: string | null;
  readonly last_error: string | null;
  readonly attempt_log: {
    readonly attempt: number;
    readonly started_at: string;
    readonly status_code: number | null;
    readonly latency_ms: number;
    readonly outcome: 'success' | 'failure';
    readonly error: string | null;
    readonly response_excerpt: string | null;
  }[];
}

/** The endpoint's messages, newest first, each with its attempts. */
export async function listDeliveries(
  database: Database,
  tenantId: string,
  id: string,
  options: { limit?: number; status?: 'pending' | 'delivered' | 'failed' } = {},
): Promise<DeliveryLogEntry[]> {
  if (!UUID.test(id)) throw notFound(id);
  const db = webhookDb(database);
  const endpoint = await db
    .selectFrom('webhook_endpoints')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!endpoint) throw notFound(id);
  let query = db
    .selectFrom('webhook_messages')
    .select([
      'id',
      'event',
      'status',
      'attempts',
      'created_at',
      'next_attempt_at',
      'delivered_at',
      'failed_at',
      'last_error',
    ])
    .where('tenant_id', '=', tenantId)
    .where('endpoint_id', '=', id);
  if (options.status) query = query.where('status', '=', options.status);
  const messages = await query
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(options.limit ?? 50)
    .execute();
  if (messages.length === 0) return [];
  const attempts = await db
    .selectFrom('webhook_attempts')
    .selectAll()
    .where(
      'message_id',
      'in',
      messages.map((m) => m.id),
    )
    .orderBy('attempt')
    .execute();
  return messages.map((m) => ({
    message_id: m.id,
    event: m.event,
    status: m.status,
    attempts: m.attempts,
    created_at: iso(m.created_at)!,
    next_attempt_at: iso(m.next_attempt_at),
    delivered_at: iso(m.delivered_at),
    failed_at: iso(m.failed_at),
    last_error: m.last_error,
    attempt_log: attempts
      .filter((a) => a.message_id === m.id)
      .map((a) => ({
        attempt: a.attempt,
        started_at: iso(a.started_at)!,
        status_code: a.status_code,
        latency_ms: a.latency_ms,
        outcome: a.outcome,
        error: a.error,
        response_excerpt: a.response_excerpt,
      })),
  }));
}
