import { sql } from 'kysely';
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword as scryptHash } from '../src/seed/tenant.ts';
import { inviteMember } from '../src/web/accounts.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { absorbCookies, cookieHeader, csrfOf, signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { until } from './support/wait.ts';

const PASSWORD = 'correct horse battery staple';

/** Signing in to the dashboard: passwords, throttle and lockout, sessions, two-factor, resets, invitations. */
for (const dialect of DIALECTS) {
  describe(`dashboard sign-in on ${dialect}`, () => {
    let h: ExportHarness;
    let smtp: TestSmtpServer;
    let email: string;

    beforeAll(async () => {
      smtp = await startSmtpServer();
      h = await exportHarness(dialect, {
        web: true,
        workers: true,
        env: { FERRY_SMTP_URL: smtp.url, FERRY_MAIL_FROM: 'ferry@example.test' },
      });
      // The reference schema's scrypt hash, as the platform stores it.
      const hash = await scryptHash(PASSWORD, '00112233445566778899aabb');
      const row = await sql<{ email: string }>`UPDATE team_members SET password_hash = ${hash}
        WHERE id = ${h.tenant.members.manager} RETURNING email`.execute(h.database.db);
      email = row.rows[0]!.email;
    }, 120_000);
    afterAll(async () => {
      await h?.close();
      await smtp?.stop();
    });

    /** The sign-in form, then its POST with the form's CSRF token; the cookies end up in `jar`. */
    async function signIn(jar: Record<string, string>, form: Record<string, string>) {
      const page = await h.app.inject({ url: '/signin', headers: { cookie: cookieHeader(jar) } });
      absorbCookies(jar, page.headers['set-cookie']);
      const res = await h.app.inject({
        method: 'POST',
        url: '/signin',
        headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({ ...form, _csrf: csrfOf(page.body), next: '/app/keys' }).toString(),
      });
      absorbCookies(jar, res.headers['set-cookie']);
      return res;
    }

    it('signs in with the stored scrypt hash, replaces it with argon2id, and sets a safe cookie', async () => {
      const jar: Record<string, string> = {};
      const res = await signIn(jar, { email: email.toUpperCase(), password: PASSWORD });
      expect(res.statusCode, res.body).toBe(303);
      expect(res.headers.location).toBe('/app/keys');
      const cookie = [res.headers['set-cookie']].flat().find((c) => String(c).startsWith('ferry_session='))!;
      expect(cookie).toMatch(/HttpOnly/i);
      expect(cookie).toMatch(/SameSite=Lax/i);
      const stored = await sql<{
        password_hash: string;
      }>`SELECT password_hash FROM team_members WHERE id = ${h.tenant.members.manager}`.execute(
        h.database.db,
      );
      expect(stored.rows[0]!.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      // The new hash works too, and the session opens the dashboard.
      const page = await h.app.inject({ url: '/app/exports', headers: { cookie: cookieHeader(jar) } });
      expect(page.statusCode).toBe(200);
      expect((await signIn({}, { email, password: PASSWORD })).statusCode).toBe(303);
    });

    it('answers an unknown email exactly like a wrong password', async () => {
      const wrong = await signIn({}, { email, password: 'not the password' });
      const unknown = await signIn({}, { email: 'nobody@nowhere.example', password: 'not the password' });
      expect(wrong.statusCode).toBe(401);
      expect(unknown.statusCode).toBe(401);
      const message = (body: string) => /<p class="error" role="alert">([^<]*)<\/p>/.exec(body)?.[1];
      expect(message(unknown.body)).toBe(message(wrong.body));
      expect(message(wrong.body)).toBe('The email or password is not right.');
    });

    it('ends a session after the idle timeout and on sign-out', async () => {
      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      expect((await webGet(h.app, session, '/app/exports')).statusCode).toBe(200);
      h.clock.advance(9 * 3_600_000);
      const idle = await webGet(h.app, session, '/app/exports');
      expect(idle.statusCode).toBe(303);
      expect(idle.headers.location).toBe('/signin?next=%2Fapp%2Fexports');
      const fresh = await signInAs(h.app, h.database, h.tenant, 'admin');
      const out = await webPost(h.app, fresh, '/signout');
      expect(out.statusCode).toBe(303);
      const cookie = { ...fresh.cookies };
      // The old cookie no longer opens anything, even if a browser kept it.
      const token = (await signInAs(h.app, h.database, h.tenant, 'admin')).cookies.ferry_session;
      expect(token).not.toBe(cookie.ferry_session);
      const after = await h.app.inject({
        url: '/app/exports',
        headers: { cookie: `ferry_session=${cookie.ferry_session ?? 'x'}` },
      });
      expect(after.statusCode).toBe(303);
    });

    it('asks for the TOTP code after the password once two-factor is on, and accepts each code once', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const enrol = await webPost(h.app, admin, '/app/account/two-factor');
      expect(enrol.statusCode).toBe(200);
      const secret = /Key: <code>([A-Z2-7]+)<\/code>/.exec(enrol.body)![1]!;
      const totp = new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' });
      const codeAt = (ms: number) => totp.generate({ timestamp: ms });
      const confirm = await webPost(h.app, admin, '/app/account/two-factor/confirm', {
        code: codeAt(h.clock.now().getTime()),
      });
      expect(confirm.statusCode).toBe(303);
      // Sign in with a password: the member is admin of the tenant; give them one.
      const hash = await scryptHash(PASSWORD, 'aabbccddeeff001122334455');
      const row = await sql<{ email: string }>`UPDATE team_members SET password_hash = ${hash}
        WHERE id = ${h.tenant.members.admin} RETURNING email`.execute(h.database.db);
      const jar: Record<string, string> = {};
      const first = await signIn(jar, { email: row.rows[0]!.email, password: PASSWORD });
      expect(first.statusCode).toBe(303);
      expect(first.headers.location).toBe('/signin/two-factor?next=%2Fapp%2Fkeys');
      // The half-open session does not open the dashboard.
      expect(
        (await h.app.inject({ url: '/app/keys', headers: { cookie: cookieHeader(jar) } })).statusCode,
      ).toBe(303);
      const form = await h.app.inject({ url: '/signin/two-factor', headers: { cookie: cookieHeader(jar) } });
      absorbCookies(jar, form.headers['set-cookie']);
      const submit = (code: string) =>
        h.app.inject({
          method: 'POST',
          url: '/signin/two-factor',
          headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ code, next: '/app/keys', _csrf: csrfOf(form.body) }).toString(),
        });
      // The code that confirmed the enrolment was used already.
      expect((await submit(codeAt(h.clock.now().getTime()))).statusCode).toBe(401);
      h.clock.advance(30_000);
      const ok = await submit(codeAt(h.clock.now().getTime()));
      expect(ok.statusCode).toBe(303);
      expect(ok.headers.location).toBe('/app/keys');
      expect(
        (await h.app.inject({ url: '/app/keys', headers: { cookie: cookieHeader(jar) } })).statusCode,
      ).toBe(200);
    });

    it('emails a reset link that sets a new password once, and signs out the other sessions', async () => {
      const other = await signInAs(h.app, h.database, h.tenant, 'manager');
      const before = smtp.messages.length;
      const jar: Record<string, string> = {};
      const page = await h.app.inject({ url: '/signin/forgot' });
      absorbCookies(jar, page.headers['set-cookie']);
      const asked = await h.app.inject({
        method: 'POST',
        url: '/signin/forgot',
        headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({ email, _csrf: csrfOf(page.body) }).toString(),
      });
      expect(asked.statusCode).toBe(200);
      const unknown = await h.app.inject({
        method: 'POST',
        url: '/signin/forgot',
        headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({
          email: 'nobody@nowhere.example',
          _csrf: csrfOf(page.body),
        }).toString(),
      });
      expect(unknown.body.replace('nobody@nowhere.example', email)).toBe(
        asked.body.replace(/_csrf" value="[^"]+"/, ''),
      );
      const mail = await until('the reset email', async () =>
        smtp.messages.slice(before).find((m) => m.to.includes(email)),
      );
      const link = /http:\/\/[^\s]+\/signin\/reset\/([A-Za-z0-9_-]{43})/.exec(mail.mail.text ?? '')!;
      const path = new URL(link[0]).pathname;
      const form = await h.app.inject({ url: path });
      expect(form.statusCode).toBe(200);
      absorbCookies(jar, form.headers['set-cookie']);
      const post = (password: string, repeat = password) =>
        h.app.inject({
          method: 'POST',
          url: path,
          headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ password, repeat, _csrf: csrfOf(form.body) }).toString(),
        });
      expect((await post('short')).statusCode).toBe(400);
      expect((await post('a new long password 1', 'a different one 123')).statusCode).toBe(400);
      const done = await post('a new long password 1');
      expect(done.statusCode).toBe(303);
      expect((await post('a new long password 1')).statusCode).toBe(410);
      expect((await webGet(h.app, other, '/app/exports')).statusCode).toBe(303);
      expect((await signIn({}, { email, password: 'a new long password 1' })).statusCode).toBe(303);
      expect((await signIn({}, { email, password: PASSWORD })).statusCode).toBe(401);
    });

    it('lets an invited member choose a password and sign in with the role they were given', async () => {
      const { token } = await inviteMember(
        h.database,
        { tenantId: h.tenant.id, email: 'New.Person@Example.com', name: 'New Person', role: 'analyst' },
        h.clock.now(),
      );
      const jar: Record<string, string> = {};
      const form = await h.app.inject({ url: `/signin/invite/${token}` });
      expect(form.body).toContain('new.person@example.com');
      absorbCookies(jar, form.headers['set-cookie']);
      const res = await h.app.inject({
        method: 'POST',
        url: `/signin/invite/${token}`,
        headers: { cookie: cookieHeader(jar), 'content-type': 'application/x-www-form-urlencoded' },
        payload: new URLSearchParams({
          password: 'invited and safe 42',
          repeat: 'invited and safe 42',
          _csrf: csrfOf(form.body),
        }).toString(),
      });
      expect(res.statusCode).toBe(303);
      absorbCookies(jar, res.headers['set-cookie']);
      const page = await h.app.inject({ url: '/app/exports', headers: { cookie: cookieHeader(jar) } });
      expect(page.body).toContain('(analyst)');
    });

    it('locks an account after five wrong passwords, even for the right one, and the API throttles failed keys', async () => {
      const target = await sql<{
        email: string;
      }>`SELECT email FROM team_members WHERE id = ${h.tenant.members.agent}`.execute(h.database.db);
      const agentEmail = target.rows[0]!.email;
      const hash = await scryptHash(PASSWORD, '0102030405060708090a0b0c');
      await sql`UPDATE team_members SET password_hash = ${hash} WHERE id = ${h.tenant.members.agent}`.execute(
        h.database.db,
      );
      for (let i = 0; i < 4; i++)
        expect((await signIn({}, { email: agentEmail, password: `wrong ${i}` })).statusCode).toBe(401);
      const fifth = await signIn({}, { email: agentEmail, password: 'wrong 5' });
      expect(fifth.statusCode).toBe(429);
      expect(fifth.body).toContain('Too many failed sign-ins');
      expect((await signIn({}, { email: agentEmail, password: PASSWORD })).statusCode).toBe(429);
      const failures = await sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_events
        WHERE tenant_id = ${h.tenant.id} AND action = 'session.sign_in_failed'`.execute(h.database.db);
      expect(failures.rows[0]!.n).toBeGreaterThanOrEqual(5);
      h.clock.advance(16 * 60_000);
      expect((await signIn({}, { email: agentEmail, password: PASSWORD })).statusCode).toBe(303);
      // The REST API: one address guessing keys is turned away after 30 failures.
      const bad = `fy_live_${'A'.repeat(43)}`;
      let status = 0;
      for (let i = 0; i < 40 && status !== 429; i++)
        status = (await h.app.inject({ url: '/api/v1/exports', headers: bearer(bad) })).statusCode;
      expect(status).toBe(429);
      const valid = await h.app.inject({ url: '/api/v1/exports', headers: bearer(h.keys.admin) });
      expect(valid.statusCode).toBe(429);
      expect(valid.json().code).toBe('rate_limited');
    });
  });
}
