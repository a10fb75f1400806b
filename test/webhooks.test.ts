import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test, vi } from 'vitest';
import { DELIVERY_CLIENTS } from '../src/compose.ts';
import { deliverAll } from '../src/deliver/deliver.ts';
import { createMailer, type Mailer } from '../src/deliver/mailer.ts';
import { parseTarget, sealTarget } from '../src/deliver/targets.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { attemptMessage, deliverDueMessages, type WebhookDispatchOptions } from '../src/webhooks/dispatch.ts';
import { emitEvent } from '../src/webhooks/emit.ts';
import { createEndpoint, listDeliveries, rotateSecret } from '../src/webhooks/endpoints.ts';
import { deliveryFailedBody, envelope, exportCompletedBody, WEBHOOK_EVENTS } from '../src/webhooks/events.ts';
import { WEBHOOK_RETRY_DELAYS } from '../src/webhooks/schedule.ts';
import { webhookDb } from '../src/webhooks/tables.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { testSecrets } from './support/keyring.ts';

const START = new Date('2026-11-22T10:00:00.000Z');
const SECOND = 1000;
const HOUR = 3_600_000;

const completed = exportCompletedBody({
  exportId: 'exp_123',
  exportType: 'conversations',
  dateRange: { start: '2026-11-01', end: '2026-11-21' },
  format: 'csv',
  recordCount: 1234,
  fileSizeBytes: 56789,
  compression: 'gzip',
  downloadUrl: 'https://ferry.example.com/api/v1/downloads/abc',
  expiresAt: new Date('2026-11-29T10:00:00Z'),
  sha256: 'ab'.repeat(32),
});

/** Moves the (faked) system clock, which the dispatcher and the receiver's verify both read. */
function at(ms: number): Date {
  const date = new Date(START.getTime() + ms);
  vi.setSystemTime(date);
  return date;
}

test('docs/webhooks.md documents every event', () => {
  const docs = readFileSync(new URL('../docs/webhooks.md', import.meta.url), 'utf8');
  const documented = [...docs.matchAll(/^### `([a-z_.]+)`$/gm)].map((m) => m[1]);
  expect(documented).toEqual([...WEBHOOK_EVENTS]);
});

test('delivery.failed for a file destination names it without secrets', () => {
  const body = deliveryFailedBody({
    exportId: 'exp_7',
    scheduleId: 'sch_1',
    result: {
      target: { type: 'sftp', name: 'Warehouse', label: 'sftp://ferry@sftp.acme.example:22/in/' },
      status: 'failed',
      attempts: 4,
      location: null,
      error: 'sftp: cannot connect',
      errorCode: 'delivery_failed',
      bytesSent: 0,
      checksumVerified: false,
    },
  });
  expect(JSON.parse(envelope('delivery.failed', START, 't1', body))).toEqual({
    event: 'delivery.failed',
    timestamp: START.toISOString(),
    export_id: 'exp_7',
    schedule_id: 'sch_1',
    tenant_id: 't1',
    data: {
      destination: 'sftp',
      name: 'Warehouse',
      target: 'sftp://ferry@sftp.acme.example:22/in/',
      attempts: 4,
      reason: 'sftp: cannot connect',
      error_code: 'delivery_failed',
    },
  });
});

for (const dialect of DIALECTS) {
  describe(`webhook delivery on ${dialect}`, () => {
    let t: TestDatabase;
    let receiver: TestWebhookReceiver;
    let smtp: TestSmtpServer;
    let mailer: Mailer;
    let tenantId: string;
    let options: WebhookDispatchOptions;
    const outbound = outboundPolicy(['127.0.0.1']);

    let secrets: SecretBox;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      secrets = await testSecrets(t.database);
      smtp = await startSmtpServer();
      mailer = createMailer({ url: smtp.url, from: 'ferry@ferry.example' });
    });
    afterAll(async () => {
      mailer?.close();
      await smtp?.stop();
      await t?.drop();
    });

    beforeEach(async () => {
      vi.useFakeTimers({ toFake: ['Date'], now: START });
      receiver = await startWebhookReceiver();
      // The dispatcher serves every tenant: start each test with an empty outbox.
      await webhookDb(t.database).deleteFrom('webhook_messages').execute();
      tenantId = randomUUID();
      await t.database.db
        .insertInto('tenants')
        .values({
          id: tenantId,
          name: 'Acme',
          slug: `acme-${tenantId.slice(0, 8)}`,
          plan: 'pro',
          timezone: 'UTC',
          home_country: 'DE',
        })
        .execute();
      await t.database.db
        .insertInto('team_members')
        .values({
          id: randomUUID(),
          tenant_id: tenantId,
          name: 'Ada Admin',
          email: `admin-${tenantId.slice(0, 8)}@acme.example`,
          role: 'admin',
          password_hash: 'x',
        })
        .execute();
      options = { database: t.database, secrets, outbound, mailer, random: () => 0.5 };
    });
    afterEach(async () => {
      vi.useRealTimers();
      vi.restoreAllMocks();
      await receiver.stop();
    });

    async function endpoint(events?: string[], url = receiver.url) {
      const created = await createEndpoint(t.database, tenantId, { url, events }, { secrets, outbound });
      return created;
    }

    async function messageRow(id: string) {
      return webhookDb(t.database)
        .selectFrom('webhook_messages')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
    }

    test('an event becomes one message per subscribed, active endpoint', async () => {
      const a = await endpoint(['export.completed']);
      const b = await endpoint(['*']);
      await endpoint(['export.failed']);
      const d = await endpoint();
      await webhookDb(t.database)
        .updateTable('webhook_endpoints')
        .set({ status: 'disabled' })
        .where('id', '=', d.endpoint.id)
        .execute();
      const messages = await emitEvent(t.database, tenantId, 'export.completed', completed);
      expect(messages.map((m) => m.endpointId).sort()).toEqual([a.endpoint.id, b.endpoint.id].sort());
      expect(messages[0]!.id).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(await emitEvent(t.database, randomUUID(), 'export.completed', completed)).toEqual([]);
    });

    test('messages are signed per Standard Webhooks and carry the documented payload', async () => {
      const { secret } = await endpoint(['export.completed']);
      expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(Buffer.from(secret.slice(6), 'base64')).toHaveLength(32);
      receiver.setSecrets([secret]);
      const [message] = await emitEvent(t.database, tenantId, 'export.completed', completed);
      expect(await deliverDueMessages(options)).toBe(1);
      const [request] = receiver.requests;
      expect(request!.verifyError).toBeNull();
      expect(request!.verifiedWith).toEqual([0]);
      expect(request!.headers['webhook-id']).toBe(message!.id);
      expect(request!.headers['webhook-timestamp']).toBe(String(START.getTime() / 1000));
      expect(request!.headers['content-type']).toBe('application/json');
      expect(request!.body).toBe(
        JSON.stringify({
          event: 'export.completed',
          timestamp: START.toISOString(),
          export_id: 'exp_123',
          tenant_id: tenantId,
          data: {
            export_type: 'conversations',
            date_range: { start: '2026-11-01', end: '2026-11-21' },
            format: 'csv',
            record_count: 1234,
            file_size_bytes: 56789,
            compression: 'gzip',
            download_url: 'https://ferry.example.com/api/v1/downloads/abc',
            expires_at: '2026-11-29T10:00:00.000Z',
            checksum: { algorithm: 'sha256', value: 'ab'.repeat(32) },
          },
        }),
      );
      expect(await messageRow(message!.id)).toMatchObject({ status: 'delivered', attempts: 1 });
      // Delivered messages are never sent again.
      at(HOUR);
      expect(await deliverDueMessages(options)).toBe(0);
    });

    test('failures are retried on the schedule with the same webhook-id until a 2xx', async () => {
      const { secret, endpoint: ep } = await endpoint();
      receiver.setSecrets([secret]);
      receiver.failNext(3, 500);
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { export_id: 'e', data: {} });
      let now = 0;
      const attempts: Date[] = [];
      for (let i = 0; i < 4; i++) {
        attempts.push(at(now));
        expect(await deliverDueMessages(options)).toBe(1);
        const row = await messageRow(message!.id);
        if (i < 3) {
          expect(row.status).toBe('pending');
          const wait = new Date(row.next_attempt_at!).getTime() - (START.getTime() + now);
          // random() = 0.5 puts the jitter factor at exactly 1.
          expect(wait).toBe(WEBHOOK_RETRY_DELAYS[i]);
          // Not due yet: nothing is attempted a second early.
          at(now + wait - SECOND);
          expect(await deliverDueMessages(options)).toBe(0);
          now += wait;
        } else {
          expect(row).toMatchObject({ status: 'delivered', attempts: 4 });
        }
      }
      expect(receiver.requests.map((r) => r.headers['webhook-id'])).toEqual(Array(4).fill(message!.id));
      expect(receiver.requests.map((r) => r.answered)).toEqual([500, 500, 500, 200]);
      expect(receiver.requests.every((r) => r.verifiedWith.length === 1)).toBe(true);
      expect(new Set(receiver.requests.map((r) => r.body)).size).toBe(1);
      const [entry] = await listDeliveries(t.database, tenantId, ep.id);
      expect(entry).toMatchObject({ message_id: message!.id, status: 'delivered', attempts: 4 });
      expect(entry!.attempt_log.map((a) => [a.attempt, a.status_code, a.outcome])).toEqual([
        [1, 500, 'failure'],
        [2, 500, 'failure'],
        [3, 500, 'failure'],
        [4, 200, 'success'],
      ]);
      expect(entry!.attempt_log.map((a) => a.started_at)).toEqual(attempts.map((d) => d.toISOString()));
      expect(entry!.attempt_log.every((a) => a.latency_ms >= 0)).toBe(true);
      expect(entry!.attempt_log[0]!.error).toBe('HTTP 500');
    });

    test('jitter keeps each delay within ±10 %', async () => {
      const { endpoint: ep } = await endpoint();
      receiver.answer(503);
      for (const random of [0, 0.999999]) {
        const [message] = await emitEvent(t.database, tenantId, 'export.failed', { data: {} });
        await attemptMessage({ ...options, random: () => random }, message!.id);
        const row = await messageRow(message!.id);
        const wait = new Date(row.next_attempt_at!).getTime() - Date.now();
        expect(wait).toBe(Math.round(5000 * (random === 0 ? 0.9 : 1 + 0.2 * 0.999999 - 0.1)));
      }
      expect(ep.status).toBe('active');
    });

    test('after the last retry the message fails and the tenant hears of it', async () => {
      const { endpoint: failing } = await endpoint(['export.completed']);
      const watcher = await endpoint(['delivery.failed']);
      receiver.answer(500);
      const [message] = await emitEvent(t.database, tenantId, 'export.completed', completed);
      let now = 0;
      for (let i = 0; i <= WEBHOOK_RETRY_DELAYS.length; i++) {
        at(now);
        await attemptMessage(options, message!.id);
        now += (WEBHOOK_RETRY_DELAYS[i] ?? 0) + SECOND;
      }
      const row = await messageRow(message!.id);
      expect(row).toMatchObject({ status: 'failed', attempts: 8, last_error: 'HTTP 500' });
      expect(row.next_attempt_at).toBeNull();
      // ≈ 31.6 hours from the first attempt to the last.
      const [entry] = await listDeliveries(t.database, tenantId, failing.id);
      const log = entry!.attempt_log;
      expect(log).toHaveLength(8);
      const span = Date.parse(log.at(-1)!.started_at) - Date.parse(log[0]!.started_at);
      expect(span).toBe(WEBHOOK_RETRY_DELAYS.reduce((a, b) => a + b, 0) + 7 * SECOND);
      const notices = await listDeliveries(t.database, tenantId, watcher.endpoint.id);
      expect(notices).toHaveLength(1);
      const notice = await messageRow(notices[0]!.message_id);
      expect(JSON.parse(notice.payload)).toMatchObject({
        event: 'delivery.failed',
        tenant_id: tenantId,
        data: {
          destination: 'webhook',
          webhook_id: failing.id,
          message_id: message!.id,
          event: 'export.completed',
          attempts: 8,
          reason: 'HTTP 500',
          endpoint_disabled: false,
        },
      });
    });

    test('410 Gone disables the endpoint at once and emails the tenant admins', async () => {
      const { endpoint: ep } = await endpoint();
      receiver.failNext(1, 410);
      const [first, second] = [
        ...(await emitEvent(t.database, tenantId, 'export.started', { data: {} })),
        ...(await emitEvent(t.database, tenantId, 'export.failed', { data: {} })),
      ];
      const before = smtp.messages.length;
      expect(await attemptMessage(options, first!.id)).toMatchObject({ status: 'failed', statusCode: 410 });
      const row = await webhookDb(t.database)
        .selectFrom('webhook_endpoints')
        .selectAll()
        .where('id', '=', ep.id)
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({ status: 'disabled', disabled_reason: 'the endpoint answered 410 Gone' });
      // Pending messages of a disabled endpoint fail too; nothing more is sent to it.
      expect(await messageRow(second!.id)).toMatchObject({ status: 'failed' });
      expect(await deliverDueMessages(options)).toBe(0);
      expect(receiver.requests).toHaveLength(1);
      expect(await emitEvent(t.database, tenantId, 'export.started', { data: {} })).toEqual([]);
      const [mail] = smtp.messages.slice(before);
      expect(mail!.to).toEqual([`admin-${tenantId.slice(0, 8)}@acme.example`]);
      expect(mail!.mail.subject).toBe(`Failed: Webhook ${receiver.url}`);
      expect(mail!.mail.text).toContain(
        'Reason: the endpoint answered 410 Gone. Ferry disabled the endpoint',
      );
      expect(mail!.mail.text).toContain(`POST /api/v1/webhooks/${ep.id}/enable`);
    });

    test('a redirect is a failure and is not followed', async () => {
      const { endpoint: ep } = await endpoint();
      receiver.failNext(1, 302, { location: `${receiver.url}/elsewhere` });
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      const outcome = await attemptMessage(options, message!.id);
      expect(outcome).toMatchObject({ status: 'retrying', statusCode: 302 });
      expect(receiver.requests).toHaveLength(1);
      const [entry] = await listDeliveries(t.database, tenantId, ep.id);
      expect(entry!.attempt_log[0]!.error).toBe(
        `HTTP 302 redirect to ${receiver.url}/elsewhere: redirects are not followed; register the final URL`,
      );
    });

    test('a receiver that does not answer in time is a failure, retried later', async () => {
      await endpoint();
      receiver.hangNext(1);
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      const outcome = await attemptMessage({ ...options, timeoutMs: 200 }, message!.id);
      expect(outcome).toMatchObject({
        status: 'retrying',
        statusCode: null,
        error: 'no complete answer within 0.2 s',
      });
      at(10 * SECOND);
      expect(await attemptMessage(options, message!.id)).toMatchObject({ status: 'delivered' });
      expect(receiver.requests.map((r) => r.headers['webhook-id'])).toEqual([message!.id, message!.id]);
    });

    test('a 429 with Retry-After waits at least that long', async () => {
      await endpoint();
      receiver.failNext(1, 429, { retryAfter: '120' });
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      const outcome = await attemptMessage(options, message!.id);
      expect(outcome).toMatchObject({ status: 'retrying', statusCode: 429 });
      if (outcome.status !== 'retrying') throw new Error('unreachable');
      expect(outcome.nextAttemptAt.getTime() - START.getTime()).toBe(120 * SECOND);
    });

    test('during a rotation both secrets sign for 24 hours, then only the new one', async () => {
      const { endpoint: ep, secret: oldSecret } = await endpoint();
      at(HOUR);
      const { secret: newSecret, endpoint: rotated } = await rotateSecret(t.database, tenantId, ep.id, {
        secrets,
      });
      expect(newSecret).not.toBe(oldSecret);
      expect(rotated.previous_secret_expires_at).toBe(new Date(START.getTime() + 25 * HOUR).toISOString());
      receiver.setSecrets([newSecret, oldSecret]);
      await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      await deliverDueMessages(options);
      const during = receiver.requests.at(-1)!;
      expect(String(during.headers['webhook-signature']).split(' ')).toHaveLength(2);
      expect(String(during.headers['webhook-signature'])).toMatch(/^v1,\S+ v1,\S+$/);
      expect(during.verifiedWith).toEqual([0, 1]);
      at(25 * HOUR + SECOND);
      await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      await deliverDueMessages(options);
      const after = receiver.requests.at(-1)!;
      expect(String(after.headers['webhook-signature']).split(' ')).toHaveLength(1);
      expect(after.verifiedWith).toEqual([0]);
    });

    test('an endpoint whose messages keep failing is disabled after 5 exhausted in a row', async () => {
      const { endpoint: ep } = await endpoint(['export.started']);
      receiver.answer(500);
      const quick = { ...options, schedule: [] };
      for (let i = 0; i < 5; i++) {
        const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
        expect(message).toBeDefined();
        expect(await attemptMessage(quick, message!.id)).toMatchObject({ status: 'failed' });
      }
      const row = await webhookDb(t.database)
        .selectFrom('webhook_endpoints')
        .selectAll()
        .where('id', '=', ep.id)
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({
        status: 'disabled',
        disabled_reason: '5 messages in a row failed after all retries',
      });
    });

    test('a success resets the count of exhausted messages', async () => {
      const { endpoint: ep } = await endpoint(['export.started']);
      const quick = { ...options, schedule: [] };
      for (let i = 0; i < 9; i++) {
        if (i === 4) receiver.failNext(0);
        else receiver.failNext(1, 500);
        const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
        await attemptMessage(quick, message!.id);
      }
      const row = await webhookDb(t.database)
        .selectFrom('webhook_endpoints')
        .select(['status', 'consecutive_failures'])
        .where('id', '=', ep.id)
        .executeTakeFirstOrThrow();
      expect(row).toEqual({ status: 'active', consecutive_failures: 4 });
    });

    test('a worker that died mid-attempt: the lease expires and the message is sent again, same id', async () => {
      const { secret } = await endpoint();
      receiver.setSecrets([secret]);
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      // A worker leased the message, POSTed it, and died before recording the attempt.
      await webhookDb(t.database)
        .updateTable('webhook_messages')
        .set({ locked_until: new Date(START.getTime() + 75 * SECOND) })
        .where('id', '=', message!.id)
        .execute();
      expect(await deliverDueMessages(options)).toBe(0);
      at(76 * SECOND);
      expect(await deliverDueMessages(options)).toBe(1);
      expect(receiver.requests.map((r) => r.headers['webhook-id'])).toEqual([message!.id]);
      expect(receiver.requests[0]!.verifiedWith).toEqual([0]);
    });

    test('the webhook delivery target sends export.completed to its endpoint and reports per target', async () => {
      const { endpoint: good, secret } = await endpoint(['export.failed']);
      const { endpoint: bad } = await endpoint(
        ['export.failed'],
        receiver.url.replace('/hooks/ferry', '/gone'),
      );
      receiver.setSecrets([secret]);
      const bytes = Buffer.from('id,subject\n1,hello\n');
      const artifact = {
        open: async () => Readable.from([bytes]),
        filename: 'conversations.csv',
        bytes: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        contentType: 'text/csv',
        exportId: 'exp_target',
        tenantId,
        dataset: 'conversations',
        format: 'csv',
        compression: 'none',
        dateRange: { start: '2026-11-01', end: '2026-11-21' },
        recordCounts: { conversations: 1 },
        expiresAt: new Date('2026-11-29T00:00:00Z'),
        downloadUrl: 'https://ferry.example.com/d/1',
      };
      const targets = await Promise.all(
        [good.id, bad.id, randomUUID()].map((id) =>
          sealTarget(parseTarget({ type: 'webhook', endpoint_id: id }), secrets),
        ),
      );
      const results = await deliverAll(targets, artifact, {
        database: t.database,
        secrets,
        outbound,
        clients: DELIVERY_CLIENTS,
        retryDelays: [1, 1, 1],
      });
      expect(results.map((r) => [r.status, r.attempts, r.errorCode])).toEqual([
        ['delivered', 1, undefined],
        ['failed', 1, 'delivery_failed'],
        ['failed', 1, 'not_found'],
      ]);
      expect(results[0]!.location).toMatch(new RegExp(`^webhook:${good.id}#msg_[0-9a-f]{32}$`));
      expect(results[1]!.error).toMatch(/^webhook: HTTP 404; message msg_\w+ will be retried at /);
      const delivered = receiver.requests.find((r) => r.answered === 200)!;
      expect(delivered.verifiedWith).toEqual([0]);
      expect(JSON.parse(delivered.body)).toMatchObject({
        event: 'export.completed',
        export_id: 'exp_target',
        data: { export_type: 'conversations', record_count: 1, file_size_bytes: bytes.length, format: 'csv' },
      });
      // The failed one stays in the outbox on the webhook schedule.
      const [pending] = await listDeliveries(t.database, tenantId, bad.id);
      expect(pending).toMatchObject({ status: 'pending', attempts: 1 });
    });

    test('an endpoint that now resolves to a refused address is not contacted', async () => {
      await endpoint();
      const [message] = await emitEvent(t.database, tenantId, 'export.started', { data: {} });
      const connect = vi.spyOn(net.Socket.prototype, 'connect');
      const outcome = await attemptMessage({ ...options, outbound: outboundPolicy([]) }, message!.id);
      expect(outcome).toMatchObject({ status: 'retrying', statusCode: null });
      if (outcome.status !== 'retrying') throw new Error('unreachable');
      expect(outcome.error).toContain('127.0.0.1 is a loopback address');
      expect(connect).not.toHaveBeenCalled();
      expect(receiver.requests).toHaveLength(0);
    });
  });
}
