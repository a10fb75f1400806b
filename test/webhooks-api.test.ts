import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import type { Config } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { deliverDueMessages } from '../src/webhooks/dispatch.ts';
import { emitEvent } from '../src/webhooks/emit.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { openKeyring } from '../src/crypto/open-keyring.ts';

for (const dialect of DIALECTS) {
  describe(`webhooks API on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let config: Config;
    let tenant: TestTenant;
    let other: TestTenant;
    let keys: Record<Role, string>;
    let otherKeys: Record<Role, string>;
    let receiver: TestWebhookReceiver;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      config = authTestConfig({ FERRY_OUTBOUND_ALLOW: '127.0.0.1' });
      app = await buildApp({ database: t.database, config });
      tenant = await createTenant(t.database);
      other = await createTenant(t.database);
      keys = await keysByRole(t.database, tenant);
      otherKeys = await keysByRole(t.database, other);
      receiver = await startWebhookReceiver();
    });
    afterAll(async () => {
      await receiver?.stop();
      await app?.close();
      await t?.drop();
    });

    async function register(body: Record<string, unknown>, key = keys.admin) {
      return app.inject({ method: 'POST', url: '/api/v1/webhooks', headers: bearer(key), payload: body });
    }

    test('register, list, show and delete an endpoint; the secret is shown once', async () => {
      const created = await register({
        url: receiver.url,
        events: ['export.completed', 'export.failed'],
        description: 'Data warehouse loader',
      });
      expect(created.statusCode).toBe(201);
      const body = created.json();
      expect(body).toMatchObject({
        url: receiver.url,
        events: ['export.completed', 'export.failed'],
        description: 'Data warehouse loader',
        status: 'active',
        disabled_at: null,
        previous_secret_expires_at: null,
      });
      expect(body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(body.secret_hint).toBe(`••••${body.secret.slice(-4)}`);

      const list = await app.inject({ method: 'GET', url: '/api/v1/webhooks', headers: bearer(keys.admin) });
      expect(list.statusCode).toBe(200);
      expect(list.json().items.map((e: { id: string }) => e.id)).toContain(body.id);
      expect(list.body).not.toContain(body.secret);

      const shown = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${body.id}`,
        headers: bearer(keys.admin),
      });
      expect(shown.json()).not.toHaveProperty('secret');
      expect(shown.json().secret_hint).toBe(body.secret_hint);

      // Another tenant sees nothing of it.
      const foreign = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${body.id}`,
        headers: bearer(otherKeys.admin),
      });
      expect(foreign.statusCode).toBe(404);
      const foreignDelete = await app.inject({
        method: 'DELETE',
        url: `/api/v1/webhooks/${body.id}`,
        headers: bearer(otherKeys.admin),
      });
      expect(foreignDelete.statusCode).toBe(404);

      const deleted = await app.inject({
        method: 'DELETE',
        url: `/api/v1/webhooks/${body.id}`,
        headers: bearer(keys.admin),
      });
      expect(deleted.statusCode).toBe(200);
      expect(deleted.json()).toMatchObject({ id: body.id, url: receiver.url });
      const gone = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${body.id}`,
        headers: bearer(keys.admin),
      });
      expect(gone.statusCode).toBe(404);
    });

    test('only admins manage webhooks', async () => {
      for (const role of ['manager', 'analyst', 'agent'] as const) {
        const response = await register({ url: receiver.url }, keys[role]);
        expect(response.statusCode, role).toBe(403);
        expect(response.json().code).toBe('forbidden');
      }
      const anonymous = await app.inject({ method: 'GET', url: '/api/v1/webhooks' });
      expect(anonymous.statusCode).toBe(401);
    });

    test('refuses unknown events, plain http to public hosts and private addresses', async () => {
      const unknown = await register({ url: receiver.url, events: ['export.exploded'] });
      expect(unknown.statusCode).toBe(400);
      expect(unknown.json().code).toBe('invalid_parameter');

      const strict = await buildApp({ database: t.database, config: authTestConfig() });
      try {
        const loopback = await strict.inject({
          method: 'POST',
          url: '/api/v1/webhooks',
          headers: bearer(keys.admin),
          payload: { url: 'https://127.0.0.1:8443/hook' },
        });
        expect(loopback.statusCode).toBe(400);
        expect(loopback.json().detail).toBe(
          'url: 127.0.0.1 is a loopback address; Ferry only connects to public addresses ' +
            '(an operator can allow a host or range with FERRY_OUTBOUND_ALLOW)',
        );
        const metadata = await strict.inject({
          method: 'POST',
          url: '/api/v1/webhooks',
          headers: bearer(keys.admin),
          payload: { url: 'http://169.254.169.254/latest/meta-data/' },
        });
        expect(metadata.statusCode).toBe(400);
        expect(metadata.json().detail).toContain('169.254.169.254 is a linkLocal address');
        const plain = await strict.inject({
          method: 'POST',
          url: '/api/v1/webhooks',
          headers: bearer(keys.admin),
          payload: { url: 'http://93.184.215.14/hook' },
        });
        expect(plain.statusCode).toBe(400);
        expect(plain.json().detail).toContain('url: must use https');
        const credentials = await strict.inject({
          method: 'POST',
          url: '/api/v1/webhooks',
          headers: bearer(keys.admin),
          payload: { url: 'https://user:pw@93.184.215.14/hook' },
        });
        expect(credentials.json().detail).toBe('url: must not contain a user name or password');
      } finally {
        await strict.close();
      }
    });

    test('rotate-secret returns a new secret; both sign until the old one expires', async () => {
      const created = (await register({ url: receiver.url, events: ['export.started'] })).json();
      const rotated = await app.inject({
        method: 'POST',
        url: `/api/v1/webhooks/${created.id}/rotate-secret`,
        headers: bearer(keys.admin),
      });
      expect(rotated.statusCode).toBe(200);
      const body = rotated.json();
      expect(body.secret).not.toBe(created.secret);
      const expires = Date.parse(body.previous_secret_expires_at);
      expect(expires - Date.now()).toBeGreaterThan(23.9 * 3_600_000);
      expect(expires - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);

      receiver.setSecrets([body.secret, created.secret]);
      const before = receiver.requests.length;
      await emitEvent(t.database, tenant.id, 'export.started', { export_id: 'e1', data: {} });
      await deliverDueMessages({
        database: t.database,
        secrets: (await openKeyring(t.database, config)).secrets,
        outbound: outboundPolicy(config.outboundAllow),
      });
      const [request] = receiver.requests.slice(before);
      expect(request!.verifiedWith).toEqual([0, 1]);
    });

    test('the delivery log shows each attempt with its status code, latency and error', async () => {
      const created = (await register({ url: receiver.url, events: ['export.failed'] })).json();
      receiver.setSecrets([created.secret]);
      receiver.failNext(1, 503);
      const [message] = await emitEvent(t.database, tenant.id, 'export.failed', {
        export_id: 'e2',
        data: { error: { code: 'internal' } },
      });
      await deliverDueMessages({
        database: t.database,
        secrets: (await openKeyring(t.database, config)).secrets,
        outbound: outboundPolicy(config.outboundAllow),
      });
      const log = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${created.id}/deliveries`,
        headers: bearer(keys.admin),
      });
      expect(log.statusCode).toBe(200);
      const [entry] = log.json().items;
      expect(entry).toMatchObject({
        message_id: message!.id,
        event: 'export.failed',
        status: 'pending',
        attempts: 1,
        last_error: 'HTTP 503',
        attempt_log: [{ attempt: 1, status_code: 503, outcome: 'failure', error: 'HTTP 503' }],
      });
      expect(entry.attempt_log[0].latency_ms).toBeGreaterThanOrEqual(0);
      expect(entry.next_attempt_at).not.toBeNull();

      const filtered = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${created.id}/deliveries?status=delivered`,
        headers: bearer(keys.admin),
      });
      expect(filtered.json().items).toEqual([]);
      const foreign = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${created.id}/deliveries`,
        headers: bearer(otherKeys.admin),
      });
      expect(foreign.statusCode).toBe(404);
    });

    test('a disabled endpoint can be enabled again', async () => {
      const created = (await register({ url: receiver.url, events: ['schedule.run.failed'] })).json();
      receiver.failNext(1, 410);
      await emitEvent(t.database, tenant.id, 'schedule.run.failed', { schedule_id: 's1', data: {} });
      await deliverDueMessages({
        database: t.database,
        secrets: (await openKeyring(t.database, config)).secrets,
        outbound: outboundPolicy(config.outboundAllow),
      });
      const disabled = await app.inject({
        method: 'GET',
        url: `/api/v1/webhooks/${created.id}`,
        headers: bearer(keys.admin),
      });
      expect(disabled.json()).toMatchObject({
        status: 'disabled',
        disabled_reason: 'the endpoint answered 410 Gone',
      });
      const enabled = await app.inject({
        method: 'POST',
        url: `/api/v1/webhooks/${created.id}/enable`,
        headers: bearer(keys.admin),
      });
      expect(enabled.json()).toMatchObject({ status: 'active', disabled_at: null, disabled_reason: null });
    });
  });
}
