import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { createAdapters, JOBS } from '../src/compose.ts';
import type { Config } from '../src/config/config.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { createJobQueue, type JobQueue } from '../src/jobs/queue.ts';
import { startWorkers } from '../src/jobs/workers.ts';
import { createLogger } from '../src/lib/logger.ts';
import { authDb } from '../src/auth/tables.ts';
import { notifyOverdue } from '../src/privacy/dsar-service.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, dropJobsSchema, type TestDatabase } from './support/databases.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { until } from './support/wait.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';
import { createEndpoint } from '../src/webhooks/endpoints.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'dsar-lifecycle-test-secret-0123456789abcdef';

for (const dialect of DIALECTS) {
  describe(`data subject request lifecycle on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let config: Config;
    let queue: JobQueue;
    let smtp: TestSmtpServer;
    let receiver: TestWebhookReceiver;
    let tenant: TestTenant;
    let other: TestTenant;
    let keys: Record<Role, string>;
    let otherKeys: Record<Role, string>;
    let clock = Date.now();
    const now = () => new Date(clock);

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      smtp = await startSmtpServer();
      config = authTestConfig({
        FERRY_SECRET_KEY: SECRET,
        FERRY_SMTP_URL: smtp.url,
        FERRY_MAIL_FROM: 'privacy@example.com',
        FERRY_JOB_RETRY_DELAY_SECONDS: '1',
        FERRY_OUTBOUND_ALLOW: '127.0.0.1',
        ...t.env,
      });
      tenant = await createTenant(t.database);
      other = await createTenant(t.database);
      keys = await keysByRole(t.database, tenant);
      otherKeys = await keysByRole(t.database, other);
      const logger = createLogger({ logLevel: 'silent' });
      const { store, keyring, secrets } = await testAdapters(t.database, config);
      queue = await createJobQueue(t.database, config, logger, { definitions: JOBS });
      const adapters = createAdapters(config);
      app = await buildApp({
        database: t.database,
        config,
        logger,
        queue,
        store,
        signer: adapters.signer,
        secrets,
        now,
      });
      await app.ready();
      await startWorkers(
        queue,
        { database: t.database, config, logger, store, queue, now, keyring, secrets, ...adapters },
        JOBS,
      );
      receiver = await startWebhookReceiver();
      const { secret } = await createEndpoint(
        t.database,
        tenant.id,
        { url: receiver.url, events: ['*'] },
        { secrets, outbound: outboundPolicy(config.outboundAllow) },
      );
      receiver.setSecrets([secret]);
    }, 120_000);

    afterAll(async () => {
      await app?.close();
      await queue?.stop(2_000);
      await smtp?.stop();
      await receiver?.stop();
      await t?.drop();
      if (config) await dropJobsSchema(config);
    });

    const post = (url: string, payload: unknown, key = keys.admin) =>
      app.inject({ method: 'POST', url, headers: bearer(key), payload: payload as object });
    const get = (url: string, key = keys.admin) => app.inject({ url, headers: bearer(key) });

    async function create(body: Record<string, unknown>, key = keys.admin) {
      const res = await post('/api/v1/dsar', { regulation: 'gdpr', source: 'api', ...body }, key);
      expect(res.statusCode, res.body).toBe(201);
      return res.json();
    }

    async function codeFor(email: string, id: string): Promise<string> {
      const mail = await until(`the code email to ${email}`, () =>
        [...smtp.messages].reverse().find((m) => m.to.includes(email) && m.mail.text?.includes(id)),
      );
      // The code stands on a line of its own (an address may hold six digits too).
      const code = /^ {4}(\d{6})$/m.exec(mail.mail.text ?? '')?.[1];
      expect(code).toBeDefined();
      return code!;
    }

    async function statusOf(id: string, want: string) {
      return until(`request ${id} to be ${want}`, async () => {
        const res = await get(`/api/v1/dsar/${id}`);
        return res.json().status === want ? res.json() : undefined;
      });
    }

    test('an access request: the code goes by email, a wrong code counts, the right one verifies', async () => {
      const email = `Ana.Souza+${randomUUID().slice(0, 6)}@Example.COM`;
      const created = await create({ type: 'access', subject: { email } });
      expect(created.status).toBe('received');
      expect(created.subject).toEqual({ email: email.toLowerCase() });
      expect(created.days_left).toBeGreaterThanOrEqual(28);
      expect(created.links.self).toBe(`/api/v1/dsar/${created.id}`);
      const code = await codeFor(email.toLowerCase(), created.id);
      await statusOf(created.id, 'identity_pending');
      const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0');
      const bad = await post(`/api/v1/dsar/${created.id}/verify`, { code: wrong });
      expect(bad.statusCode).toBe(400);
      expect(bad.headers['content-type']).toContain('application/problem+json');
      expect(bad.json()).toMatchObject({ code: 'verification_failed', attempts_left: 2 });
      const ok = await post(`/api/v1/dsar/${created.id}/verify`, { code });
      expect(ok.statusCode, ok.body).toBe(200);
      expect(ok.json().verified_at).not.toBeNull();
      expect(ok.json().verification_method).toBe('email_code');
      // Access runs at once after verification; the stored code is gone.
      expect(['in_progress', 'completed', 'failed']).toContain(ok.json().status);
      const row = await t.database.db
        .withTables<{ dsar_requests: { id: string; verification_code_hash: string | null } }>()
        .selectFrom('dsar_requests')
        .select('verification_code_hash')
        .where('id', '=', created.id)
        .executeTakeFirstOrThrow();
      expect(row.verification_code_hash).toBeNull();
    });

    test('three wrong codes use the code up; a new code can be sent', async () => {
      const email = `locked-${randomUUID().slice(0, 6)}@example.com`;
      const created = await create({ type: 'portability', subject: { email } });
      const code = await codeFor(email, created.id);
      await statusOf(created.id, 'identity_pending');
      const wrong = code === '000000' ? '111111' : '000000';
      for (const left of [2, 1, 0]) {
        const res = await post(`/api/v1/dsar/${created.id}/verify`, { code: wrong });
        expect(res.json()).toMatchObject({ code: 'verification_failed', attempts_left: left });
      }
      const locked = await post(`/api/v1/dsar/${created.id}/verify`, { code });
      expect(locked.json()).toMatchObject({ code: 'verification_failed', attempts_left: 0 });
      const mine = () =>
        smtp.messages.filter((m) => m.to.includes(email) && m.mail.text?.includes(created.id)).length;
      const before = mine();
      const resent = await post(`/api/v1/dsar/${created.id}/resend-code`, {});
      expect(resent.statusCode, resent.body).toBe(200);
      await until('a second code email', () => (mine() > before ? true : undefined));
      const fresh = await codeFor(email, created.id);
      const ok = await post(`/api/v1/dsar/${created.id}/verify`, { code: fresh });
      expect(ok.statusCode, ok.body).toBe(200);
    });

    test('an erasure verified by a team member waits for approval, then runs', async () => {
      const created = await create({
        type: 'erasure',
        subject: { phone: '+49 151 23456789' },
        source: 'manual',
      });
      expect(created.subject).toEqual({ phone: '+4915123456789' });
      const early = await post(`/api/v1/dsar/${created.id}/approve`, {});
      expect(early.statusCode).toBe(409);
      expect(early.json().code).toBe('conflict');
      const short = await post(`/api/v1/dsar/${created.id}/verify`, { reason: '' });
      expect(short.statusCode).toBe(400);
      const verified = await post(`/api/v1/dsar/${created.id}/verify`, {
        reason: 'Called the customer back on the number in their account',
      });
      expect(verified.statusCode, verified.body).toBe(200);
      expect(verified.json()).toMatchObject({
        status: 'awaiting_approval',
        verification_method: 'team_member',
      });
      const approved = await post(`/api/v1/dsar/${created.id}/approve`, {}, keys.manager);
      expect(approved.statusCode, approved.body).toBe(200);
      expect(approved.json().approved_at).not.toBeNull();
      expect(['in_progress', 'completed', 'failed']).toContain(approved.json().status);
    });

    test('deny and cancel close a request and drop its identifiers; closed requests refuse more steps', async () => {
      const a = await create({ type: 'erasure', subject: { customer_id: randomUUID() }, source: 'email' });
      const noReason = await post(`/api/v1/dsar/${a.id}/deny`, {});
      expect(noReason.statusCode).toBe(400);
      const denied = await post(`/api/v1/dsar/${a.id}/deny`, {
        reason: 'The account belongs to someone else',
      });
      expect(denied.json()).toMatchObject({ status: 'denied', outcome: 'denied', subject: null });
      expect(denied.json().completed_at).not.toBeNull();
      const again = await post(`/api/v1/dsar/${a.id}/cancel`, {});
      expect(again.statusCode).toBe(409);
      const b = await create({ type: 'restriction', subject: { team_member_id: tenant.members.agent } });
      const cancelled = await post(`/api/v1/dsar/${b.id}/cancel`, { reason: 'Withdrawn by the subject' });
      expect(cancelled.json()).toMatchObject({
        status: 'cancelled',
        closed_reason: 'Withdrawn by the subject',
      });
    });

    test('an extension moves the deadline once, and is shown as extended while the request waits', async () => {
      const email = `slow-${randomUUID().slice(0, 6)}@example.com`;
      const created = await create({ type: 'erasure', subject: { email } });
      const extended = await post(`/api/v1/dsar/${created.id}/extend`, {
        reason: 'The request covers several years of records on two systems',
      });
      expect(extended.statusCode, extended.body).toBe(200);
      const view = extended.json();
      expect(view.status).toBe('extended');
      expect(new Date(view.due_at).getTime()).toBeGreaterThan(
        new Date(view.original_due_at).getTime() + 55 * 86_400_000,
      );
      expect(view.extension_reason).toContain('several years');
      const twice = await post(`/api/v1/dsar/${created.id}/extend`, { reason: 'Again' });
      expect(twice.statusCode).toBe(409);
      // The subject is told why, by email.
      await until('the extension notice', () =>
        smtp.messages.find((m) => m.to.includes(email) && m.mail.subject?.includes('more time')),
      );
      // Waiting steps still work under `extended`: a team member verifies, it then waits for approval.
      const verified = await post(`/api/v1/dsar/${created.id}/verify`, { reason: 'Signed letter on file' });
      expect(verified.json()).toMatchObject({ status: 'extended', stage: 'awaiting_approval' });
    });

    test('a repeated open request is linked to the first, not run twice', async () => {
      const email = `twice-${randomUUID().slice(0, 6)}@example.com`;
      const first = await create({ type: 'erasure', subject: { email } });
      const second = await create({ type: 'erasure', subject: { email: email.toUpperCase() } });
      expect(second).toMatchObject({
        duplicate_of: first.id,
        status: 'cancelled',
        outcome: 'duplicate',
        subject: null,
      });
      const otherType = await create({ type: 'access', subject: { email } });
      expect(otherType.duplicate_of).toBeNull();
    });

    test('CCPA: a third access request in 12 months is flagged excessive and waits for a decision', async () => {
      const email = `ccpa-${randomUUID().slice(0, 6)}@example.com`;
      for (let i = 0; i < 2; i++) {
        const r = await create({ type: 'access', regulation: 'ccpa', subject: { email } });
        expect(r.excessive).toBe(false);
        expect(r.confirm_by).not.toBeNull();
        await post(`/api/v1/dsar/${r.id}/cancel`, { reason: 'answered by phone' });
        // Cancelled requests do not count; mark this one answered instead.
        await t.database.db
          .withTables<{ dsar_requests: { id: string; status: string; stage: string } }>()
          .updateTable('dsar_requests')
          .set({ status: 'completed', stage: 'completed' })
          .where('id', '=', r.id)
          .execute();
      }
      const third = await create({ type: 'access', regulation: 'ccpa', subject: { email } });
      expect(third.excessive).toBe(true);
      expect(third.excessive_rule).toContain('two free access requests');
      const verified = await post(`/api/v1/dsar/${third.id}/verify`, {
        reason: 'Verified through the account',
      });
      expect(verified.json().status).toBe('awaiting_approval');
      // CCPA deadlines: 45 calendar days to answer.
      const days = (new Date(third.due_at).getTime() - new Date(third.received_at).getTime()) / 86_400_000;
      expect(days).toBeGreaterThanOrEqual(44);
      expect(days).toBeLessThanOrEqual(46);
    });

    test('the register: filters, paging, CSV for record-keeping, the summary', async () => {
      const page = await get('/api/v1/dsar?limit=2');
      expect(page.statusCode, page.body).toBe(200);
      expect(page.json().data).toHaveLength(2);
      const next = await get(`/api/v1/dsar?limit=2&cursor=${page.json().next_cursor}`);
      expect(next.json().data[0].id).not.toBe(page.json().data[1].id);
      const erasures = await get('/api/v1/dsar?type=erasure');
      expect(erasures.json().data.length).toBeGreaterThan(0);
      expect(erasures.json().data.every((r: { type: string }) => r.type === 'erasure')).toBe(true);
      const badStatus = await get('/api/v1/dsar?status=lost');
      expect(badStatus.statusCode).toBe(400);
      const csv = await get('/api/v1/dsar?format=csv');
      expect(csv.statusCode).toBe(200);
      expect(csv.headers['content-type']).toContain('text/csv');
      const lines = csv.body.trim().split('\n');
      expect(lines[0]).toBe('id,type,regulation,received,verified,due,completed,status,outcome');
      const all = (await get('/api/v1/dsar?limit=200')).json().data;
      expect(lines.length - 1).toBe(all.length);
      expect(csv.body).not.toContain('@example.com');
      // Earlier tests leave requests whose jobs may still move them on, so the
      // summary is compared with a register read between two equal summaries.
      await vi.waitFor(
        async () => {
          const before = await get('/api/v1/dsar/summary');
          expect(before.statusCode, before.body).toBe(200);
          const register = (await get('/api/v1/dsar?limit=200')).json().data;
          const after = await get('/api/v1/dsar/summary');
          expect(after.json()).toEqual(before.json());
          const open = register.filter(
            (r: { status: string }) => !['completed', 'denied', 'cancelled'].includes(r.status),
          );
          expect(after.json().open).toBe(open.length);
        },
        { timeout: 20_000, interval: 250 },
      );
    });

    test('overdue requests fire dsar.overdue once and show as overdue', async () => {
      const created = await create({
        type: 'opt_out',
        regulation: 'ccpa',
        subject: { email: `late-${randomUUID().slice(0, 6)}@example.com` },
      });
      clock += 50 * 86_400_000;
      try {
        const late = await get(`/api/v1/dsar/${created.id}`);
        expect(late.json()).toMatchObject({ overdue: true });
        expect(late.json().days_left).toBeLessThan(0);
        const listed = await get('/api/v1/dsar?overdue=true&limit=200');
        expect(listed.json().data.map((r: { id: string }) => r.id)).toContain(created.id);
        const deps = { database: t.database, config, queue, now };
        expect(await notifyOverdue(deps)).toBeGreaterThan(0);
        await notifyOverdue(deps);
        const events = await t.database.db
          .withTables<{ webhook_messages: { event: string; payload: string; tenant_id: string } }>()
          .selectFrom('webhook_messages')
          .select(['event', 'payload'])
          .where('tenant_id', '=', tenant.id)
          .where('event', '=', 'dsar.overdue')
          .execute();
        expect(events.filter((e) => e.payload.includes(created.id))).toHaveLength(1);
        expect(events.every((e) => !e.payload.includes('@example.com'))).toBe(true);
      } finally {
        clock -= 50 * 86_400_000;
      }
    });

    test('every transition is in the audit trail and fires its webhook event', async () => {
      const created = await create({
        type: 'erasure',
        subject: { email: `audit-${randomUUID().slice(0, 6)}@example.com` },
      });
      await post(`/api/v1/dsar/${created.id}/deny`, { reason: 'Not the account holder' });
      const audit = await authDb(t.database)
        .selectFrom('audit_events')
        .select(['action', 'actor'])
        .where('target_id', '=', created.id)
        .orderBy('occurred_at')
        .execute();
      expect(audit.map((a) => a.action)).toEqual(['dsar.received', 'dsar.denied']);
      expect(audit[1]!.actor).toMatch(/^api_key:/);
      const events = await t.database.db
        .withTables<{ webhook_messages: { event: string; payload: string; tenant_id: string } }>()
        .selectFrom('webhook_messages')
        .select(['event', 'payload'])
        .where('tenant_id', '=', tenant.id)
        .execute();
      const mine = events.filter((e) => e.payload.includes(created.id)).map((e) => e.event);
      expect(mine).toEqual(expect.arrayContaining(['dsar.received', 'dsar.denied']));
    });

    test('analysts and agents cannot see or make requests; other tenants see nothing', async () => {
      const created = await create({ type: 'access', subject: { customer_id: randomUUID() } });
      for (const role of ['analyst', 'agent'] as const) {
        expect((await get('/api/v1/dsar', keys[role])).statusCode).toBe(403);
        expect((await get(`/api/v1/dsar/${created.id}`, keys[role])).statusCode).toBe(403);
        const made = await post(
          '/api/v1/dsar',
          { type: 'access', regulation: 'gdpr', source: 'api', subject: { customer_id: randomUUID() } },
          keys[role],
        );
        expect(made.statusCode).toBe(403);
      }
      const foreign = await get(`/api/v1/dsar/${created.id}`, otherKeys.admin);
      expect(foreign.statusCode).toBe(404);
      const foreignDeny = await post(
        `/api/v1/dsar/${created.id}/deny`,
        { reason: 'not yours' },
        otherKeys.admin,
      );
      expect(foreignDeny.statusCode).toBe(404);
      expect((await get('/api/v1/dsar', otherKeys.admin)).json().data).toHaveLength(0);
    });

    test('bad bodies get problem documents naming the parameter', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ type: 'access', subject: {} }, 'subject'],
        [{ type: 'access', subject: { email: 'not-an-email' } }, 'subject.email'],
        [{ type: 'access', subject: { phone: '12' } }, 'subject.phone'],
        [{ type: 'access', subject: { customer_id: 'x' } }, 'subject.customer_id'],
        [{ type: 'rectification', subject: { email: 'a@example.com' } }, 'changes'],
        [
          { type: 'rectification', subject: { email: 'a@example.com' }, changes: { password: 'x' } },
          'changes',
        ],
        [{ type: 'access', subject: { email: 'a@example.com' }, changes: { name: 'x' } }, 'changes'],
        [{ type: 'forget_me', subject: { email: 'a@example.com' } }, 'type'],
      ];
      for (const [body, param] of cases) {
        const res = await post('/api/v1/dsar', { regulation: 'gdpr', source: 'api', ...body });
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.headers['content-type']).toContain('application/problem+json');
        expect(JSON.stringify(res.json()), JSON.stringify(body)).toContain(param);
      }
      expect((await get('/api/v1/dsar/not-a-uuid')).statusCode).toBe(400);
      expect((await get(`/api/v1/dsar/${randomUUID()}`)).statusCode).toBe(404);
    });
  });
}
