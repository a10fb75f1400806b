import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import {
  absorbCookies,
  cookieHeader,
  csrfOf,
  signInAs,
  type WebSession,
  webGet,
  webPost,
} from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { until } from './support/wait.ts';

/** The privacy center (data subjects) and the DSAR dashboard (the tenant's team). */
for (const dialect of DIALECTS) {
  describe(`the privacy center and privacy operations on ${dialect}`, () => {
    let h: ExportHarness;
    let smtp: TestSmtpServer;
    let slug: string;
    let manager: WebSession;

    beforeAll(async () => {
      smtp = await startSmtpServer();
      h = await exportHarness(dialect, {
        web: true,
        workers: true,
        env: { FERRY_SMTP_URL: smtp.url, FERRY_MAIL_FROM: 'privacy@example.test' },
      });
      slug = (
        await sql<{ slug: string }>`SELECT slug FROM tenants WHERE id = ${h.tenant.id}`.execute(h.database.db)
      ).rows[0]!.slug;
      manager = await signInAs(h.app, h.database, h.tenant, 'manager');
    }, 120_000);
    afterAll(async () => {
      await h?.close();
      await smtp?.stop();
    });

    /** A visitor's form: the page's CSRF token and cookie, then the POST. */
    async function visitorPost(path: string, form: Record<string, string>, ip = '203.0.113.7') {
      const jar: Record<string, string> = {};
      const page = await h.app.inject({ url: path, remoteAddress: ip });
      absorbCookies(jar, page.headers['set-cookie']);
      const res = await h.app.inject({
        method: 'POST',
        url: path,
        remoteAddress: ip,
        headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({ ...form, _csrf: csrfOf(page.body) }).toString(),
      });
      return { res, jar };
    }

    const customerEmail = async () =>
      (
        await sql<{
          email: string;
        }>`SELECT email FROM customers WHERE tenant_id = ${h.tenant.id} AND email LIKE '%@%' ORDER BY email LIMIT 1`.execute(
          h.database.db,
        )
      ).rows[0]!.email;

    it('answers a known and an unknown address the same way, and emails the code with the status link', async () => {
      const known = await customerEmail();
      const a = await visitorPost(`/privacy/${slug}/export`, { email: known, regulation: 'gdpr' });
      const b = await visitorPost(`/privacy/${slug}/export`, {
        email: 'stranger@nowhere.example',
        regulation: 'gdpr',
      });
      expect(a.res.statusCode).toBe(303);
      expect(b.res.statusCode).toBe(303);
      const shape = (location: string) => location.replace(/[0-9a-f-]{36}\/[A-Za-z0-9_-]+$/, '{id}/{token}');
      expect(shape(String(a.res.headers.location))).toBe(shape(String(b.res.headers.location)));
      const pageA = await h.app.inject({ url: String(a.res.headers.location) });
      const pageB = await h.app.inject({ url: String(b.res.headers.location) });
      const strip = (body: string) =>
        body.replace(/requests\/[0-9a-f-]{36}\/[A-Za-z0-9_-]+/g, '').replace(/value="[^"]+"/g, '');
      expect(strip(pageA.body)).toBe(strip(pageB.body));
      const mail = await until('the code email', async () => smtp.messages.find((m) => m.to.includes(known)));
      expect(mail.mail.text).toContain(`/privacy/${slug}/requests/`);
      expect(mail.mail.text).toMatch(/\n {4}\d{6}\n/);
    });

    it("refuses a status page with a wrong token, or under another tenant's address", async () => {
      const { res } = await visitorPost(`/privacy/${slug}/export`, {
        email: 'someone@example.org',
        regulation: 'gdpr',
      });
      const location = String(res.headers.location);
      expect((await h.app.inject({ url: location })).statusCode).toBe(200);
      const forged = location.replace(/[A-Za-z0-9_-]+$/, 'A'.repeat(32));
      expect((await h.app.inject({ url: forged })).statusCode).toBe(404);
      const otherSlug = (
        await sql<{ slug: string }>`SELECT slug FROM tenants WHERE id = ${h.other.id}`.execute(h.database.db)
      ).rows[0]!.slug;
      expect(
        (await h.app.inject({ url: location.replace(`/privacy/${slug}/`, `/privacy/${otherSlug}/`) }))
          .statusCode,
      ).toBe(404);
      expect((await h.app.inject({ url: '/privacy/no-such-tenant' })).statusCode).toBe(404);
    });

    it('takes a wrong code with the tries left, then confirms with the right one', async () => {
      const email = 'coder@example.org';
      const { res, jar } = await visitorPost(`/privacy/${slug}/correct`, {
        email,
        name: 'Corrected Name',
        regulation: 'gdpr',
      });
      const location = String(res.headers.location);
      const mail = await until('the code', async () => smtp.messages.find((m) => m.to.includes(email)));
      const code = /\n {4}(\d{6})\n/.exec(mail.mail.text ?? '')![1]!;
      const page = await h.app.inject({ url: location, headers: { cookie: cookieHeader(jar) } });
      absorbCookies(jar, page.headers['set-cookie']);
      const submit = (value: string) =>
        h.app.inject({
          method: 'POST',
          url: `${location}/verify`,
          headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ code: value, _csrf: csrfOf(page.body) }).toString(),
        });
      const wrong = await submit(code === '000000' ? '111111' : '000000');
      expect(wrong.statusCode).toBe(400);
      expect(wrong.body).toContain('2 tries left');
      const right = await submit(code);
      expect(right.statusCode).toBe(303);
      const after = await h.app.inject({ url: location });
      expect(after.body).toContain('Our team reviews it');
      const id = /requests\/([0-9a-f-]{36})\//.exec(location)![1]!;
      const row = await sql<{
        type: string;
        changes: unknown;
        source: string;
      }>`SELECT type, changes, source FROM dsar_requests WHERE id = ${id}`.execute(h.database.db);
      expect(row.rows[0]).toMatchObject({
        type: 'rectification',
        source: 'privacy_center',
        changes: { name: 'Corrected Name' },
      });
    });

    it('explains what deletion removes and keeps, from the data map, and needs the confirmation', async () => {
      const page = await h.app.inject({ url: `/privacy/${slug}/delete` });
      expect(page.body).toContain('What is deleted');
      expect(page.body).toContain('What is anonymized');
      expect(page.body).toContain('customers');
      const { res } = await visitorPost(`/privacy/${slug}/delete`, {
        email: 'x@example.org',
        regulation: 'gdpr',
      });
      expect(res.statusCode).toBe(400);
      expect(res.body).toContain('tick the box');
    });

    it('limits each address to 20 forms in 15 minutes', async () => {
      let status = 0;
      for (let i = 0; i < 25 && status !== 429; i++)
        status = (
          await visitorPost(
            `/privacy/${slug}/consents`,
            { email: `c${i}@example.org`, choice: 'opt_out' },
            '198.51.100.9',
          )
        ).res.statusCode;
      expect(status).toBe(429);
      // Another address is not affected.
      expect(
        (
          await visitorPost(
            `/privacy/${slug}/consents`,
            { email: 'd@example.org', choice: 'opt_out' },
            '198.51.100.10',
          )
        ).res.statusCode,
      ).toBe(303);
    });

    it('applies the branding the team sets, and refuses what is not a colour or an https URL', async () => {
      const saved = await webPost(h.app, manager, '/app/privacy/center', {
        name: 'Acme Support',
        primary_color: '#aa3300',
        logo_url: 'https://cdn.acme.example/logo.svg',
      });
      expect(saved.statusCode).toBe(303);
      const page = await h.app.inject({ url: `/privacy/${slug}` });
      expect(page.body).toContain('Acme Support privacy center');
      expect(page.body).toContain('src="https://cdn.acme.example/logo.svg"');
      expect(page.body).toContain(`href="/privacy/${slug}/theme.css"`);
      const css = await h.app.inject({ url: `/privacy/${slug}/theme.css` });
      expect(css.body).toContain('--pico-primary:#aa3300');
      const bad = await webPost(h.app, manager, '/app/privacy/center', {
        primary_color: 'red;}body{display:none',
      });
      expect(bad.statusCode).toBe(400);
      const js = await webPost(h.app, manager, '/app/privacy/center', { logo_url: 'javascript:alert(1)' });
      expect(js.statusCode).toBe(400);
    });

    it('lets the team register, verify, extend and deny requests in the DSAR dashboard', async () => {
      const created = await webPost(h.app, manager, '/app/privacy/requests', {
        type: 'access',
        regulation: 'ccpa',
        source: 'email',
        email: 'phoned@example.org',
        note: 'called the hotline',
      });
      expect(created.statusCode).toBe(303);
      const path = String(created.headers.location);
      const id = /([0-9a-f-]{36})$/.exec(path)![1]!;
      const detail = await webGet(h.app, manager, path);
      expect(detail.body).toContain('phoned@example.org');
      expect(detail.body).toContain('Mark identity verified');
      const extended = await webPost(h.app, manager, `${path}/extend`, { reason: 'complex request' });
      expect(extended.statusCode).toBe(303);
      const denied = await webPost(h.app, manager, `${path}/deny`, { reason: 'not the account holder' });
      expect(denied.statusCode).toBe(303);
      const row = await sql<{
        status: string;
        extension_reason: string;
        closed_reason: string;
      }>`SELECT status, extension_reason, closed_reason FROM dsar_requests WHERE id = ${id}`.execute(
        h.database.db,
      );
      expect(row.rows[0]).toMatchObject({
        status: 'denied',
        extension_reason: 'complex request',
        closed_reason: 'not the account holder',
      });
      // A closed request offers no more actions, and forcing one is refused by the same rule as the API.
      const closed = await webGet(h.app, manager, path);
      expect(closed.body).not.toContain('Mark identity verified');
      expect((await webPost(h.app, manager, `${path}/approve`)).statusCode).toBe(409);
      const list = await webGet(h.app, manager, '/app/privacy');
      expect(list.body).toContain('Recently closed');
      expect(list.body).toContain(`/app/privacy/requests/${id}`);
      // A closed request keeps no identifiers: the register shows that they are gone.
      expect(list.body).not.toContain('phoned@example.org');
      expect(list.body).toContain('identifiers removed after closing');
    });
  });
}
