import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { deliverDueMessages } from '../src/webhooks/dispatch.ts';
import { emitEvent } from '../src/webhooks/emit.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, type WebSession, webGet, webPost } from './support/fixtures/web.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';

const SECRET = /value="(whsec_[A-Za-z0-9+/]+=*)"/;

/** The webhooks page: register (secret once), details and delivery log, rotate, enable, delete; admins only. */
for (const dialect of DIALECTS) {
  describe(`the dashboard's webhooks page on ${dialect}`, () => {
    let h: ExportHarness;
    let receiver: TestWebhookReceiver;
    let admin: WebSession;
    let manager: WebSession;

    beforeAll(async () => {
      receiver = await startWebhookReceiver();
      // The SSRF guard refuses loopback unless the operator allows it (as in webhooks-api.test.ts).
      h = await exportHarness(dialect, { web: true, env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' } });
      admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      manager = await signInAs(h.app, h.database, h.tenant, 'manager');
    }, 120_000);
    afterAll(async () => {
      await receiver?.stop();
      await h?.close();
    });

    const deliver = () =>
      deliverDueMessages({
        database: h.database,
        secrets: h.secrets,
        outbound: outboundPolicy(h.config.outboundAllow),
      });

    const register = async (form: Record<string, string | string[]>) => {
      const res = await webPost(h.app, admin, '/app/webhooks', form);
      expect(res.statusCode, res.body).toBe(201);
      const secret = SECRET.exec(res.body)?.[1];
      const id = /href="\/app\/webhooks\/([0-9a-f-]{36})"/.exec(res.body)?.[1];
      expect(secret).toBeDefined();
      expect(id).toBeDefined();
      return { res, secret: secret!, id: id! };
    };

    const apiEndpoint = async (id: string, key = h.keys.admin) =>
      h.app.inject({ url: `/api/v1/webhooks/${id}`, headers: bearer(key) });

    it('registers an endpoint, shows its secret once, and that secret verifies a real delivery', async () => {
      const { res, secret, id } = await register({
        url: receiver.url,
        description: 'Data warehouse loader',
        events: ['export.completed', 'export.failed'],
      });
      expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(res.body).toContain('shown only this once');

      // The API sees the same endpoint; the hint matches the secret shown.
      const api = await apiEndpoint(id);
      expect(api.statusCode).toBe(200);
      expect(api.json()).toMatchObject({
        url: receiver.url,
        description: 'Data warehouse loader',
        events: ['export.completed', 'export.failed'],
        status: 'active',
        secret_hint: `••••${secret.slice(-4)}`,
      });

      // Never again: not on the list, not on the details.
      const list = await webGet(h.app, admin, '/app/webhooks');
      expect(list.statusCode).toBe(200);
      expect(list.body).toContain(receiver.url);
      expect(list.body).toContain('export.completed, export.failed');
      expect(list.body).not.toContain(secret);
      expect(list.body).not.toContain('whsec_');
      const details = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(details.statusCode).toBe(200);
      expect(details.body).not.toContain(secret);

      // A delivery to the real receiver verifies with the secret the page showed.
      receiver.setSecrets([secret]);
      const before = receiver.requests.length;
      await emitEvent(
        h.database,
        h.tenant.id,
        'export.completed',
        { export_id: 'e1', data: {} },
        { endpointIds: [id] },
      );
      await deliver();
      const received = receiver.requests.slice(before);
      expect(received).toHaveLength(1);
      expect(received[0]!.verifiedWith).toEqual([0]);

      // The delivery log shows the attempt: event, status code, duration.
      const log = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(log.body).toContain('<h2 id="deliveries">Delivery log</h2>');
      expect(log.body).toMatch(
        /<code>export\.completed<\/code><\/td><td><mark class="status status-delivered">Delivered<\/mark>.*?<\/td><td>1<\/td><td>200<\/td><td>\d+ ms<\/td>/,
      );
      expect(log.body).toContain('<th scope="col">Status code</th>');

      // The same change as the API's: an audit entry by the member.
      const audit = await sql<{ actor: string }>`
        SELECT actor FROM audit_events WHERE tenant_id = ${h.tenant.id} AND action = 'webhook.created' AND target_id = ${id}`.execute(
        h.database.db,
      );
      expect(audit.rows.map((r) => r.actor)).toEqual([`team_member:${h.tenant.members.admin}`]);
    });

    it('rotates the secret: a different one, shown once, the old one still signing for the overlap', async () => {
      const { secret, id } = await register({ url: receiver.url, events: ['*'] });
      const rotated = await webPost(h.app, admin, `/app/webhooks/${id}/rotate`);
      expect(rotated.statusCode, rotated.body).toBe(200);
      const fresh = SECRET.exec(rotated.body)?.[1];
      expect(fresh).toMatch(/^whsec_/);
      expect(fresh).not.toBe(secret);
      expect(rotated.body).toContain('The previous secret keeps working for the overlap period');
      expect((await apiEndpoint(id)).json().secret_hint).toBe(`••••${fresh!.slice(-4)}`);

      const again = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(again.body).not.toContain(fresh!);
      expect(again.body).toContain('the previous secret also signs until');

      // Both secrets verify the next message (a signature with each).
      receiver.setSecrets([fresh!, secret]);
      const before = receiver.requests.length;
      await emitEvent(
        h.database,
        h.tenant.id,
        'export.started',
        { export_id: 'e2', data: {} },
        { endpointIds: [id] },
      );
      await deliver();
      const received = receiver.requests.slice(before);
      expect(received).toHaveLength(1);
      expect(received[0]!.verifiedWith).toEqual([0, 1]);
    });

    it('shows a disabled endpoint with its reason, and enables it again', async () => {
      const { secret, id } = await register({ url: receiver.url, events: ['schedule.run.failed'] });
      receiver.setSecrets([secret]);
      receiver.failNext(1, 410);
      await emitEvent(
        h.database,
        h.tenant.id,
        'schedule.run.failed',
        { schedule_id: 's1', data: {} },
        { endpointIds: [id] },
      );
      await deliver();
      expect((await apiEndpoint(id)).json().status).toBe('disabled');

      const page = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(page.body).toContain('<mark class="status status-disabled">Disabled</mark>');
      expect(page.body).toContain(`action="/app/webhooks/${id}/enable"`);
      expect(page.body).toMatch(/<td>410<\/td>/);
      const list = await webGet(h.app, admin, '/app/webhooks');
      expect(list.body).toContain('status-disabled');

      const enabled = await webPost(h.app, admin, `/app/webhooks/${id}/enable`);
      expect(enabled.statusCode).toBe(303);
      expect(enabled.headers.location).toBe(`/app/webhooks/${id}`);
      expect((await apiEndpoint(id)).json().status).toBe('active');
      const after = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(after.body).toContain('The endpoint is enabled.');
      expect(after.body).not.toContain(`action="/app/webhooks/${id}/enable"`);
    });

    it('deletes an endpoint', async () => {
      const { id } = await register({ url: receiver.url, description: 'to delete', events: ['*'] });
      const deleted = await webPost(h.app, admin, `/app/webhooks/${id}/delete`);
      expect(deleted.statusCode).toBe(303);
      expect(deleted.headers.location).toBe('/app/webhooks');
      expect((await apiEndpoint(id)).statusCode).toBe(404);
      expect((await webGet(h.app, admin, `/app/webhooks/${id}`)).statusCode).toBe(404);
    });

    it('keeps the values and says what is wrong when the service refuses the form', async () => {
      const count = async () =>
        Number(
          (
            await sql<{
              n: string;
            }>`SELECT count(*) AS n FROM webhook_endpoints WHERE tenant_id = ${h.tenant.id}`.execute(
              h.database.db,
            )
          ).rows[0]!.n,
        );
      const before = await count();
      const blocked = await webPost(h.app, admin, '/app/webhooks', {
        url: 'http://10.1.2.3/hooks',
        description: 'private',
        events: ['export.failed'],
      });
      expect(blocked.statusCode).toBe(400);
      expect(blocked.body).toContain('role="alert"');
      expect(blocked.body).toContain('value="http://10.1.2.3/hooks"');
      expect(blocked.body).toMatch(/value="export\.failed" checked/);
      const none = await webPost(h.app, admin, '/app/webhooks', { url: receiver.url });
      expect(none.statusCode).toBe(400);
      expect(none.body).toContain('at least one event');
      expect(await count()).toBe(before);
    });

    it('escapes what the member typed', async () => {
      const { res } = await register({
        url: receiver.url,
        description: '<script>alert(1)</script>',
        events: ['*'],
      });
      const list = await webGet(h.app, admin, '/app/webhooks');
      for (const body of [res.body, list.body]) {
        expect(body).not.toContain('<script>alert(1)</script>');
        expect(body).toContain('&#60;script&#62;alert(1)&#60;/script&#62;');
      }
    });

    it('shows managers nothing of webhooks and refuses them when forced', async () => {
      const { id } = await register({ url: receiver.url, events: ['*'] });
      const home = await webGet(h.app, manager, '/app/exports');
      expect(home.statusCode).toBe(200);
      expect(home.body).not.toContain('href="/app/webhooks"');
      const list = await webGet(h.app, manager, '/app/webhooks');
      expect(list.statusCode).toBe(403);
      expect(list.body).not.toContain(receiver.url);
      expect((await webGet(h.app, manager, `/app/webhooks/${id}`)).statusCode).toBe(403);
      expect(
        (await webPost(h.app, manager, '/app/webhooks', { url: receiver.url, events: ['*'] })).statusCode,
      ).toBe(403);
      for (const action of ['rotate', 'enable', 'delete'])
        expect((await webPost(h.app, manager, `/app/webhooks/${id}/${action}`)).statusCode).toBe(403);
      expect((await apiEndpoint(id)).json().previous_secret_expires_at).toBeNull();
    });

    it("answers 404 for another tenant's endpoint and changes nothing", async () => {
      const theirs = await h.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(h.otherKeys.admin),
        payload: { url: receiver.url, description: 'theirs' },
      });
      expect(theirs.statusCode, theirs.body).toBe(201);
      const id = theirs.json().id as string;
      const page = await webGet(h.app, admin, `/app/webhooks/${id}`);
      expect(page.statusCode).toBe(404);
      expect(page.body).not.toContain('theirs');
      for (const action of ['rotate', 'enable', 'delete'])
        expect((await webPost(h.app, admin, `/app/webhooks/${id}/${action}`)).statusCode).toBe(404);
      const still = await apiEndpoint(id, h.otherKeys.admin);
      expect(still.statusCode).toBe(200);
      expect(still.json().previous_secret_expires_at).toBeNull();
      expect((await webGet(h.app, admin, '/app/webhooks')).body).not.toContain('theirs');
      expect((await webGet(h.app, admin, '/app/webhooks/not-a-uuid')).statusCode).toBe(404);
    });

    it('refuses a form without the CSRF token', async () => {
      const res = await webPost(
        h.app,
        admin,
        '/app/webhooks',
        { url: receiver.url, events: ['*'] },
        { csrf: false },
      );
      expect(res.statusCode).toBe(403);
    });
  });
}
