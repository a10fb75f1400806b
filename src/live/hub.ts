import type { Database } from '../db/database.ts';
import { exportProgressChannel, type ProgressNotice } from '../export-requests/progress.ts';
import type { Logger } from '../lib/logger.ts';
import { listenForEvents, type NotificationSource } from './notifications.ts';
import {
  accepts,
  needsParticipants,
  type Participants,
  renderEvent,
  type SubscriptionRules,
} from './present.ts';
import {
  comparePositions,
  type Position,
  START,
  type StoredEvent,
  type StreamStore,
  streamStore,
} from './outbox.ts';

export interface StreamOptions {
  /** Safety poll while notifications work, in ms: a lost notification costs at most this. */
  readonly pollIntervalMs: number;
  /** Poll interval without notifications, and while events wait behind a running transaction. */
  readonly fastPollMs: number;
  /** Events read per query. */
  readonly pageSize: number;
  /** Per connection: events handed to the socket but not yet written out before it counts as lagging. */
  readonly maxBufferedEvents: number;
  /** Per connection: bytes handed to the socket but not yet written out before it counts as lagging. */
  readonly maxBufferedBytes: number;
  /** Time a new connection has to authenticate. */
  readonly authTimeoutMs: number;
  /** Interval of WebSocket pings; a connection that missed the previous pong is dropped. */
  readonly heartbeatMs: number;
  /** Failed authentications per client address and minute before its connections are refused. */
  readonly maxAuthFailuresPerMinute: number;
  /** Use LISTEN/NOTIFY (or PGlite's listen) when the database offers it. */
  readonly listen: boolean;
}

export const DEFAULT_STREAM_OPTIONS: StreamOptions = Object.freeze({
  pollIntervalMs: 2_000,
  fastPollMs: 250,
  pageSize: 500,
  maxBufferedEvents: 1_000,
  maxBufferedBytes: 1024 * 1024,
  authTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  maxAuthFailuresPerMinute: 10,
  listen: true,
});

/** One subscribed connection, as the hub sees it. */
export interface Subscriber {
  readonly rules: SubscriptionRules;
  /** Hands an event over; false when the connection gave up (it fell behind or closed). */
  deliver(event: StoredEvent, text: string): boolean;
  /** Resolves once the connection has room for more (replay waits instead of dropping a slow reader). */
  ready(): Promise<void>;
  readonly closed: boolean;
}

export interface Attachment {
  /**
   * Starts sending (the replay, then live events). Resolves once the replay is done:
   * `live` (now streaming), `complete` (real_time false), `closed` otherwise.
   */
  start(): Promise<'live' | 'complete' | 'closed'>;
  /** The last event id delivered so far by this attachment (or the one it resumed from). */
  lastEventId(): number | null;
  detach(): void;
}

export interface StreamHub {
  readonly options: StreamOptions;
  readonly store: StreamStore;
  /** Counters of this process's open stream connections (buffer use, lagging), for tests and metrics. */
  readonly connections: Set<ConnectionStats>;
  /**
   * Prepares delivery to `subscriber`: the events after `after` (replayed from the
   * database, then live), or from now on when `after` is null. Resolves once the starting
   * point is fixed, so everything committed after that is delivered; nothing is sent
   * before `start()`.
   */
  attach(
    subscriber: Subscriber,
    after: Position | null,
    realTime: boolean,
    lastEventId: number | null,
  ): Promise<Attachment>;
  stats(): { live: number; replaying: number; mode: 'listen' | 'poll' | 'idle' };
  /**
   * Calls `listener` with every export progress notice of the process's database (the
   * `exports` stream); resolves with the function that stops it. The channel is listened
   * to while at least one listener is attached.
   */
  watchExports(listener: (notice: ProgressNotice) => void): Promise<() => void>;
  stop(): Promise<void>;
}

/** Per-connection counters. */
export interface ConnectionStats {
  bufferedEvents: number;
  bufferedBytes: number;
  peakBufferedEvents: number;
  peakBufferedBytes: number;
  lagged: boolean;
}

interface Entry {
  readonly subscriber: Subscriber;
  cursor: Position;
  lastEventId: number | null;
  detached: boolean;
}

/**
 * The process's one stream listener: it reads the outbox by position (after a
 * notification, and on a timer in case one was lost) and fans each event out to the
 * live subscribers of its tenant. A subscriber that resumes first replays from the
 * database on its own, then joins the live set at exactly the hub's position, so
 * it sees neither a gap nor a duplicate. The hub sleeps while nobody is subscribed.
 */
export function createStreamHub(
  database: Database,
  options: Partial<StreamOptions> & { logger?: Pick<Logger, 'warn' | 'error'> } = {},
): StreamHub {
  const { logger: givenLogger, ...rest } = options;
  const opts: StreamOptions = Object.freeze({ ...DEFAULT_STREAM_OPTIONS, ...rest });
  const logger = givenLogger ?? { warn: () => {}, error: () => {} };
  const store = streamStore(database);

  const live = new Map<string, Set<Entry>>();
  const replaying = new Set<Entry>();
  let liveCount = 0;
  /** Everything up to here was fanned out; null while asleep. */
  let position: Position | null = null;
  let waking: Promise<Position> | null = null;
  let source: NotificationSource | null = null;
  let sourceTried = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> | null = null;
  let again = false;
  let blocked = false;

  const subscribed = () => liveCount > 0 || replaying.size > 0;

  // Export progress: notices only, no outbox; listened to while someone watches.
  const exportWatchers = new Set<(notice: ProgressNotice) => void>();
  let exportSource: Promise<NotificationSource | null> | null = null;
  function onExportNotice(payload: string): void {
    let notice: ProgressNotice;
    try {
      notice = JSON.parse(payload) as ProgressNotice;
    } catch {
      return;
    }
    for (const watcher of [...exportWatchers]) watcher(notice);
  }
  async function stopExportSource(): Promise<void> {
    const closing = exportSource;
    exportSource = null;
    await (await closing)?.close();
  }

  function schedule(ms: number): void {
    clearTimeout(timer);
    if (stopped || position === null) return;
    timer = setTimeout(() => void poll(), ms);
    timer.unref();
  }

  function nextDelay(): number {
    return blocked || source?.mode !== 'listen' ? opts.fastPollMs : opts.pollIntervalMs;
  }

  async function wake(): Promise<Position> {
    if (position) return position;
    waking ??= (async () => {
      if (!sourceTried && opts.listen) {
        sourceTried = true;
        try {
          source = await listenForEvents(database, onNotify, logger);
        } catch (err) {
          logger.warn({ err }, 'stream notifications unavailable; polling');
        }
      }
      const head = await store.head();
      position ??= head.position;
      schedule(nextDelay());
      return position;
    })().finally(() => {
      waking = null;
    });
    return waking;
  }

  function onNotify(): void {
    if (position !== null && !stopped) schedule(0);
  }

  function poll(): Promise<void> {
    if (polling) {
      again = true;
      return polling;
    }
    // The cleanup runs as a later reaction, so it always follows this assignment.
    const current: Promise<void> = readNew()
      .catch((err: unknown) => logger.warn({ err }, 'reading stream events failed; retrying'))
      .finally(() => {
        if (polling === current) polling = null;
        schedule(nextDelay());
      });
    polling = current;
    return current;
  }

  async function readNew(): Promise<void> {
    do {
      again = false;
      if (!subscribed()) {
        position = null; // asleep: the next subscriber starts from the head again
        return;
      }
      await catchUp();
    } while (again && !stopped);
  }

  async function catchUp(): Promise<void> {
    const head = await store.head();
    blocked = head.blocked;
    while (position && comparePositions(position, head.position) < 0 && !stopped) {
      const tenantIds = [...live.keys()];
      if (tenantIds.length === 0) {
        position = head.position; // nobody live: replays read the database themselves
        return;
      }
      const events = await store.events({
        after: position,
        through: head.position,
        tenantIds,
        withoutMessages: ![...live.values()].some((set) =>
          [...set].some((e) => e.subscriber.rules.includeMessages),
        ),
        limit: opts.pageSize,
      });
      const next = events.length < opts.pageSize ? head.position : events.at(-1)!.position;
      const participants = await participantsFor(events, (tenant) =>
        [...(live.get(tenant) ?? [])].some((e) => needsParticipants(e.subscriber.rules)),
      );
      // From here to the end of the loop body nothing awaits: fan-out and the cursor
      // moves are one step, which a replay joining the live set relies on.
      for (const event of events) {
        for (const entry of live.get(event.tenantId) ?? []) offer(entry, event, participants);
      }
      position = next;
      for (const entries of live.values()) {
        for (const entry of entries) if (comparePositions(entry.cursor, next) < 0) entry.cursor = next;
      }
    }
  }

  async function participantsFor(
    events: readonly StoredEvent[],
    needed: (tenantId: string) => boolean,
  ): Promise<Participants | undefined> {
    const ids = new Set<string>();
    for (const event of events) if (needed(event.tenantId)) ids.add(event.conversationId);
    return ids.size > 0 ? store.participants([...ids]) : undefined;
  }

  function offer(entry: Entry, event: StoredEvent, participants: Participants | undefined): void {
    if (entry.detached || comparePositions(event.position, entry.cursor) <= 0) return;
    entry.cursor = event.position;
    const rules = entry.subscriber.rules;
    if (!accepts(rules, event, participants)) return;
    if (entry.subscriber.deliver(event, renderEvent(event, rules.pii))) entry.lastEventId = event.seq;
    else remove(entry);
  }

  function addLive(entry: Entry): void {
    const tenant = entry.subscriber.rules.tenantId;
    const set = live.get(tenant) ?? new Set<Entry>();
    set.add(entry);
    live.set(tenant, set);
    liveCount++;
  }

  function remove(entry: Entry): void {
    entry.detached = true;
    replaying.delete(entry);
    const set = live.get(entry.subscriber.rules.tenantId);
    if (set?.delete(entry)) {
      liveCount--;
      if (set.size === 0) live.delete(entry.subscriber.rules.tenantId);
    }
  }

  const gone = (entry: Entry) => entry.detached || entry.subscriber.closed || stopped;

  async function replay(entry: Entry, realTime: boolean): Promise<'live' | 'complete' | 'closed'> {
    const rules = entry.subscriber.rules;
    for (;;) {
      const target = realTime ? await wake() : (await store.head()).position;
      while (comparePositions(entry.cursor, target) < 0) {
        if (gone(entry)) return 'closed';
        const events = await store.events({
          after: entry.cursor,
          through: target,
          tenantIds: [rules.tenantId],
          siteIds: rules.siteIds ? [...rules.siteIds] : undefined,
          withoutMessages: !rules.includeMessages,
          limit: opts.pageSize,
        });
        const participants = needsParticipants(rules) ? await participantsFor(events, () => true) : undefined;
        for (const event of events) {
          await entry.subscriber.ready(); // a slow reader pauses its replay instead of falling behind
          if (gone(entry)) return 'closed';
          offer(entry, event, participants);
          if (entry.detached) return 'closed';
        }
        entry.cursor = events.length < opts.pageSize ? target : events.at(-1)!.position;
      }
      if (!realTime) return 'complete';
      // Join the live set only between two fan-outs, exactly at the hub's position.
      if (polling) {
        await polling;
        continue;
      }
      if (gone(entry)) return 'closed';
      if (position && comparePositions(entry.cursor, position) >= 0) {
        replaying.delete(entry);
        addLive(entry);
        return 'live';
      }
    }
  }

  return {
    options: opts,
    store,
    connections: new Set(),
    async attach(subscriber, after, realTime, lastEventId) {
      const entry: Entry = { subscriber, cursor: after ?? START, lastEventId, detached: false };
      replaying.add(entry);
      try {
        if (after === null && realTime) entry.cursor = await wake();
      } catch (err) {
        remove(entry);
        throw err;
      }
      let started: Promise<'live' | 'complete' | 'closed'> | undefined;
      return {
        start: () => {
          started ??= replay(entry, realTime).then(
            (outcome) => {
              if (outcome !== 'live') remove(entry);
              return outcome;
            },
            (err: unknown) => {
              remove(entry);
              throw err;
            },
          );
          return started;
        },
        lastEventId: () => entry.lastEventId,
        detach: () => remove(entry),
      };
    },
    stats() {
      return {
        live: liveCount,
        replaying: replaying.size,
        mode: position === null ? 'idle' : (source?.mode ?? 'poll'),
      };
    },
    async watchExports(listener) {
      exportWatchers.add(listener);
      exportSource ??= (async () => {
        const channel = await exportProgressChannel(database);
        if (!channel) return null;
        return listenForEvents(database, onExportNotice, logger, channel).catch((err: unknown) => {
          logger.warn({ err }, 'export progress notifications unavailable');
          return null;
        });
      })();
      await exportSource;
      return () => {
        exportWatchers.delete(listener);
        if (exportWatchers.size === 0) void stopExportSource();
      };
    },
    async stop() {
      stopped = true;
      exportWatchers.clear();
      await stopExportSource();
      clearTimeout(timer);
      for (const entries of [...live.values()]) for (const entry of [...entries]) remove(entry);
      for (const entry of [...replaying]) remove(entry);
      await polling;
      await source?.close();
      source = null;
    },
  };
}
