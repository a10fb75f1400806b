import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test, vi } from 'vitest';
import { deliver } from '../src/deliver/deliver.ts';
import { parseTarget, sealTarget } from '../src/deliver/targets.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryTarget } from '../src/deliver/types.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { WEBHOOK_DELIVER_JOB } from '../src/webhooks/emit.ts';
import { createEndpoint, listDeliveries } from '../src/webhooks/endpoints.ts';
import { giveUpMessages } from '../src/webhooks/settle.ts';
import { webhookDb } from '../src/webhooks/tables.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { testSecrets } from './support/keyring.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { DELIVERY_CLIENTS } from '../src/compose.ts';

const START = new Date('2026-11-22T10:00:00.000Z');
const SECOND = 1000;
const HOUR = 3_600_000;

/** Moves the (faked) system clock, which the dispatcher and the receiver's verify both read. */
function at(ms: number): Date {
  const date = new Date(START.getTime() + ms);
  vi.setSystemTime(date);
  return date;
}

type Sent = { name: string; data: { id: string }; options: { startAfter?: Date } | undefined };

for (const dialect of DIALECTS) {
  describe(`the webhook delivery target on ${dialect}`, () => {
    let t: TestDatabase;
    let receiver: TestWebhookReceiver;
    let tenantId: string;
    let target: DeliveryTarget;
    let artifact: DeliveryArtifact;
    let sent: Sent[];
    let ctx: DeliveryContext;
    const outbound = outboundPolicy(['127.0.0.1']);

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(async () => {
      await t?.drop();
    });

    beforeEach(async () => {
      vi.useFakeTimers({ toFake: ['Date'], now: START });
      receiver = await startWebhookReceiver();
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
      const secrets = await testSecrets(t.database);
      // Subscribed to export.completed as well: as a target it still gets the file once.
      const { endpoint, secret } = await createEndpoint(
        t.database,
        tenantId,
        { url: receiver.url, events: ['export.completed'] },
        { secrets, outbound },
      );
      receiver.setSecrets([secret]);
      target = await sealTarget(parseTarget({ type: 'webhook', endpoint_id: endpoint.id }), secrets);
      const bytes = Buffer.from('id,subject\n1,hello\n');
      artifact = {
        open: async () => Readable.from([bytes]),
        filename: 'conversations.csv',
        bytes: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        contentType: 'text/csv',
        exportId: randomUUID(),
        tenantId,
        dataset: 'conversations',
        format: 'csv',
        recordCounts: { conversations: 1 },
        expiresAt: new Date('2026-11-29T00:00:00Z'),
        downloadUrl: 'https://ferry.example.com/d/1',
      };
      sent = [];
      ctx = {
        database: t.database,
        secrets,
        outbound,
        clients: DELIVERY_CLIENTS,
        deliveryKey: `run-file:${artifact.exportId}:target:0`,
        // A stand-in for pg-boss: what the target hands to the queue is what is asserted.
        queue: {
          async send(name, data, options) {
            sent.push({ name, data, options });
            return randomUUID();
          },
        },
      };
    });
    afterEach(async () => {
      vi.useRealTimers();
      await receiver.stop();
    });

    const ids = () => receiver.requests.map((r) => r.headers['webhook-id']);

    test('a file is one message however often it is delivered; the outbox job makes the retry when due', async () => {
      receiver.failNext(1, 503);
      const first = await deliver(target, artifact, ctx);
      expect(first).toMatchObject({ status: 'failed', attempts: 1, errorCode: 'delivery_failed' });
      expect(first.permanent).toBeUndefined();
      const retryAt = first.retryAt!;
      // The documented first retry: 5 s, ±10 % jitter.
      expect(retryAt.getTime() - START.getTime()).toBeGreaterThanOrEqual(4_500);
      expect(retryAt.getTime() - START.getTime()).toBeLessThan(5_500);
      const [messageId] = ids();
      expect(messageId).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(first.error).toBe(
        `webhook: HTTP 503; message ${messageId} will be retried at ${retryAt.toISOString()} and on the webhook schedule after that`,
      );
      // The follow-up attempt is a webhooks.deliver job due at the retry, not the minute sweep.
      expect(sent).toEqual([
        { name: WEBHOOK_DELIVER_JOB, data: { id: messageId }, options: { startAfter: retryAt } },
      ]);

      // Delivering again before the retry is due finds the same message and sends nothing.
      at(2 * SECOND);
      const early = await deliver(target, artifact, ctx);
      expect(early).toMatchObject({ status: 'failed', attempts: 1, retryAt });
      expect(ids()).toEqual([messageId]);

      // Once due, the same message is attempted: same webhook-id, byte-identical body.
      at(retryAt.getTime() - START.getTime());
      const due = await deliver(target, artifact, ctx);
      expect(due).toMatchObject({
        status: 'delivered',
        attempts: 2,
        location: `webhook:${(target as { endpoint_id: string }).endpoint_id}#${messageId}`,
      });
      expect(ids()).toEqual([messageId, messageId]);
      expect(new Set(receiver.requests.map((r) => r.body)).size).toBe(1);
      expect(receiver.requests.map((r) => r.verifiedWith)).toEqual([[0], [0]]);

      // Delivered: later calls report it and send nothing.
      at(2 * HOUR);
      expect(await deliver(target, artifact, ctx)).toMatchObject({ status: 'delivered', attempts: 2 });
      expect(ids()).toHaveLength(2);
      expect(sent).toHaveLength(1);
      const log = await listDeliveries(t.database, tenantId, (target as { endpoint_id: string }).endpoint_id);
      expect(log.map((m) => [m.message_id, m.status, m.attempts])).toEqual([[messageId, 'delivered', 2]]);
    });

    test('another delivery key is another message; without a key every call is a new one', async () => {
      await deliver(target, artifact, ctx);
      await deliver(target, artifact, { ...ctx, deliveryKey: `run-file:${artifact.exportId}:target:1` });
      const { deliveryKey: _key, ...unkeyed } = ctx;
      await deliver(target, artifact, unkeyed);
      await deliver(target, artifact, unkeyed);
      expect(new Set(ids()).size).toBe(4);
    });

    test('a message given up is failed for good: delivering again reports it and sends nothing', async () => {
      receiver.failNext(1, 503);
      const first = await deliver(target, artifact, ctx);
      const [messageId] = ids();
      expect(await giveUpMessages({ database: t.database }, [messageId as string], 'given up: test')).toEqual(
        [messageId],
      );
      at(first.retryAt!.getTime() - START.getTime() + SECOND);
      const after = await deliver(target, artifact, ctx);
      expect(after).toMatchObject({ status: 'failed', attempts: 1, permanent: true });
      expect(after.retryAt).toBeUndefined();
      expect(after.error).toBe(
        `webhook: given up: test; message ${messageId} failed for good after 1 attempt(s)`,
      );
      expect(ids()).toEqual([messageId]);
      const row = await webhookDb(t.database)
        .selectFrom('webhook_messages')
        .selectAll()
        .where('id', '=', messageId as string)
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({ status: 'failed', next_attempt_at: null, last_error: 'given up: test' });
    });

    test('a file the message delivered stays delivered after its endpoint was disabled', async () => {
      expect(await deliver(target, artifact, ctx)).toMatchObject({ status: 'delivered', attempts: 1 });
      await webhookDb(t.database)
        .updateTable('webhook_endpoints')
        .set({ status: 'disabled' })
        .where('id', '=', (target as { endpoint_id: string }).endpoint_id)
        .execute();
      expect(await deliver(target, artifact, ctx)).toMatchObject({ status: 'delivered', attempts: 1 });
      // A new file for the disabled endpoint is refused.
      expect(await deliver(target, artifact, { ...ctx, deliveryKey: 'another file' })).toMatchObject({
        status: 'failed',
        errorCode: 'not_found',
        permanent: true,
      });
      expect(ids()).toHaveLength(1);
    });

    test('a receiver that does not answer in time: the retry carries the same webhook-id', async () => {
      receiver.hangNext(1);
      const first = await deliver(target, artifact, { ...ctx, timeoutMs: 300 });
      expect(first).toMatchObject({ status: 'failed', attempts: 1 });
      expect(receiver.requests.map((r) => r.answered)).toEqual([null]);
      at(first.retryAt!.getTime() - START.getTime());
      expect(await deliver(target, artifact, { ...ctx, timeoutMs: 300 })).toMatchObject({
        status: 'delivered',
        attempts: 2,
      });
      expect(receiver.requests.map((r) => r.answered)).toEqual([null, 200]);
      expect(new Set(ids()).size).toBe(1);
    });
  });
}
