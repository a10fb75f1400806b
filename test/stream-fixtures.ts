import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { WebSocket } from 'ws';
import type { Database } from '../src/db/database.ts';

/** A tenant with two sites, two agents and a customer: enough to exercise filters and scopes. */
export interface StreamTenant {
  readonly tenantId: string;
  readonly sites: { readonly a: Site; readonly b: Site };
  readonly agentId: string;
  readonly otherAgentId: string;
  readonly customerId: string;
}

export interface Site {
  readonly id: string;
  readonly url: string;
}

export async function createStreamTenant(database: Database, name = 'Acme'): Promise<StreamTenant> {
  const tenantId = randomUUID();
  const slug = `${name.toLowerCase()}-${tenantId.slice(0, 8)}`;
  await sql`INSERT INTO tenants (id, name, slug, plan, timezone, home_country)
    VALUES (${tenantId}, ${name}, ${slug}, 'pro', 'UTC', 'US')`.execute(database.db);
  const site = async (host: string): Promise<Site> => {
    const id = randomUUID();
    const url = `https://${host}.${slug}.example`;
    await sql`INSERT INTO sites (id, tenant_id, url, name) VALUES (${id}, ${tenantId}, ${url}, ${host})`.execute(
      database.db,
    );
    return { id, url };
  };
  const member = async (who: string): Promise<string> => {
    const id = randomUUID();
    await sql`INSERT INTO team_members (id, tenant_id, name, email, role, password_hash)
      VALUES (${id}, ${tenantId}, ${who}, ${`${who}@${slug}.example`}, 'agent', 'x')`.execute(database.db);
    return id;
  };
  const customerId = randomUUID();
  await sql`INSERT INTO customers (id, tenant_id, email, name, segment)
    VALUES (${customerId}, ${tenantId}, 'jane.doe@mail.example', 'Jane Doe', 'smb')`.execute(database.db);
  return {
    tenantId,
    sites: { a: await site('www'), b: await site('shop') },
    agentId: await member('ann'),
    otherAgentId: await member('bob'),
    customerId,
  };
}

export interface NewConversation {
  readonly siteId: string;
  readonly agentId?: string | null;
  readonly customerId?: string | null;
  readonly status?: 'resolved' | 'unresolved' | 'in_progress';
}

/** Inserts an open conversation; returns its id. */
export async function insertConversation(
  database: Database,
  tenant: StreamTenant,
  input: NewConversation,
): Promise<string> {
  const id = randomUUID();
  await sql`INSERT INTO conversations (id, tenant_id, site_id, customer_id, assigned_agent_id, session_id,
      start_timestamp, customer_email, customer_name, language, status)
    VALUES (${id}, ${tenant.tenantId}, ${input.siteId}, ${input.customerId ?? tenant.customerId},
      ${input.agentId ?? null}, ${`s-${id.slice(0, 8)}`}, now(), 'jane.doe@mail.example', 'Jane Doe', 'en',
      ${input.status ?? 'in_progress'})`.execute(database.db);
  return id;
}

export interface NewMessage {
  readonly sender: 'customer' | 'ai' | 'human';
  readonly content: string;
  readonly senderId?: string | null;
}

/** Inserts messages in one statement, one second apart; returns their ids in order. */
export async function insertMessages(
  database: Database,
  tenant: StreamTenant,
  conversationId: string,
  messages: readonly NewMessage[],
): Promise<string[]> {
  const ids = messages.map(() => randomUUID());
  const base = Date.now();
  const rows = messages.map(
    (m, i) =>
      sql`(${ids[i]}, ${tenant.tenantId}, ${conversationId}, ${new Date(base + i * 1000).toISOString()}::timestamptz,
        ${m.sender}, ${m.senderId ?? null}, ${m.content}, ${m.content.length})`,
  );
  await sql`INSERT INTO messages (id, tenant_id, conversation_id, created_at, sender_type, sender_id, content, message_length)
    VALUES ${sql.join(rows)}`.execute(database.db);
  await sql`UPDATE conversations SET message_count = message_count + ${messages.length}
    WHERE id = ${conversationId}`.execute(database.db);
  return ids;
}

/** Ends a conversation: resolved, with a satisfaction score and an end time. */
export async function endConversation(database: Database, conversationId: string, score = 5): Promise<void> {
  await sql`UPDATE conversations SET status = 'resolved', end_timestamp = now(), satisfaction_score = ${score},
      resolution_time_minutes = 12
    WHERE id = ${conversationId}`.execute(database.db);
}

export interface OutboxRow {
  seq: number;
  tenant_id: string;
  conversation_id: string;
  site_id: string;
  event: string;
  data: Record<string, unknown>;
}

/** The outbox rows, in stream order. */
export async function outbox(database: Database): Promise<OutboxRow[]> {
  const result = await sql<OutboxRow>`
    SELECT seq, tenant_id, conversation_id, site_id, event, data FROM stream_events ORDER BY tx, seq`.execute(
    database.db,
  );
  return result.rows.map((r) => ({ ...r, seq: Number(r.seq) }));
}

/** A WebSocket test client that keeps every message and close it receives. */
export interface StreamClient {
  readonly socket: WebSocket;
  readonly messages: StreamMessage[];
  send(message: unknown): void;
  /** The next message (after those already taken) matching `match`, waiting up to `timeoutMs`. */
  next(match?: (m: StreamMessage) => boolean, timeoutMs?: number): Promise<StreamMessage>;
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export type StreamMessage = Record<string, unknown> & { type: string };

export async function connectStream(url: string): Promise<StreamClient> {
  const socket = new WebSocket(url);
  const messages: StreamMessage[] = [];
  let taken = 0;
  let wake: (() => void) | null = null;
  socket.on('message', (data) => {
    messages.push(JSON.parse(String(data)));
    wake?.();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.on('close', (code, reason) => {
      resolve({ code, reason: String(reason) });
      wake?.();
    });
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return {
    socket,
    messages,
    closed,
    send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    async next(match = () => true, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        while (taken < messages.length) {
          const m = messages[taken++]!;
          if (match(m)) return m;
        }
        if (socket.readyState === WebSocket.CLOSED)
          throw new Error('the stream closed while waiting for a message');
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(
            `no matching message within ${timeoutMs} ms; got ${JSON.stringify(messages.slice(-3))}`,
          );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            wake = null;
            resolve();
          };
        });
      }
    },
    close: () => socket.close(),
  };
}

/** Connects, authenticates and subscribes; returns the client after the `subscribed` answer. */
export async function subscribeStream(
  url: string,
  auth: { token: string; tenantId: string },
  subscribe: Record<string, unknown> = {},
): Promise<StreamClient> {
  const client = await connectStream(url);
  client.send({ type: 'auth', token: auth.token, tenant_id: auth.tenantId });
  const authenticated = await client.next();
  if (authenticated.type !== 'authenticated')
    throw new Error(`auth failed: ${JSON.stringify(authenticated)}`);
  client.send({ type: 'subscribe', stream: 'conversations', ...subscribe });
  const subscribed = await client.next();
  if (subscribed.type !== 'subscribed') throw new Error(`subscribe failed: ${JSON.stringify(subscribed)}`);
  return client;
}

/** Conversation events only (skips pongs and acknowledgements). */
export const isEvent = (m: StreamMessage) => m.type === 'conversation_update';
