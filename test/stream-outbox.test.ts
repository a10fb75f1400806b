import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenForEvents } from '../src/live/notifications.ts';
import { pruneStreamEvents } from '../src/live/retention.ts';
import { comparePositions, START, type StoredEvent, streamStore } from '../src/live/outbox.ts';
import {
  createTestDatabase,
  DIALECTS,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import {
  createStreamTenant,
  endConversation,
  insertConversation,
  insertMessages,
  outbox,
  type StreamTenant,
} from './support/fixtures/stream.ts';

/** Other tests' writers in the same database can hold the head back for a while. */
const WAIT = { timeout: 120_000, interval: 100 };

async function* csv(rows: readonly (readonly (string | number | null)[])[]): AsyncGenerator<string> {
  yield rows
    .map((r) => `${r.map((v) => (v === null ? '' : `"${String(v).replaceAll('"', '""')}"`)).join(',')}\n`)
    .join('');
}

for (const dialect of DIALECTS) {
  describe(`stream outbox on ${dialect}`, () => {
    let t: TestDatabase;
    let tenant: StreamTenant;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      tenant = await createStreamTenant(t.database);
    });
    afterAll(() => t?.drop());

    const eventsOf = async (conversationId: string) =>
      (await outbox(t.database)).filter((e) => e.conversation_id === conversationId);

    it('records a started conversation, its messages, an update and its end, in order', async () => {
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const messageIds = await insertMessages(t.database, tenant, id, [
        { sender: 'customer', content: 'Hello' },
        { sender: 'ai', content: 'Hi! How can I help?' },
      ]);
      await endConversation(t.database, id, 4);

      const events = await eventsOf(id);
      expect(events.map((e) => e.event)).toEqual([
        'conversation_started',
        'message_created',
        'message_created',
        'conversation_updated',
        'conversation_ended',
      ]);
      for (const e of events) {
        expect(e.tenant_id).toBe(tenant.tenantId);
        expect(e.site_id).toBe(tenant.sites.a.id);
      }
      expect(events[0]!.data).toMatchObject({ conversation_id: id, status: 'in_progress', message_count: 0 });
      expect(events.slice(1, 3).map((e) => e.data)).toEqual(messageIds.map((m) => ({ message_id: m })));
      expect(events[3]!.data).toMatchObject({ message_count: 2, status: 'in_progress' });
      expect(events[4]!.data).toMatchObject({
        status: 'resolved',
        satisfaction_score: 4,
        resolution_time_minutes: 12,
        message_count: 2,
      });
      expect(events[4]!.data.end_timestamp).toBeTruthy();
      // Message content is never copied into the outbox.
      expect(JSON.stringify(events)).not.toContain('How can I help');
    });

    it('calls an end time alone, or resolving alone, the end; other changes updates; no-op updates nothing', async () => {
      const a = await insertConversation(t.database, tenant, { siteId: tenant.sites.b.id });
      await sql`UPDATE conversations SET end_timestamp = now() WHERE id = ${a}`.execute(t.database.db);
      await sql`UPDATE conversations SET escalated = true WHERE id = ${a}`.execute(t.database.db);
      const b = await insertConversation(t.database, tenant, { siteId: tenant.sites.b.id });
      await sql`UPDATE conversations SET status = 'resolved' WHERE id = ${b}`.execute(t.database.db);
      await sql`UPDATE conversations SET status = status WHERE id = ${b}`.execute(t.database.db);
      await sql`UPDATE conversations SET status = 'resolved' WHERE id = ${b}`.execute(t.database.db);
      expect((await eventsOf(a)).map((e) => e.event)).toEqual([
        'conversation_started',
        'conversation_ended',
        'conversation_updated',
      ]);
      expect((await eventsOf(b)).map((e) => e.event)).toEqual(['conversation_started', 'conversation_ended']);
    });

    it('records rows loaded with COPY (one statement per load, one event per row)', async () => {
      const before = (await outbox(t.database)).length;
      const ids = [randomUUID(), randomUUID(), randomUUID()];
      await t.database.copyIn(
        'conversations',
        ['id', 'tenant_id', 'site_id', 'session_id', 'start_timestamp', 'language', 'status'],
        csv(
          ids.map((id) => [
            id,
            tenant.tenantId,
            tenant.sites.a.id,
            's',
            '2025-01-01T00:00:00Z',
            'en',
            'resolved',
          ]),
        ),
      );
      const rows = ids.flatMap((c) =>
        [0, 1].map((i) => [randomUUID(), tenant.tenantId, c, '2025-01-01T00:00:00Z', 'customer', `m${i}`, 2]),
      );
      await t.database.copyIn(
        'messages',
        ['id', 'tenant_id', 'conversation_id', 'created_at', 'sender_type', 'content', 'message_length'],
        csv(rows),
      );
      const after = await outbox(t.database);
      expect(after.length - before).toBe(9);
      const added = after.slice(before);
      expect(
        added
          .filter((e) => e.event === 'conversation_started')
          .map((e) => e.conversation_id)
          .sort(),
      ).toEqual([...ids].sort());
      expect(added.filter((e) => e.event === 'message_created').map((e) => e.data.message_id)).toEqual(
        rows.map((r) => r[0]),
      );
    });

    it('reads events by position with message text and site joined from the live tables', async () => {
      const store = streamStore(t.database);
      const head = await store.head();
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const [messageId] = await insertMessages(t.database, tenant, id, [
        { sender: 'customer', content: 'my mail is jane.doe@mail.example' },
      ]);
      // Other writers of the database may hold the head back for a moment, so the range
      // can also hold events of earlier tests that were not readable yet at the start.
      const ours = (events: StoredEvent[]) => events.filter((e) => e.conversationId === id);
      let next = head;
      let all: StoredEvent[] = [];
      await expect
        .poll(async () => {
          next = await store.head();
          all = await store.events({ after: head.position, through: next.position, limit: 100 });
          return ours(all).map((e) => e.event);
        }, WAIT)
        .toEqual(['conversation_started', 'message_created', 'conversation_updated']);
      const events = ours(all);
      const message = events[1]!;
      expect(message.siteUrl).toBe(tenant.sites.a.url);
      expect(message.data.message_id).toBe(messageId);
      expect(message.message).toMatchObject({
        content: 'my mail is jane.doe@mail.example',
        senderType: 'customer',
      });
      expect(message.conversation).toMatchObject({ customerEmail: 'jane.doe@mail.example' });
      // Positions strictly increase and bound the range.
      for (let i = 1; i < all.length; i++)
        expect(comparePositions(all[i - 1]!.position, all[i]!.position)).toBe(-1);
      expect(comparePositions(head.position, all[0]!.position)).toBe(-1);
      expect(comparePositions(all.at(-1)!.position, next.position)).toBe(-1);
      expect(await store.positionOf(tenant.tenantId, message.seq)).toEqual(message.position);
      expect(await store.positionOf(randomUUID(), message.seq)).toBeNull();
      // Narrowing: no messages, other site, other tenant.
      const range = { after: head.position, through: next.position, limit: 100 };
      expect((await store.events({ ...range, withoutMessages: true })).map((e) => e.event)).not.toContain(
        'message_created',
      );
      expect(ours(await store.events({ ...range, siteIds: [tenant.sites.b.id] }))).toEqual([]);
      expect(ours(await store.events({ ...range, siteIds: [tenant.sites.a.id] }))).toHaveLength(3);
      expect(await store.events({ ...range, tenantIds: [randomUUID()] })).toEqual([]);
      // Paging: a limit returns a prefix.
      expect((await store.events({ ...range, limit: 1 })).map((e) => e.seq)).toEqual([all[0]!.seq]);
      // A deleted message is no longer readable through its event.
      await sql`DELETE FROM messages WHERE id = ${messageId}`.execute(t.database.db);
      const again = ours(await store.events(range));
      expect(again[1]!.message).toBeNull();
    });

    it('names who takes part in a conversation: the assigned agent and message senders', async () => {
      const store = streamStore(t.database);
      const assigned = await insertConversation(t.database, tenant, {
        siteId: tenant.sites.a.id,
        agentId: tenant.agentId,
      });
      const wrote = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await insertMessages(t.database, tenant, wrote, [
        { sender: 'human', content: 'hi', senderId: tenant.otherAgentId },
      ]);
      const nobody = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const participants = await store.participants([assigned, wrote, nobody]);
      expect([...(participants.get(assigned) ?? [])]).toEqual([tenant.agentId]);
      expect([...(participants.get(wrote) ?? [])]).toEqual([tenant.otherAgentId]);
      expect(participants.has(nobody)).toBe(false);
    });

    it('prunes events past the retention period and those of deleted tenants', async () => {
      const other = await createStreamTenant(t.database, 'Gone');
      await insertConversation(t.database, other, { siteId: other.sites.a.id });
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await sql`UPDATE stream_events SET created_at = now() - interval '8 days' WHERE conversation_id = ${id}`.execute(
        t.database.db,
      );
      await sql`DELETE FROM tenants WHERE id = ${other.tenantId}`.execute(t.database.db);
      const before = await outbox(t.database);
      const deleted = await pruneStreamEvents(t.database);
      expect(deleted).toBe(2);
      const after = await outbox(t.database);
      expect(after.length).toBe(before.length - 2);
      expect(after.some((e) => e.conversation_id === id || e.tenant_id === other.tenantId)).toBe(false);
      expect(await pruneStreamEvents(t.database, { days: 0 })).toBe(after.length);
      const store = streamStore(t.database);
      expect(await store.lastSeq()).toBeGreaterThan(0);
      expect(await store.events({ after: START, through: (await store.head()).position, limit: 10 })).toEqual(
        [],
      );
    });

    it('notifies listeners with the tenant id when events are written', async () => {
      const got: string[] = [];
      const source = await listenForEvents(t.database, (tenantId) => got.push(tenantId), console);
      try {
        expect(source.mode).toBe('listen');
        await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
        await expect.poll(() => got, { timeout: 5000 }).toContain(tenant.tenantId);
      } finally {
        await source.close();
      }
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('stream outbox ordering on postgres', () => {
  let t: TestDatabase;
  let tenant: StreamTenant;
  let client: pg.Client;

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    tenant = await createStreamTenant(t.database);
    client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${t.schema}` });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
    await t?.drop();
  });

  it('holds back events that commit while an earlier writer is still open, then delivers both in order', async () => {
    const store = streamStore(t.database);
    const start = (await store.head()).position;
    // An open transaction takes an event id first ...
    await client.query('BEGIN');
    const slow = randomUUID();
    await client.query(
      `INSERT INTO conversations (id, tenant_id, site_id, session_id, start_timestamp, language, status)
       VALUES ($1, $2, $3, 's', now(), 'en', 'in_progress')`,
      [slow, tenant.tenantId, tenant.sites.a.id],
    );
    // ... while another writer commits a later one.
    const fast = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
    const during = await store.head();
    expect(during.blocked).toBe(true);
    expect(await store.events({ after: start, through: during.position, limit: 100 })).toEqual([]);

    await client.query('COMMIT');
    let events: StoredEvent[] = [];
    await expect
      .poll(async () => {
        events = await store.events({ after: start, through: (await store.head()).position, limit: 100 });
        return events.map((e) => e.conversationId);
      }, WAIT)
      .toEqual([slow, fast]);
    // The slow writer's event id is the lower one, yet nothing was skipped.
    expect(events[0]!.seq).toBeLessThan(events[1]!.seq);
  });
});
