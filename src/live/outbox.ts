import { sql } from 'kysely';
import type { Database } from '../db/database.ts';

/** The four conversation events, in the outbox's `event` column and on the wire. */
export const STREAM_EVENTS = [
  'conversation_started',
  'message_created',
  'conversation_updated',
  'conversation_ended',
] as const;
export type StreamEventName = (typeof STREAM_EVENTS)[number];

/**
 * Where an event sits in the stream: its writing transaction, then its `seq`. Readers
 * walk this order and only read transactions that have ended (see migration 0008), so a
 * position, once passed, never has anything appear before it.
 */
export interface Position {
  readonly tx: bigint;
  readonly seq: number;
}

export const START: Position = Object.freeze({ tx: 0n, seq: 0 });

export function comparePositions(a: Position, b: Position): number {
  if (a.tx !== b.tx) return a.tx < b.tx ? -1 : 1;
  return a.seq === b.seq ? 0 : a.seq < b.seq ? -1 : 1;
}

/** One outbox row with what delivery needs from the live tables. */
export interface StoredEvent {
  /** The event id clients see (`seq`). */
  readonly seq: number;
  readonly position: Position;
  readonly tenantId: string;
  readonly conversationId: string;
  readonly siteId: string;
  readonly siteUrl: string | null;
  readonly event: StreamEventName;
  /** The snapshot the trigger took (conversation fields; for messages only the id). */
  readonly data: Readonly<Record<string, unknown>>;
  readonly createdAt: Date;
  /** For message_created: the message as it is now; null when it was deleted since. */
  readonly message: {
    readonly content: string;
    readonly senderType: string;
    readonly createdAt: Date;
  } | null;
  /** The conversation's data subject and owner, for scrubbing and scopes (null when deleted). */
  readonly conversation: {
    readonly customerId: string | null;
    readonly customerName: string | null;
    readonly customerEmail: string | null;
  } | null;
}

/** A slice of the stream: positions in `(after, through]`, narrowed as asked. */
export interface EventRange {
  readonly after: Position;
  readonly through: Position;
  readonly limit: number;
  /** Only these tenants (every tenant when absent). */
  readonly tenantIds?: readonly string[] | undefined;
  /** Only these sites (every site when absent). */
  readonly siteIds?: readonly string[] | undefined;
  /** Leave message_created events out. */
  readonly withoutMessages?: boolean | undefined;
}

/**
 * The position every reader can safely pass (`seq` 0 of the first transaction that may
 * still write), and whether committed events wait behind a running transaction.
 */
export interface Head {
  readonly position: Position;
  readonly blocked: boolean;
}

interface EventRow {
  seq: string | number;
  tx: string;
  tenant_id: string;
  conversation_id: string;
  site_id: string;
  site_url: string | null;
  event: StreamEventName;
  data: Record<string, unknown> | string;
  created_at: Date | string;
  message_content: string | null;
  sender_type: string | null;
  message_created_at: Date | string | null;
  conversation_found: boolean;
  customer_id: string | null;
  customer_name: string | null;
  customer_email: string | null;
}

const toDate = (v: Date | string): Date => (v instanceof Date ? v : new Date(v));

function toEvent(row: EventRow): StoredEvent {
  const seq = Number(row.seq);
  return {
    seq,
    position: { tx: BigInt(row.tx), seq },
    tenantId: row.tenant_id,
    conversationId: row.conversation_id,
    siteId: row.site_id,
    siteUrl: row.site_url,
    event: row.event,
    data: typeof row.data === 'string' ? JSON.parse(row.data) : row.data,
    createdAt: toDate(row.created_at),
    message:
      row.message_content !== null && row.sender_type !== null && row.message_created_at !== null
        ? {
            content: row.message_content,
            senderType: row.sender_type,
            createdAt: toDate(row.message_created_at),
          }
        : null,
    conversation: row.conversation_found
      ? { customerId: row.customer_id, customerName: row.customer_name, customerEmail: row.customer_email }
      : null,
  };
}

/** The outbox queries. Every statement is a single snapshot; none holds a transaction open. */
export interface StreamStore {
  head(): Promise<Head>;
  events(range: EventRange): Promise<StoredEvent[]>;
  /** The position of event `seq` of the tenant; null when it is unknown or pruned. */
  positionOf(tenantId: string, seq: number): Promise<Position | null>;
  /** The highest event id ever given out, pruned ones included (0 when none). */
  lastSeq(): Promise<number>;
  /**
   * Who takes part in each conversation: its assigned agent and every sender id of its
   * messages, the rule export scopes use for a team member's conversations.
   */
  participants(conversationIds: readonly string[]): Promise<Map<string, Set<string>>>;
  /** Site ids of the tenant by URL. */
  sites(tenantId: string): Promise<Map<string, string>>;
}

/**
 * The head: the lowest transaction id that may still write stream events. Every event
 * of a lower transaction is already committed (or never will be), so readers may pass
 * everything below it. On PGlite (one connection) that is the snapshot's xmin. On
 * PostgreSQL, xmin would also wait for long transactions in other databases of the
 * cluster, so only running transactions of this database (and its prepared ones) count:
 * the snapshot is taken when the statement starts and the activity list is read after
 * it, so a transaction missing from the list had ended before the next statement (the
 * events query) takes its snapshot. `blocked`: committed events wait behind a running
 * transaction, so the poller should look again soon.
 */
function barrierSql(kind: Database['kind']) {
  const bound =
    kind === 'postgres'
      ? sql`SELECT coalesce(
            (SELECT min(x) FROM pg_snapshot_xip((SELECT s FROM snap)) x
             WHERE ((x::text::numeric % 4294967296)::text)::xid IN (
               SELECT a.backend_xid FROM pg_stat_activity a
               WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL
               UNION ALL
               SELECT p.transaction FROM pg_prepared_xacts p WHERE p.database = current_database())),
            (SELECT pg_snapshot_xmax(s) FROM snap)) AS b`
      : sql`SELECT pg_snapshot_xmin(s) AS b FROM snap`;
  return sql`
    WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
    bound AS MATERIALIZED (${bound})
    SELECT b::text AS barrier,
      EXISTS (
        SELECT 1 FROM stream_events e
        WHERE e.tx >= (SELECT b FROM bound) AND e.tx < (SELECT pg_snapshot_xmax(s) FROM snap)
      ) AS blocked
    FROM bound`;
}

export function streamStore(database: Database): StreamStore {
  const db = database.db;
  return {
    async head() {
      const result = await sql<{ barrier: string; blocked: boolean }>`${barrierSql(database.kind)}`.execute(
        db,
      );
      const row = result.rows[0]!;
      return { position: { tx: BigInt(row.barrier), seq: 0 }, blocked: row.blocked };
    },

    async events(range) {
      const filters = [
        range.tenantIds ? sql`AND e.tenant_id = ANY(${[...range.tenantIds]}::uuid[])` : sql``,
        range.siteIds ? sql`AND e.site_id = ANY(${[...range.siteIds]}::uuid[])` : sql``,
        range.withoutMessages ? sql`AND e.event <> 'message_created'` : sql``,
      ];
      const result = await sql<EventRow>`
        SELECT e.seq, e.tx::text AS tx, e.tenant_id, e.conversation_id, e.site_id, s.url AS site_url,
          e.event, e.data, e.created_at,
          m.content AS message_content, m.sender_type, m.created_at AS message_created_at,
          c.id IS NOT NULL AS conversation_found, c.customer_id, c.customer_name, c.customer_email
        FROM stream_events e
        LEFT JOIN sites s ON s.id = e.site_id
        LEFT JOIN messages m ON e.event = 'message_created' AND m.id = (e.data->>'message_id')::uuid
        LEFT JOIN conversations c ON c.id = e.conversation_id
        WHERE (e.tx, e.seq) > (${range.after.tx.toString()}::xid8, ${range.after.seq})
          AND (e.tx, e.seq) <= (${range.through.tx.toString()}::xid8, ${range.through.seq})
          ${filters[0]} ${filters[1]} ${filters[2]}
        ORDER BY e.tx, e.seq
        LIMIT ${range.limit}`.execute(db);
      return result.rows.map(toEvent);
    },

    async positionOf(tenantId, seq) {
      const result = await sql<{ tx: string }>`
        SELECT tx::text AS tx FROM stream_events WHERE seq = ${seq} AND tenant_id = ${tenantId}::uuid`.execute(
        db,
      );
      const row = result.rows[0];
      return row ? { tx: BigInt(row.tx), seq } : null;
    },

    async lastSeq() {
      const result = await sql<{ seq: string | number | null }>`
        SELECT pg_sequence_last_value(pg_get_serial_sequence('stream_events', 'seq')) AS seq`.execute(db);
      return Number(result.rows[0]?.seq ?? 0);
    },

    async participants(conversationIds) {
      const ids = [...conversationIds];
      const out = new Map<string, Set<string>>();
      if (ids.length === 0) return out;
      const result = await sql<{ conversation_id: string; member: string }>`
        SELECT c.id::text AS conversation_id, c.assigned_agent_id::text AS member
        FROM conversations c WHERE c.id = ANY(${ids}::uuid[]) AND c.assigned_agent_id IS NOT NULL
        UNION
        SELECT m.conversation_id::text, m.sender_id FROM messages m
        WHERE m.conversation_id = ANY(${ids}::uuid[]) AND m.sender_id IS NOT NULL`.execute(db);
      for (const row of result.rows) {
        const members = out.get(row.conversation_id) ?? new Set<string>();
        members.add(row.member);
        out.set(row.conversation_id, members);
      }
      return out;
    },

    async sites(tenantId) {
      const rows = await db
        .selectFrom('sites')
        .select(['id', 'url'])
        .where('tenant_id', '=', tenantId)
        .execute();
      return new Map(rows.map((r) => [r.url, r.id]));
    },
  };
}
