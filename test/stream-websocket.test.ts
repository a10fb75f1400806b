import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/auth/keys.ts';
import { ROLE_ACTIONS } from '../src/auth/policy.ts';
import type { Role } from '../src/auth/context.ts';
import { type Config, loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { createStreamHub, type StreamHub, type StreamOptions } from '../src/live/hub.ts';
import {
  createTestDatabase,
  DIALECTS,
  TEST_DATABASE_URL,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import {
  connectStream,
  createStreamTenant,
  endConversation,
  insertConversation,
  insertMessages,
  isEvent,
  outbox,
  type StreamClient,
  type StreamMessage,
  type StreamTenant,
  subscribeStream,
} from './support/fixtures/stream.ts';

const SECRET = 'stream-test-secret-key-0123456789abcdef';
const PATH = '/api/v1/stream/export';

interface Server {
  app: FerryApp;
  hub: StreamHub;
  url: string;
}

async function startServer(
  database: Database,
  config: Config,
  options: Partial<StreamOptions> = {},
): Promise<Server> {
  const hub = createStreamHub(database, options);
  const app = await buildApp({ database, config, stream: hub });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  return { app, hub, url: `ws://127.0.0.1:${port}${PATH}` };
}

async function stopServer(server: Server | undefined): Promise<void> {
  if (!server) return;
  await server.app.close();
  await server.hub.stop();
}

/**
 * Waits for `count` events of the given conversations (skipping anything else: events
 * of earlier tests can still arrive when the database's head was held back) and returns them.
 */
async function events(
  client: StreamClient,
  count: number,
  ...conversations: string[]
): Promise<StreamMessage[]> {
  const out: StreamMessage[] = [];
  const ours = (m: StreamMessage) => isEvent(m) && conversations.includes(String(data(m).conversation_id));
  while (out.length < count) out.push(await client.next(ours));
  return out;
}

const data = (m: StreamMessage) => m.data as Record<string, unknown>;
/** Roles the permission matrix lets read the stream (src/auth/policy.ts decides, not this test). */
const mayStream = (role: Role) => ROLE_ACTIONS[role].includes('stream:read');
const names = (ms: StreamMessage[]) => ms.map((m) => m.event);

for (const dialect of DIALECTS) {
  describe(`live stream over WebSocket on ${dialect}`, () => {
    let t: TestDatabase;
    let dir: string;
    let config: Config;
    let server: Server;
    let tenant: StreamTenant;
    let other: StreamTenant;
    const keys: Partial<Record<Role | 'agentOther' | 'otherAdmin', string>> = {};

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      dir = mkdtempSync(path.join(tmpdir(), 'ferry-stream-'));
      config = loadConfig({ FERRY_DATA_DIR: dir, FERRY_SECRET_KEY: SECRET, LOG_LEVEL: 'silent' });
      server = await startServer(t.database, config);
      tenant = await createStreamTenant(t.database, 'Acme');
      other = await createStreamTenant(t.database, 'Other');
      for (const role of ['admin', 'manager', 'analyst'] as const)
        keys[role] = (await createApiKey(t.database, { tenantId: tenant.tenantId, role })).key;
      keys.agent = (
        await createApiKey(t.database, {
          tenantId: tenant.tenantId,
          role: 'agent',
          teamMemberId: tenant.agentId,
        })
      ).key;
      keys.otherAdmin = (await createApiKey(t.database, { tenantId: other.tenantId, role: 'admin' })).key;
    });
    afterAll(async () => {
      await stopServer(server);
      await t?.drop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const admin = () => ({ token: keys.admin!, tenantId: tenant.tenantId });

    it('refuses a wrong key, or a key of another tenant, and closes the connection', async () => {
      for (const token of ['fy_live_notavalidkeyatall', keys.otherAdmin!]) {
        const client = await connectStream(server.url);
        client.send({ type: 'auth', token, tenant_id: tenant.tenantId });
        const error = await client.next();
        expect(error).toMatchObject({ type: 'error', code: 'unauthorized' });
        expect(JSON.stringify(error)).not.toContain(token);
        expect((await client.closed).code).toBe(4401);
      }
    });

    it('refuses a key whose role or scopes do not allow reading the stream', async () => {
      const narrow = await createApiKey(t.database, {
        tenantId: tenant.tenantId,
        role: 'admin',
        scopes: ['exports:read'],
      });
      const refused = [narrow.key];
      for (const role of ['analyst', 'agent'] as const) if (!mayStream(role)) refused.push(keys[role]!);
      for (const token of refused) {
        const client = await connectStream(server.url);
        client.send({ type: 'auth', token, tenant_id: tenant.tenantId });
        expect(await client.next()).toMatchObject({ type: 'error', code: 'forbidden' });
        expect((await client.closed).code).toBe(4403);
      }
    });

    it('refuses a subscription before authentication', async () => {
      const client = await connectStream(server.url);
      client.send({ type: 'subscribe', stream: 'conversations' });
      expect(await client.next()).toMatchObject({ type: 'error', code: 'unauthorized' });
      expect((await client.closed).code).toBe(4401);
    });

    it('answers bad messages with an error naming the problem and stays open', async () => {
      const client = await connectStream(server.url);
      client.send('{not json');
      expect(await client.next()).toMatchObject({ type: 'error', code: 'malformed_request' });
      client.send({ type: 'shout' });
      const unknown = await client.next();
      expect(unknown).toMatchObject({ type: 'error', code: 'invalid_parameter', parameter: 'type' });
      expect(unknown.accepted).toEqual(['auth', 'subscribe', 'unsubscribe', 'ping']);
      client.send({ type: 'ping', id: 7 });
      expect(await client.next()).toMatchObject({ type: 'pong', id: 7 });
      client.send({ type: 'auth', token: keys.admin, tenant_id: tenant.tenantId });
      expect(await client.next()).toMatchObject({
        type: 'authenticated',
        tenant_id: tenant.tenantId,
        role: 'admin',
      });
      client.send({ type: 'subscribe', stream: 'tickets' });
      expect(await client.next()).toMatchObject({
        code: 'invalid_parameter',
        parameter: 'stream',
        accepted: ['conversations', 'exports'],
      });
      client.send({
        type: 'subscribe',
        stream: 'conversations',
        filters: { site_urls: ['https://nope.example'] },
      });
      const site = await client.next();
      expect(site).toMatchObject({ code: 'invalid_parameter', parameter: 'filters.site_urls' });
      expect(site.accepted).toEqual(expect.arrayContaining([tenant.sites.a.url, tenant.sites.b.url]));
      client.send({ type: 'subscribe', stream: 'conversations', filters: { include_messages: 'yes' } });
      expect(await client.next()).toMatchObject({
        code: 'invalid_parameter',
        parameter: 'filters.include_messages',
      });
      client.send({ type: 'ping' });
      expect(await client.next()).toMatchObject({ type: 'pong' });
      client.close();
    });

    it('streams a conversation: started, messages, updated, ended, with their data', async () => {
      const client = await subscribeStream(server.url, admin(), {
        filters: { include_messages: true, real_time: true },
      });
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const messageIds = await insertMessages(t.database, tenant, id, [
        { sender: 'customer', content: 'Where is my order?' },
        { sender: 'ai', content: 'It ships tomorrow.' },
      ]);
      await endConversation(t.database, id, 5);
      const got = await events(client, 5, id);
      expect(names(got)).toEqual([
        'conversation_started',
        'message_created',
        'message_created',
        'conversation_updated',
        'conversation_ended',
      ]);
      for (const m of got) {
        expect(m.id).toMatch(/^[0-9]+$/);
        expect(new Date(String(m.timestamp)).toISOString()).toBe(m.timestamp);
        expect(data(m).conversation_id).toBe(id);
        expect(data(m).site_url).toBe(tenant.sites.a.url);
      }
      expect(new Set(got.map((m) => m.id)).size).toBe(5);
      expect(data(got[0]!)).toMatchObject({
        status: 'in_progress',
        message_count: 0,
        satisfaction_score: null,
      });
      expect(data(got[1]!)).toMatchObject({
        message_id: messageIds[0],
        sender_type: 'customer',
        message_content: 'Where is my order?',
      });
      expect(new Date(String(data(got[1]!).timestamp)).getTime()).toBeGreaterThan(0);
      expect(data(got[2]!)).toMatchObject({
        message_id: messageIds[1],
        sender_type: 'ai',
        message_content: 'It ships tomorrow.',
      });
      expect(data(got[3]!)).toMatchObject({ message_count: 2 });
      expect(data(got[4]!)).toMatchObject({
        status: 'resolved',
        satisfaction_score: 5,
        resolution_time_minutes: 12,
        message_count: 2,
      });
      client.close();
    });

    it('keeps to the sites asked for, and leaves messages out unless asked', async () => {
      const shop = await subscribeStream(server.url, admin(), {
        filters: { site_urls: [tenant.sites.b.url] },
      });
      const plain = await subscribeStream(server.url, admin(), { filters: { include_messages: false } });
      const onA = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await insertMessages(t.database, tenant, onA, [{ sender: 'customer', content: 'a' }]);
      const onB = await insertConversation(t.database, tenant, { siteId: tenant.sites.b.id });
      await insertMessages(t.database, tenant, onB, [{ sender: 'customer', content: 'b' }]);
      await endConversation(t.database, onB);

      const shopEvents = await events(shop, 3, onA, onB);
      expect(names(shopEvents)).toEqual([
        'conversation_started',
        'conversation_updated',
        'conversation_ended',
      ]);
      expect(shopEvents.every((m) => data(m).conversation_id === onB)).toBe(true);

      const plainEvents = await events(plain, 5, onA, onB);
      expect(names(plainEvents)).toEqual([
        'conversation_started',
        'conversation_updated',
        'conversation_started',
        'conversation_updated',
        'conversation_ended',
      ]);
      expect(plainEvents.map((m) => data(m).conversation_id)).toEqual([onA, onA, onB, onB, onB]);
      shop.close();
      plain.close();
    });

    it('resumes from last_event_id after a disconnect without gaps or duplicates', async () => {
      const first = await subscribeStream(server.url, admin(), { filters: { include_messages: true } });
      const before = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const seen = await events(first, 1, before);
      expect(data(seen[0]!).conversation_id).toBe(before);
      first.close();
      await first.closed;

      // Written while nobody is connected.
      const during = await insertConversation(t.database, tenant, { siteId: tenant.sites.b.id });
      await insertMessages(t.database, tenant, during, [
        { sender: 'customer', content: 'one' },
        { sender: 'ai', content: 'two' },
      ]);
      await endConversation(t.database, during);

      const second = await subscribeStream(server.url, admin(), {
        filters: { include_messages: true },
        last_event_id: seen[0]!.id,
      });
      const replayed = await events(second, 5, during);
      expect(names(replayed)).toEqual([
        'conversation_started',
        'message_created',
        'message_created',
        'conversation_updated',
        'conversation_ended',
      ]);
      expect(replayed.every((m) => data(m).conversation_id === during)).toBe(true);
      // Then live again.
      const after = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const live = await events(second, 1, after);
      expect(data(live[0]!).conversation_id).toBe(after);

      // Exactly the tenant's events after the resume point, in stream order.
      const stored = (await outbox(t.database))
        .filter((e) => e.tenant_id === tenant.tenantId)
        .map((e) => String(e.seq));
      const from = stored.indexOf(String(seen[0]!.id));
      const received = second.messages.filter(isEvent).map((m) => m.id);
      expect(received).toEqual(stored.slice(from + 1, from + 1 + received.length));
      expect(received).toEqual(expect.arrayContaining([...replayed, ...live].map((m) => m.id)));
      second.close();
    });

    it('replays without going live when real_time is false, and stops on unsubscribe', async () => {
      const live = await subscribeStream(server.url, admin());
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await endConversation(t.database, id);
      const [started, ended] = await events(live, 2, id);
      live.send({ type: 'unsubscribe' });
      expect(await live.next((m) => m.type === 'unsubscribed')).toMatchObject({ last_event_id: ended!.id });

      const catchUp = await subscribeStream(server.url, admin(), {
        filters: { real_time: false },
        last_event_id: Number(started!.id),
      });
      const replayed = await catchUp.next(isEvent);
      expect(replayed).toMatchObject({ id: ended!.id, event: 'conversation_ended' });
      const done = await catchUp.next((m) => m.type === 'replay_complete');
      expect(done.last_event_id).toBe(ended!.id);

      const later = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      // Both connections stay open but receive nothing more; a ping still answers.
      for (const client of [live, catchUp]) {
        client.send({ type: 'ping', id: 'after' });
        await client.next((m) => m.type === 'pong');
        expect(JSON.stringify(client.messages)).not.toContain(later);
      }
      live.close();
      catchUp.close();
    });

    it('tells a client resuming from an unknown event id', async () => {
      const client = await connectStream(server.url);
      client.send({ type: 'auth', token: keys.admin, tenant_id: tenant.tenantId });
      await client.next();
      client.send({ type: 'subscribe', stream: 'conversations', last_event_id: '999999999' });
      expect(await client.next()).toMatchObject({
        type: 'error',
        code: 'invalid_parameter',
        parameter: 'last_event_id',
      });
      client.close();
    });

    it('never sends events of another tenant', async () => {
      const mine = await subscribeStream(server.url, admin());
      const theirs = await subscribeStream(server.url, { token: keys.otherAdmin!, tenantId: other.tenantId });
      const foreign = await insertConversation(t.database, other, { siteId: other.sites.a.id });
      const own = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await events(mine, 1, own);
      await events(theirs, 1, foreign);
      expect(JSON.stringify(mine.messages)).not.toContain(foreign);
      expect(JSON.stringify(theirs.messages)).not.toContain(own);
      mine.close();
      theirs.close();
    });

    it.runIf(mayStream('agent'))('gives an agent only the conversations it takes part in', async () => {
      const client = await subscribeStream(
        server.url,
        { token: keys.agent!, tenantId: tenant.tenantId },
        {
          filters: { include_messages: true },
        },
      );
      const notMine = await insertConversation(t.database, tenant, {
        siteId: tenant.sites.a.id,
        agentId: tenant.otherAgentId,
      });
      await insertMessages(t.database, tenant, notMine, [{ sender: 'customer', content: 'not for ann' }]);
      const joined = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      await insertMessages(t.database, tenant, joined, [
        { sender: 'human', content: 'Ann here', senderId: tenant.agentId },
      ]);
      const assigned = await insertConversation(t.database, tenant, {
        siteId: tenant.sites.b.id,
        agentId: tenant.agentId,
      });
      await endConversation(t.database, assigned);

      const ended = await client.next((m) => isEvent(m) && m.event === 'conversation_ended');
      expect(data(ended).conversation_id).toBe(assigned);
      const got = client.messages.filter(isEvent);
      expect(got.some((m) => data(m).conversation_id === notMine)).toBe(false);
      expect(got).toContainEqual(
        expect.objectContaining({
          event: 'message_created',
          data: expect.objectContaining({ message_content: 'Ann here' }),
        }),
      );
      expect(got.filter((m) => data(m).conversation_id === assigned).map((m) => m.event)).toEqual([
        'conversation_started',
        'conversation_ended',
      ]);
      client.close();
    });

    it.runIf(mayStream('analyst'))('scrubs personal data from message text for analysts', async () => {
      const analyst = await subscribeStream(
        server.url,
        { token: keys.analyst!, tenantId: tenant.tenantId },
        {
          filters: { include_messages: true },
        },
      );
      const manager = await subscribeStream(
        server.url,
        { token: keys.manager!, tenantId: tenant.tenantId },
        {
          filters: { include_messages: true },
        },
      );
      const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
      const text = 'Please write to jane.doe@mail.example or ops@acme-corp.example about it';
      await insertMessages(t.database, tenant, id, [{ sender: 'customer', content: text }]);
      const scrubbed = await analyst.next((m) => isEvent(m) && m.event === 'message_created');
      const content = String(data(scrubbed).message_content);
      expect(content).not.toContain('@');
      expect(content).toContain('[email]');
      expect(content).toContain('Please write to');
      const clear = await manager.next((m) => isEvent(m) && m.event === 'message_created');
      expect(data(clear).message_content).toBe(text);
      analyst.close();
      manager.close();
    });

    it('disconnects a client that stops reading, with bounded buffers, and lets it resume', async () => {
      const limits = { maxBufferedEvents: 200, maxBufferedBytes: 256 * 1024 };
      const slowServer = await startServer(t.database, config, limits);
      try {
        const client = await subscribeStream(slowServer.url, admin(), {
          filters: { include_messages: true },
        });
        client.socket.pause();
        // ~20 MiB of message text: more than the loopback socket buffers hold.
        const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
        const big = 'x'.repeat(32 * 1024);
        const messageIds: string[] = [];
        for (let batch = 0; batch < 10; batch++)
          messageIds.push(
            ...(await insertMessages(
              t.database,
              tenant,
              id,
              Array.from({ length: 64 }, () => ({ sender: 'ai' as const, content: big })),
            )),
          );
        await expect
          .poll(() => [...slowServer.hub.connections].some((c) => c.lagged), {
            timeout: 60_000,
            interval: 100,
          })
          .toBe(true);
        for (const stats of slowServer.hub.connections) {
          expect(stats.peakBufferedEvents).toBeLessThanOrEqual(limits.maxBufferedEvents);
          // The limit, plus the one lagging notice that is always let through.
          expect(stats.peakBufferedBytes).toBeLessThanOrEqual(limits.maxBufferedBytes + 1024);
        }
        client.socket.resume();
        const lagging = await client.next((m) => m.type === 'error', 60_000);
        expect(lagging).toMatchObject({ code: 'stream_lagging' });
        expect((await client.closed).code).toBe(4008);
        const received = client.messages.filter(isEvent);
        expect(received.length).toBeLessThan(messageIds.length);
        expect(lagging.last_event_id).toBe(received.at(-1)?.id ?? null);

        // Resume where it stopped: the rest of the messages, nothing twice.
        const again = await subscribeStream(slowServer.url, admin(), {
          filters: { include_messages: true },
          last_event_id: lagging.last_event_id,
        });
        const seenMessages = received
          .filter((m) => m.event === 'message_created')
          .map((m) => data(m).message_id);
        const rest: unknown[] = [];
        while (seenMessages.length + rest.length < messageIds.length) {
          const m = await again.next((e) => isEvent(e) && e.event === 'message_created', 60_000);
          rest.push(data(m).message_id);
        }
        expect([...seenMessages, ...rest]).toEqual(messageIds);
        again.close();
      } finally {
        await stopServer(slowServer);
      }
    });

    it('closes a connection that does not authenticate in time, and refuses an address after repeated failures', async () => {
      const guarded = await startServer(t.database, config, {
        maxAuthFailuresPerMinute: 2,
        authTimeoutMs: 300,
      });
      try {
        const silent = await connectStream(guarded.url);
        expect(await silent.next()).toMatchObject({ type: 'error', code: 'unauthorized' });
        expect((await silent.closed).code).toBe(4401);
        for (let i = 0; i < 2; i++) {
          const client = await connectStream(guarded.url);
          client.send({ type: 'auth', token: `fy_live_${'0'.repeat(43)}`, tenant_id: tenant.tenantId });
          expect(await client.next()).toMatchObject({ code: 'unauthorized' });
          await client.closed;
        }
        const refused = await connectStream(guarded.url);
        expect(await refused.next()).toMatchObject({ type: 'error', code: 'rate_limited' });
        expect((await refused.closed).code).toBe(4429);
      } finally {
        await stopServer(guarded);
      }
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('live stream across two API processes on postgres', () => {
  let t: TestDatabase;
  let dir: string;
  let a: Server;
  let b: Server;
  let databaseB: Database;

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-stream-'));
    const config = loadConfig({ FERRY_DATA_DIR: dir, FERRY_SECRET_KEY: SECRET, LOG_LEVEL: 'silent' });
    databaseB = postgresDatabase({ connectionString: TEST_DATABASE_URL, schema: t.schema, max: 4 });
    a = await startServer(t.database, config);
    // B only hears of new events through notifications: its safety poll is too slow for the test.
    b = await startServer(databaseB, config, { pollIntervalMs: 600_000 });
  });
  afterAll(async () => {
    await stopServer(a);
    await stopServer(b);
    await databaseB?.close();
    await t?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("delivers a change written through one process's database to a client of the other", async () => {
    const tenant = await createStreamTenant(t.database);
    const { key } = await createApiKey(t.database, { tenantId: tenant.tenantId, role: 'admin' });
    const client = await subscribeStream(
      b.url,
      { token: key, tenantId: tenant.tenantId },
      {
        filters: { include_messages: true },
      },
    );
    expect(b.hub.stats().mode).toBe('listen');
    const id = await insertConversation(t.database, tenant, { siteId: tenant.sites.a.id });
    await insertMessages(t.database, tenant, id, [{ sender: 'customer', content: 'hello from A' }]);
    const got = await events(client, 2, id);
    expect(names(got)).toEqual(['conversation_started', 'message_created']);
    expect(data(got[1]!).message_content).toBe('hello from A');
    expect(a.hub.stats().live).toBe(0);

    // The listening connection is cut: it reconnects and catches up on what it missed.
    const cut = await sql<{ pid: number }>`
      SELECT pid FROM pg_stat_activity WHERE query = ${`LISTEN "ferry_stream_${t.schema}"`}`.execute(
      t.database.db,
    );
    expect(cut.rows.length).toBe(1); // B's; A's listener starts with its first subscriber
    await sql`SELECT pg_terminate_backend(${cut.rows[0]!.pid})`.execute(t.database.db);
    const later = await insertConversation(t.database, tenant, { siteId: tenant.sites.b.id });
    expect(data((await events(client, 1, later))[0]!).site_url).toBe(tenant.sites.b.url);
    client.close();
  });
});
