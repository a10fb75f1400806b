import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';
import { issueToken } from '../src/web/accounts.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';
/** The office: the addresses the tenant allows (documentation ranges, RFC 5737 and RFC 3849). */
const OFFICE = '203.0.113.9';
const OFFICE_V6 = '2001:db8:abcd::5';
const OUTSIDE = '198.51.100.77';
const OUTSIDE_V6 = '2001:db8:abce::5';

/**
 * IP allow-lists: the tenant's and a key's list on API routes, bound download links, the
 * dashboard and the live stream; X-Forwarded-For only through a trusted proxy (the test server
 * trusts 127.0.0.1, so `inject` from other addresses is an untrusted peer); dashboard session
 * timeouts and ending a session.
 */
for (const dialect of DIALECTS) {
  describe(`IP allow-lists on ${dialect}`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, {
        web: true,
        workers: true,
        conversations: 6,
        env: { FERRY_TRUSTED_PROXIES: '127.0.0.1/32' },
      });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const get = (
      url: string,
      remoteAddress: string,
      headers: Record<string, string> = {},
      key = h.keys.admin,
    ) => h.app.inject({ method: 'GET', url, remoteAddress, headers: { ...bearer(key), ...headers } });
    const putList = (list: unknown[], remoteAddress: string) =>
      h.app.inject({
        method: 'PUT',
        url: '/api/v1/account/ip-allowlist',
        remoteAddress,
        headers: bearer(h.keys.admin),
        payload: { ip_allowlist: list },
      });
    const refusals = async () =>
      (
        await sql<{ id: string; actor: string; ip_address: string | null; data_type: string | null }>`
          SELECT id, actor, ip_address, data_type FROM audit_events
          WHERE tenant_id = ${h.tenant.id} AND action = 'ip.refused'`.execute(h.database.db)
      ).rows;
    /** The refusals recorded since `before` (an earlier answer of `refusals`). */
    const since = async (before: { id: string }[]) => {
      const seen = new Set(before.map((r) => r.id));
      return (await refusals()).filter((r) => !seen.has(r.id)).map(({ id: _id, ...rest }) => rest);
    };

    it('validates the list, naming the entry, and refuses a list without the saving address', async () => {
      const bad = await putList(['203.0.113.0/24', '10.0.0.0/33'], OFFICE);
      expect(bad.statusCode).toBe(400);
      expect(bad.headers['content-type']).toBe(PROBLEM);
      expect(bad.json().code).toBe('invalid_parameter');
      expect(bad.json().detail).toContain('"10.0.0.0/33"');
      const junk = await putList(['office'], OFFICE);
      expect(junk.statusCode).toBe(400);
      expect(junk.json().detail).toContain('"office"');
      const lockout = await putList(['192.0.2.0/24'], OFFICE);
      expect(lockout.statusCode).toBe(400);
      expect(lockout.json().detail).toContain(OFFICE);
      expect(lockout.json().detail).toContain('lock you out');
      const saved = await putList([' 203.0.113.0/24', '2001:DB8:ABCD::/48', OFFICE], OFFICE);
      expect(saved.statusCode, saved.body).toBe(200);
      expect(saved.json().ip_allowlist).toEqual(['203.0.113.0/24', '2001:db8:abcd::/48', `${OFFICE}/32`]);
      const stored = await sql<{ ip_allowlist: string[] }>`
        SELECT ip_allowlist FROM tenant_access WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db);
      expect(stored.rows[0]!.ip_allowlist).toEqual(saved.json().ip_allowlist);
    });

    it('refuses API requests from outside the list with 403 ip_not_allowed and one audit event', async () => {
      const before = await refusals();
      expect((await get('/api/v1/usage', OFFICE)).statusCode).toBe(200);
      expect((await get('/api/v1/usage', `::ffff:${OFFICE}`)).statusCode).toBe(200);
      expect((await get('/api/v1/usage', OFFICE_V6)).statusCode).toBe(200);
      const refused = await get('/api/v1/usage', OUTSIDE);
      expect(refused.statusCode).toBe(403);
      expect(refused.headers['content-type']).toBe(PROBLEM);
      expect(refused.json().code).toBe('ip_not_allowed');
      expect((await get('/api/v1/usage', OUTSIDE_V6)).json().code).toBe('ip_not_allowed');
      const rows = await since(before);
      expect(rows.map((r) => r.ip_address).sort()).toEqual([OUTSIDE, OUTSIDE_V6].sort());
      for (const row of rows) {
        expect(row.actor).toMatch(/^api_key:[0-9a-f-]{36}$/);
        expect(row.data_type).toBe('GET /api/v1/usage');
      }
      for (const row of rows) expect(JSON.stringify(row)).not.toContain(h.keys.admin.slice(8));
    });

    it('refuses every authenticated route of the API document from outside the list', async () => {
      // Walks the OpenAPI document, so a route added later is walked too.
      const doc = (
        h.app as unknown as { swagger(): { paths: Record<string, Record<string, { security?: unknown[] }>> } }
      ).swagger();
      const walked: string[] = [];
      const before = await refusals();
      for (const [template, operations] of Object.entries(doc.paths)) {
        for (const [method, operation] of Object.entries(operations)) {
          if (!operation.security?.length) continue;
          // Every path parameter gets an id no tenant has: the list is checked before anything is looked up.
          const url = template.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
          const res = await h.app.inject({
            method: method.toUpperCase() as 'GET',
            url,
            remoteAddress: OUTSIDE,
            headers: { ...bearer(h.keys.admin), 'idempotency-key': `walk-${walked.length}` },
            ...(['post', 'put', 'patch'].includes(method) ? { payload: {} } : {}),
          });
          expect(`${method.toUpperCase()} ${template} ${res.statusCode} ${res.headers['content-type']}`).toBe(
            `${method.toUpperCase()} ${template} 403 ${PROBLEM}`,
          );
          // A HEAD answer has no body to name the code.
          if (method !== 'head') expect(res.json().code).toBe('ip_not_allowed');
          walked.push(`${method} ${template}`);
        }
      }
      expect(walked.length).toBeGreaterThan(60);
      expect((await since(before)).length).toBe(walked.length);
    });

    it('ignores X-Forwarded-For from an untrusted peer', async () => {
      const before = await refusals();
      const spoofed = await get('/api/v1/usage', OUTSIDE, { 'x-forwarded-for': OFFICE });
      expect(spoofed.statusCode).toBe(403);
      expect((await since(before)).map((r) => r.ip_address)).toEqual([OUTSIDE]);
    });

    it("honours a trusted proxy's X-Forwarded-For over a real socket", async () => {
      await h.app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = h.app.server.address() as AddressInfo;
      const call = (forwarded?: string) =>
        fetch(`http://127.0.0.1:${port}/api/v1/usage`, {
          headers: { ...bearer(h.keys.admin), ...(forwarded ? { 'x-forwarded-for': forwarded } : {}) },
        });
      expect((await call(OFFICE)).status).toBe(200);
      // The client a chain of proxies names is the last address the trusted proxy did not add.
      expect((await call(`${OFFICE}, ${OUTSIDE}`)).status).toBe(403);
      const direct = await call();
      expect(direct.status).toBe(403);
      expect(((await direct.json()) as { code: string }).code).toBe('ip_not_allowed');

      // The live stream: the upgrade carries no key; the allow-list is checked at the auth message.
      const stream = async (forwarded?: string) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/stream/export`, {
          headers: forwarded ? { 'x-forwarded-for': forwarded } : {},
        });
        const messages: Record<string, unknown>[] = [];
        const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
        ws.on('message', (data) => messages.push(JSON.parse(String(data))));
        await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
        ws.send(JSON.stringify({ type: 'auth', token: h.keys.admin, tenant_id: h.tenant.id }));
        const done = await Promise.race([
          closed,
          new Promise<null>((resolve) => {
            const poll = setInterval(() => {
              if (messages.some((m) => m.type === 'authenticated')) {
                clearInterval(poll);
                resolve(null);
              }
            }, 20);
          }),
        ]);
        ws.close();
        return { code: done, messages };
      };
      const before = await refusals();
      const refusedStream = await stream();
      expect(refusedStream.code).toBe(4403);
      expect(refusedStream.messages.at(-1)).toMatchObject({ type: 'error', code: 'ip_not_allowed' });
      expect(await since(before)).toEqual([
        expect.objectContaining({ ip_address: '127.0.0.1', data_type: 'GET /api/v1/stream/export' }),
      ]);
      const allowedStream = await stream(OFFICE_V6);
      expect(allowedStream.code).toBeNull();
      expect(allowedStream.messages[0]).toMatchObject({ type: 'authenticated', tenant_id: h.tenant.id });
    });

    it("checks a key's own list as well as the tenant's", async () => {
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        remoteAddress: OFFICE,
        headers: bearer(h.keys.admin),
        payload: { role: 'analyst', name: 'office printer "B" 🖨', allowed_ips: [`${OFFICE}/32`] },
      });
      expect(created.statusCode, created.body).toBe(201);
      expect(created.json().allowed_ips).toEqual([`${OFFICE}/32`]);
      const key = created.json().key as string;
      expect((await get('/api/v1/exports', OFFICE, {}, key)).statusCode).toBe(200);
      // Inside the tenant's /24 but not the key's /32.
      const refused = await get('/api/v1/exports', '203.0.113.10', {}, key);
      expect(refused.json().code).toBe('ip_not_allowed');
      expect(refused.json().detail).toContain("API key's IP allow-list");
      const bad = await h.app.inject({
        method: 'PATCH',
        url: `/api/v1/api-keys/${created.json().id}`,
        remoteAddress: OFFICE,
        headers: bearer(h.keys.admin),
        payload: { allowed_ips: ['203.0.113.0/24', 'fe80::/129'] },
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().detail).toContain('"fe80::/129"');
      const cleared = await h.app.inject({
        method: 'PATCH',
        url: `/api/v1/api-keys/${created.json().id}`,
        remoteAddress: OFFICE,
        headers: bearer(h.keys.admin),
        payload: { allowed_ips: [] },
      });
      expect(cleared.json().allowed_ips).toEqual([]);
      expect((await get('/api/v1/exports', '203.0.113.10', {}, key)).statusCode).toBe(200);
    });

    it('binds download links to the list unless asked not to', async () => {
      // Through the trusted proxy, naming the office.
      const created = await requestExport(
        h.app,
        h.keys.admin,
        { datasets: ['messages'], format: 'csv' },
        { 'x-forwarded-for': OFFICE },
      );
      // Waits on the database (the harness's own wait asks the API from 127.0.0.1, refused here).
      for (let i = 0; i < 600; i++) {
        const row = await sql<{
          status: string;
        }>`SELECT status FROM export_requests WHERE id = ${created.id}`.execute(h.database.db);
        if (['completed', 'failed'].includes(row.rows[0]!.status)) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const done = (await get(`/api/v1/exports/${created.id}`, OFFICE)).json() as {
        id: string;
        status: string;
        files: { bytes: number }[];
      };
      expect(done.status).toBe('completed');
      const link = async (query = '') => {
        const res = await get(`/api/v1/exports/${done.id}/download${query}`, OFFICE);
        expect(res.statusCode, res.body).toBe(200);
        const url = res.json().url as string;
        return url.slice(url.indexOf('/api/'));
      };
      const bound = await link();
      expect(bound).toContain('bound=1');
      const from = (path: string, remoteAddress: string) =>
        h.app.inject({ method: 'GET', url: path, remoteAddress });
      const ok = await from(bound, OFFICE);
      expect(ok.statusCode).toBe(200);
      expect(ok.rawPayload.length).toBe(done.files[0]!.bytes);
      const before = await refusals();
      const refused = await from(bound, OUTSIDE);
      expect(refused.statusCode).toBe(403);
      expect(refused.json().code).toBe('ip_not_allowed');
      expect(await since(before)).toEqual([
        expect.objectContaining({ actor: 'download_link', ip_address: OUTSIDE }),
      ]);
      // Dropping the binding breaks the signature.
      expect((await from(bound.replace('&bound=1', ''), OUTSIDE)).json().code).toBe('link_invalid');
      const open = await link('?bind_ip_allowlist=false');
      expect(open).not.toContain('bound=');
      expect((await from(open, OUTSIDE)).statusCode).toBe(200);
    });

    it('refuses dashboard pages from outside the list with an HTML page', async () => {
      // Signed in through the trusted proxy (127.0.0.1) naming the office.
      // Signing in from outside the list starts no session.
      const sessions = async () =>
        Number(
          (
            await sql<{
              n: string | number;
            }>`SELECT count(*) AS n FROM web_sessions WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db)
          ).rows[0]!.n,
        );
      const sessionsBefore = await sessions();
      const refusalsBefore = await refusals();
      const token = await issueToken(
        h.database,
        { tenantId: h.tenant.id, memberId: h.tenant.members.admin },
        'sign_in',
        new Date(),
      );
      const outside = await h.app.inject({
        method: 'GET',
        url: `/signin/link/${token}`,
        remoteAddress: OUTSIDE,
      });
      expect(outside.statusCode).toBe(403);
      expect(outside.headers['content-type']).toMatch(/^text\/html/);
      expect(outside.headers['set-cookie'] ?? '').not.toContain('ferry_session');
      expect(await sessions()).toBe(sessionsBefore);
      expect(await since(refusalsBefore)).toEqual([
        expect.objectContaining({
          actor: `team_member:${h.tenant.members.admin}`,
          ip_address: OUTSIDE,
          data_type: 'sign-in',
        }),
      ]);
      const session = await signInAs(h.app, h.database, h.tenant, 'admin').catch(() => null);
      expect(session).toBeNull(); // the sign-in's first page comes from 127.0.0.1: refused
      await putList([], OFFICE);
      const signed = await signInAs(h.app, h.database, h.tenant, 'admin');
      expect((await putList(['203.0.113.0/24'], OFFICE)).statusCode).toBe(200);
      const cookie = Object.entries(signed.cookies)
        .map(([k, v]) => `${k}=${v}`)
        .join('; ');
      const page = (remoteAddress: string, headers: Record<string, string> = {}) =>
        h.app.inject({ method: 'GET', url: '/app/exports', remoteAddress, headers: { cookie, ...headers } });
      expect((await page(OFFICE)).statusCode).toBe(200);
      expect((await page('127.0.0.1', { 'x-forwarded-for': OFFICE })).statusCode).toBe(200);
      const before = await refusals();
      const refused = await page(OUTSIDE, { 'x-forwarded-for': OFFICE });
      expect(refused.statusCode).toBe(403);
      expect(refused.headers['content-type']).toMatch(/^text\/html/);
      expect(refused.body).toContain('Address not allowed');
      expect(await since(before)).toEqual([
        expect.objectContaining({ actor: `team_member:${h.tenant.members.admin}`, ip_address: OUTSIDE }),
      ]);
    });

    it("ends dashboard sessions at the tenant's idle and absolute timeouts, and a member ends one", async () => {
      await putList([], OFFICE);
      const set = await h.app.inject({
        method: 'PUT',
        url: '/api/v1/account/session-timeouts',
        headers: bearer(h.keys.admin),
        payload: { session_idle_minutes: 30, session_absolute_minutes: 60 },
      });
      expect(set.statusCode, set.body).toBe(200);
      expect(set.json()).toMatchObject({ session_idle_minutes: 30, session_absolute_minutes: 60 });
      const tooLong = await h.app.inject({
        method: 'PUT',
        url: '/api/v1/account/session-timeouts',
        headers: bearer(h.keys.admin),
        payload: { session_idle_minutes: 30, session_absolute_minutes: 20_000 },
      });
      expect(tooLong.statusCode).toBe(400);
      const minute = 60_000;

      const idle = await signInAs(h.app, h.database, h.tenant, 'manager');
      h.clock.advance(29 * minute);
      expect((await webGet(h.app, idle, '/app/exports')).statusCode).toBe(200);
      h.clock.advance(31 * minute);
      const expired = await webGet(h.app, idle, '/app/exports');
      expect(expired.statusCode).toBe(303);
      expect(expired.headers.location).toMatch(/^\/signin/);

      const busy = await signInAs(h.app, h.database, h.tenant, 'manager');
      for (let i = 0; i < 2; i++) {
        h.clock.advance(25 * minute);
        expect((await webGet(h.app, busy, '/app/exports')).statusCode).toBe(200);
      }
      h.clock.advance(11 * minute); // 61 minutes after sign-in, 11 after the last request
      expect((await webGet(h.app, busy, '/app/exports')).statusCode).toBe(303);

      const laptop = await signInAs(h.app, h.database, h.tenant, 'analyst');
      h.clock.advance(minute);
      const phone = await signInAs(h.app, h.database, h.tenant, 'analyst');
      const list = await webGet(h.app, laptop, '/app/account');
      const ids = [...list.body.matchAll(/\/app\/account\/sessions\/([0-9a-f-]{36})\/end/g)].map((m) => m[1]);
      const phoneRow = await sql<{ id: string }>`SELECT id FROM web_sessions
        WHERE team_member_id = ${h.tenant.members.analyst} AND ended_at IS NULL
        ORDER BY created_at DESC, id LIMIT 1`.execute(h.database.db);
      expect(ids).toContain(phoneRow.rows[0]!.id);
      const ended = await webPost(h.app, laptop, `/app/account/sessions/${phoneRow.rows[0]!.id}/end`);
      expect(ended.statusCode).toBe(303);
      expect((await webGet(h.app, phone, '/app/exports')).statusCode).toBe(303);
      expect((await webGet(h.app, laptop, '/app/exports')).statusCode).toBe(200);
    });

    it("lets an admin edit the workspace's list on the account page, and a key's on the keys page", async () => {
      await putList([], OFFICE);
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/account');
      expect(page.body).toContain('name="ip_allowlist"');
      const analyst = await signInAs(h.app, h.database, h.tenant, 'analyst');
      expect((await webGet(h.app, analyst, '/app/account')).body).not.toContain('name="ip_allowlist"');
      const lockout = await webPost(h.app, admin, '/app/account/ip-allowlist', {
        ip_allowlist: '10.0.0.0/8',
      });
      expect(lockout.statusCode).toBe(400);
      expect(lockout.body).toContain('lock you out');
      const saved = await webPost(h.app, admin, '/app/account/ip-allowlist', {
        ip_allowlist: '127.0.0.1\n2001:db8::/32, 10.0.0.0/8',
      });
      expect(saved.statusCode).toBe(303);
      const stored = await sql<{ ip_allowlist: string[] }>`
        SELECT ip_allowlist FROM tenant_access WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db);
      expect(stored.rows[0]!.ip_allowlist).toEqual(['127.0.0.1/32', '2001:db8::/32', '10.0.0.0/8']);
      const badKey = await webPost(h.app, admin, '/app/keys', {
        role: 'analyst',
        allowed_ips: '10.0.0.0/8 nope',
      });
      expect(badKey.statusCode).toBe(400);
      expect(badKey.body).toContain('&#34;nope&#34;');
      expect(
        (await webPost(h.app, admin, '/app/account/ip-allowlist', { ip_allowlist: '' })).statusCode,
      ).toBe(303);
    });
  });
}
