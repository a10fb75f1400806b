import { sql } from 'kysely';
import pg from 'pg';
import type { Database } from '../db/database.ts';
import type { Logger } from '../lib/logger.ts';

/**
 * Wake-ups for the stream poller: the outbox triggers `pg_notify` on
 * `ferry_stream_<schema>` with the tenant id. A notification is only a hint (the poller
 * reads by position either way), so a lost one costs latency, never an event.
 */
export interface NotificationSource {
  /** `listen` when notifications arrive, `poll` when the database offers none. */
  readonly mode: 'listen' | 'poll';
  close(): Promise<void>;
}

/** The subset of PGlite used here (typed structurally; the adapter exposes `pglite`). */
interface PgliteLike {
  listen(channel: string, callback: (payload: string) => void): Promise<(tx?: unknown) => Promise<void>>;
}
/** The subset of pg.Pool used here (the PostgreSQL adapter exposes `pool`). */
interface PoolLike {
  options: pg.PoolConfig;
}

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;

/** The channel the triggers of the schema holding `conversations` notify on (max 63 bytes, as in SQL). */
export async function streamChannel(database: Database): Promise<string> {
  const result = await sql<{ channel: string }>`
    SELECT left('ferry_stream_' || n.nspname, 63) AS channel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = to_regclass('conversations')`.execute(database.db);
  const channel = result.rows[0]?.channel;
  if (!channel) throw new Error('the conversations table is missing: is the database migrated?');
  return channel;
}

/**
 * Listens for outbox notifications: PGlite in process through its `listen` API,
 * PostgreSQL on a dedicated connection (not one of the pool's) that reconnects with
 * backoff; `onNotify('')` after a reconnect makes the poller catch up. Falls back to
 * `poll` mode for a database without either.
 */
export async function listenForEvents(
  database: Database,
  onNotify: (tenantId: string) => void,
  logger: Pick<Logger, 'warn'>,
  /** Another channel than the outbox's (the export progress channel). */
  channelName?: string,
): Promise<NotificationSource> {
  const channel = channelName ?? (await streamChannel(database));
  const pglite = (database as { pglite?: PgliteLike }).pglite;
  if (database.kind === 'pglite' && typeof pglite?.listen === 'function') {
    const unlisten = await pglite.listen(channel, onNotify);
    return { mode: 'listen', close: () => unlisten() };
  }
  const pool = (database as { pool?: PoolLike }).pool;
  if (database.kind !== 'postgres' || !pool?.options) return { mode: 'poll', close: async () => {} };

  let client: pg.Client | null = null;
  let closed = false;
  let delay = RECONNECT_MIN_MS;
  let timer: NodeJS.Timeout | undefined;

  const connect = async (): Promise<void> => {
    const { max: _max, idleTimeoutMillis: _idle, ...config } = pool.options;
    const next = new pg.Client(config);
    next.on('notification', (message) => {
      if (message.channel === channel) onNotify(message.payload ?? '');
    });
    next.on('error', (err) => {
      if (client === next) logger.warn({ err }, 'stream notification connection failed; reconnecting');
      failed(next);
    });
    next.on('end', () => failed(next));
    try {
      await next.connect();
      await next.query(`LISTEN "${channel.replaceAll('"', '""')}"`);
    } catch (err) {
      next.end().catch(() => {}); // never connected properly; the error below is what matters
      throw err;
    }
    if (closed) {
      await next.end().catch(() => {}); // closed while connecting
      return;
    }
    client = next;
    delay = RECONNECT_MIN_MS;
  };

  const reconnectLater = () => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      connect().then(
        () => onNotify(''), // events written while disconnected: read them now
        (err: unknown) => {
          logger.warn({ err, retryInMs: delay }, 'stream notification connection failed; retrying');
          delay = Math.min(delay * 2, RECONNECT_MAX_MS);
          reconnectLater();
        },
      );
    }, delay);
    timer.unref();
  };

  const failed = (broken: pg.Client) => {
    if (client !== broken) return;
    client = null;
    broken.end().catch(() => {}); // the connection is already broken
    reconnectLater();
  };

  await connect();
  return {
    mode: 'listen',
    async close() {
      closed = true;
      clearTimeout(timer);
      const current = client;
      client = null;
      await current?.end().catch(() => {}); // shutting down: a failed goodbye changes nothing
    },
  };
}
