import { sql } from 'kysely';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import { issueToken } from '../src/web/accounts.ts';
import { bearer, type TestTenant } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import {
  absorbCookies,
  cookieHeader,
  csrfOf,
  type WebSession,
  webGet,
  webPost,
} from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';
import { waitForRun } from './support/wait.ts';

const ZONE = 'America/New_York';
const XSS = '<script>alert(1)</script>';

/**
 * The first local date, at least four days after `now`, on which the zone's UTC offset
 * differs from the day before (a daylight-saving change).
 */
function nextOffsetChange(now: Date, zone: string): DateTime {
  let day = DateTime.fromJSDate(now, { zone }).startOf('day').plus({ days: 4 });
  for (let i = 0; i < 400; i++) {
    const noon = day.set({ hour: 12 });
    if (noon.offset !== noon.minus({ days: 1 }).offset) return day;
    day = day.plus({ days: 1 });
  }
  throw new Error(`no offset change in ${zone} within a year`);
}

/** How the page shows an instant: `2027-03-14 09:00 EDT (UTC-04:00)`. */
const shown = (t: DateTime) => t.setLocale('en-US').toFormat("yyyy-MM-dd HH:mm ZZZZ '(UTC'ZZ')'");

const decode = (text: string) => text.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)));

/** What a browser submits for the page's schedule form as it stands (no field changed, no button). */
function formFields(page: string): Record<string, string[]> {
  const form = /<form method="post" action="\/app\/schedules[^"]*" class="schedule-form">(.*?)<\/form>/s.exec(
    page,
  )![1]!;
  const out: Record<string, string[]> = {};
  const add = (name: string, value: string) => {
    out[name] = [...(out[name] ?? []), decode(value)];
  };
  for (const [tag] of form.matchAll(/<input [^>]*>/g)) {
    const name = /name="([^"]+)"/.exec(tag)?.[1];
    if (!name || name === '_csrf') continue; // webPost adds the session's
    const type = /type="([^"]+)"/.exec(tag)?.[1] ?? 'text';
    if (type === 'checkbox' && !/ checked/.test(tag)) continue;
    add(name, /value="([^"]*)"/.exec(tag)?.[1] ?? (type === 'checkbox' ? 'on' : ''));
  }
  for (const [, name, options] of form.matchAll(/<select [^>]*name="([^"]+)"[^>]*>(.*?)<\/select>/gs)) {
    const values = [...options!.matchAll(/<option value="([^"]*)"( selected)?>/g)];
    add(name!, (values.find((o) => o[2]) ?? values[0])![1]!);
  }
  for (const [, name, text] of form.matchAll(/<textarea [^>]*name="([^"]+)"[^>]*>(.*?)<\/textarea>/gs))
    add(name!, text!);
  return out;
}

/** The schedule form as a member fills it in: daily at 09:00 in New York, conversations by email. */
function morningForm(name: string, extra: Record<string, string | string[]> = {}) {
  return {
    name,
    frequency: 'daily',
    time: '09:00',
    timezone: ZONE,
    datasets: ['conversations', 'analytics'],
    mode_conversations: 'incremental',
    mode_analytics: 'window',
    period_analytics: 'previous_day',
    format: 'csv',
    compression: 'none',
    package: 'none',
    pii: 'enhanced',
    destination: 'email',
    email_to: 'data@example.com',
    intent: 'save',
    ...extra,
  };
}

for (const dialect of DIALECTS) {
  describe(`the schedules pages on ${dialect}`, () => {
    let h: ExportHarness;
    /** The daylight-saving change the schedule's runs cross (its first day in the new offset). */
    let change: DateTime;

    /**
     * Signs in through a one-time link issued on the harness clock (the clock is moved
     * ahead to just before a daylight-saving change, past the links of signInAs).
     */
    async function signIn(tenant: TestTenant, role: Role): Promise<WebSession> {
      const token = await issueToken(
        h.database,
        { tenantId: tenant.id, memberId: tenant.members[role] },
        'sign_in',
        h.clock.now(),
      );
      const cookies: Record<string, string> = {};
      const res = await h.app.inject({ url: `/signin/link/${token}` });
      expect(res.statusCode, res.body).toBe(303);
      absorbCookies(cookies, res.headers['set-cookie']);
      const page = await h.app.inject({ url: '/app/exports', headers: { cookie: cookieHeader(cookies) } });
      expect(page.statusCode).toBe(200);
      absorbCookies(cookies, page.headers['set-cookie']);
      return { cookies, csrf: csrfOf(page.body) };
    }

    async function create(session: WebSession, form: Record<string, string | string[]>): Promise<string> {
      const res = await webPost(h.app, session, '/app/schedules', form);
      expect(res.statusCode, res.body).toBe(303);
      return /^\/app\/schedules\/([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
    }

    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true });
      // Noon, three days before the change: the next five 09:00 runs are two before it and three after.
      change = nextOffsetChange(h.clock.now(), ZONE);
      const start = change.minus({ days: 3 }).set({ hour: 12 });
      h.clock.advance(start.toMillis() - h.clock.now().getTime());
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('creates a schedule through the form; its page lists five runs at 09:00 New York time across the change', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const list = await webGet(h.app, admin, '/app/schedules');
      expect(list.statusCode).toBe(200);
      expect(list.body).toContain('href="/app/schedules/new"');
      const form = await webGet(h.app, admin, '/app/schedules/new');
      expect(form.statusCode).toBe(200);
      expect(form.body).toContain('<option value="America/New_York">');
      expect(form.body).toMatch(/<th scope="col">Dataset<\/th>/);

      const expected = [-2, -1, 0, 1, 2].map((d) =>
        change.plus({ days: d }).set({ hour: 9, minute: 0, second: 0, millisecond: 0 }),
      );
      expect(new Set(expected.map((t) => t.offset)).size).toBe(2);
      const times = expected.map(shown);
      expect(times.every((t) => t.includes(' 09:00 '))).toBe(true);

      // Preview before saving: without JavaScript (the whole form again) and as the htmx fragment.
      const previewed = await webPost(
        h.app,
        admin,
        '/app/schedules',
        morningForm('Morning', { intent: 'preview' }),
      );
      expect(previewed.statusCode).toBe(200);
      expect(previewed.body).toContain('value="Morning"');
      for (const t of times) expect(previewed.body).toContain(t);
      const fragment = await webPost(h.app, admin, '/app/schedules/preview', morningForm('Morning'));
      expect(fragment.statusCode).toBe(200);
      expect(fragment.body).not.toContain('<html');
      for (const t of times) expect(fragment.body).toContain(t);

      const id = await create(admin, morningForm('Morning conversations'));
      const page = await webGet(h.app, admin, `/app/schedules/${id}`);
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('Morning conversations');
      expect(page.body).toContain('Daily at 09:00');
      const positions = times.map((t) => page.body.indexOf(t));
      expect(positions.every((p) => p > 0)).toBe(true);
      expect([...positions].sort((a, b) => a - b)).toEqual(positions);
      expect(page.body).toMatch(/\(UTC-05:00\)/);
      expect(page.body).toMatch(/\(UTC-04:00\)/);
      // What the API stores is what the page showed.
      const api = await h.app.inject({ url: `/api/v1/schedules/${id}`, headers: bearer(h.keys.admin) });
      expect(api.json()).toMatchObject({
        timezone: ZONE,
        time: '09:00',
        next_run_at: expected[0]!.toUTC().toISO(),
        datasets: [
          { dataset: 'conversations', mode: 'incremental' },
          { dataset: 'analytics', mode: 'window', period: 'previous_day' },
        ],
        targets: [{ type: 'email', to: ['data@example.com'], required: true }],
      });

      const listed = await webGet(h.app, admin, '/app/schedules');
      expect(listed.body).toContain(`href="/app/schedules/${id}"`);
      expect(listed.body).toContain(times[0]);
    });

    it('shows the service’s validation errors on the form with the values kept (400)', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const res = await webPost(h.app, admin, '/app/schedules', morningForm('Keep me', { time: '25:00' }));
      expect(res.statusCode).toBe(400);
      expect(res.body).toContain('time: must be a time of day');
      expect(res.body).toContain('value="Keep me"');
      expect(res.body).toContain('value="data@example.com"');
      const s3 = await webPost(
        h.app,
        admin,
        '/app/schedules',
        morningForm('No secret', {
          destination: 's3',
          s3_bucket: 'acme-exports',
          s3_access_key_id: 'AKIAEXAMPLE',
        }),
      );
      expect(s3.statusCode).toBe(400);
      expect(s3.body).toContain('targets[0].secret_access_key');
      expect(s3.body).toContain('value="acme-exports"');
    });

    it('creates a data lake schedule through the form; a server folder is neither offered nor accepted', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const form = await webGet(h.app, admin, '/app/schedules/new');
      expect(form.body).toMatch(/<select name="layout"[^>]*><option value="files" selected>/);
      expect(form.body).toContain('<option value="lake">');
      expect(form.body).not.toContain('<option value="folder">');
      const lake = {
        name: 'Messages lake',
        frequency: 'daily',
        time: '03:00',
        timezone: ZONE,
        datasets: ['messages'],
        mode_messages: 'incremental',
        format: '',
        compression: 'none',
        package: 'none',
        pii: 'enhanced',
        layout: 'lake',
        destination: 's3',
        s3_bucket: 'acme-lake',
        s3_prefix: 'ferry/',
        s3_access_key_id: 'AKIAEXAMPLE',
        s3_secret_access_key: 'lake-secret-0123456789',
        intent: 'save',
      };
      const id = await create(admin, lake);
      const api = await h.app.inject({ url: `/api/v1/schedules/${id}`, headers: bearer(h.keys.admin) });
      expect(api.json()).toMatchObject({
        layout: 'lake',
        format: 'parquet',
        datasets: [{ dataset: 'messages', mode: 'incremental' }],
        targets: [{ type: 's3', bucket: 'acme-lake', prefix: 'ferry/', required: true }],
      });
      const edit = await webGet(h.app, admin, `/app/schedules/${id}/edit`);
      expect(edit.body).toContain('<option value="lake" selected>');

      // A lake needs S3 (or an operator's folder), and a folder cannot be forced through the form.
      const email = await webPost(h.app, admin, '/app/schedules', {
        ...lake,
        destination: 'email',
        email_to: 'data@example.com',
      });
      expect(email.statusCode).toBe(400);
      expect(email.body).toContain('targets[0].type: a lake is written to S3 or a folder');
      const folder = await webPost(h.app, admin, '/app/schedules', {
        ...lake,
        destination: 'folder',
        folder_path: '/etc',
      });
      expect(folder.statusCode).toBe(400);
      expect(folder.body).toContain('targets[0].type: a folder of the server can only be set by an operator');
    });

    it('pauses and resumes a schedule, and runs it now with the delivery result in the history', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const id = await create(admin, morningForm('Pause me'));
      const paused = await webPost(h.app, admin, `/app/schedules/${id}/pause`);
      expect(paused.statusCode).toBe(303);
      let page = await webGet(h.app, admin, `/app/schedules/${id}`);
      expect(page.body).toContain('status-paused');
      expect(page.body).not.toContain('status-active');
      expect(page.body).toContain(`action="/app/schedules/${id}/resume"`);
      expect(page.body).toContain('Paused: no runs until it is resumed.');
      const resumed = await webPost(h.app, admin, `/app/schedules/${id}/resume`);
      expect(resumed.statusCode).toBe(303);
      page = await webGet(h.app, admin, `/app/schedules/${id}`);
      expect(page.body).toContain('status-active');
      expect(page.body).not.toContain('status-paused');
      expect(page.body).toContain(`action="/app/schedules/${id}/pause"`);

      // Run now: no mail server is configured, so the email destination fails for good.
      const run = await webPost(h.app, admin, `/app/schedules/${id}/run`);
      expect(run.statusCode).toBe(303);
      const row = await sql<{ id: string }>`SELECT id FROM schedule_runs WHERE schedule_id = ${id}`.execute(
        h.database.db,
      );
      await waitForRun(h.database, row.rows[0]!.id, ['failed'], { timeoutMs: 90_000 });
      page = await webGet(h.app, admin, `/app/schedules/${id}`);
      expect(page.body).toContain('#1 <small>manual</small>');
      expect(page.body).toContain('status-failed');
      expect(page.body).toContain('mailto:data@example.com');
      expect(page.body).toContain('email_not_configured');
      expect(page.body).toMatch(/conversations-[0-9T]+Z-r1\.csv/);
    }, 120_000);

    it('changes a schedule through the edit form, keeping its destination', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const id = await create(admin, morningForm('Weekly later'));
      const edit = await webGet(h.app, admin, `/app/schedules/${id}/edit`);
      expect(edit.statusCode).toBe(200);
      expect(edit.body).toContain('value="Weekly later"');
      expect(edit.body).toContain('<option value="keep" selected>');
      const res = await webPost(
        h.app,
        admin,
        `/app/schedules/${id}`,
        morningForm('Weekly later', {
          frequency: 'weekly',
          days: ['monday', 'friday'],
          time: '06:30',
          destination: 'keep',
        }),
      );
      expect(res.statusCode, res.body).toBe(303);
      const page = await webGet(h.app, admin, `/app/schedules/${id}`);
      expect(page.body).toContain('Weekly on Monday, Friday at 06:30');
      expect(page.body).toContain('mailto:data@example.com');
    });

    it('saves the edit form unchanged without changing the schedule (fields set only through the API too)', async () => {
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(h.keys.admin),
        payload: {
          name: 'Through the API',
          frequency: { type: 'monthly', day_of_month: 'last' },
          time: '01:15',
          timezone: 'Europe/Berlin',
          datasets: [
            { dataset: 'conversations', mode: 'window', days: 7, format: 'ndjson' },
            { dataset: 'analytics', mode: 'window', period: 'previous_week' },
          ],
          format: 'csv',
          compression: 'gzip',
          pii: 'basic',
          targets: [
            { type: 'email', to: ['a@example.com'], required: false },
            { type: 'email', name: 'second', to: ['b@example.com'], attach: true },
          ],
          notifications: { success: ['ok@example.com'], failure: ['bad@example.com'] },
          retention: { local_days: 30, target_days: 90 },
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      const before = created.json();
      const admin = await signIn(h.tenant, 'admin');
      const edit = await webGet(h.app, admin, `/app/schedules/${before.id}/edit`);
      const res = await webPost(h.app, admin, `/app/schedules/${before.id}`, {
        ...formFields(edit.body),
        intent: 'save',
      });
      expect(res.statusCode, res.body).toBe(303);
      const after = (
        await h.app.inject({ url: `/api/v1/schedules/${before.id}`, headers: bearer(h.keys.admin) })
      ).json();
      const { updated_at: _b, checkpoints: _c, ...was } = before;
      const { updated_at: _a, checkpoints: _d, ...is } = after;
      expect(is).toEqual(was);
    });

    it('offers each role only what the policy lets it schedule, and refuses the rest when forced', async () => {
      const analyst = await signIn(h.tenant, 'analyst');
      const form = await webGet(h.app, analyst, '/app/schedules/new');
      expect(form.statusCode).toBe(200);
      expect(form.body).toContain('value="conversations"');
      expect(form.body).not.toContain('value="customers"');
      const pii = /<select name="pii">.*?<\/select>/s.exec(form.body)![0];
      expect(pii).toContain('value="enhanced"');
      expect(pii).not.toContain('value="full"');
      const customers = await webPost(
        h.app,
        analyst,
        '/app/schedules',
        morningForm('Forced', { datasets: ['customers'], destination: '' }),
      );
      expect(customers.statusCode).toBe(403);
      const full = await webPost(h.app, analyst, '/app/schedules', morningForm('Forced', { pii: 'full' }));
      expect(full.statusCode).toBe(403);

      // Agents have neither schedules:read nor schedules:manage.
      const agent = await signIn(h.tenant, 'agent');
      const home = await webGet(h.app, agent, '/app/exports');
      expect(home.body).not.toContain('href="/app/schedules"');
      expect((await webGet(h.app, agent, '/app/schedules')).statusCode).toBe(403);
      expect((await webGet(h.app, agent, '/app/schedules/new')).statusCode).toBe(403);
      const forced = await webPost(h.app, agent, '/app/schedules', morningForm('Forced'));
      expect(forced.statusCode).toBe(403);
      const count = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM schedules WHERE name = 'Forced'`.execute(h.database.db);
      expect(Number(count.rows[0]!.n)).toBe(0);
    });

    it('shows a name with markup escaped on every page', async () => {
      const admin = await signIn(h.tenant, 'admin');
      const id = await create(admin, morningForm(`Nightly ${XSS}`));
      for (const url of ['/app/schedules', `/app/schedules/${id}`, `/app/schedules/${id}/edit`]) {
        const res = await webGet(h.app, admin, url);
        expect(res.statusCode, url).toBe(200);
        expect(res.body, url).not.toContain('<script>alert');
        expect(res.body, url).toContain('&#60;script&#62;alert(1)&#60;/script&#62;');
        expect(res.body, url).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
        expect(res.body, url).not.toMatch(/\sstyle="/);
      }
    });

    it("answers 404 for another tenant's schedule", async () => {
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(h.otherKeys.admin),
        payload: {
          name: 'Other tenant nightly',
          frequency: { type: 'daily' },
          time: '02:30',
          datasets: [{ dataset: 'conversations' }],
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      const id = created.json().id as string;
      const admin = await signIn(h.tenant, 'admin');
      for (const url of [`/app/schedules/${id}`, `/app/schedules/${id}/edit`]) {
        const res = await webGet(h.app, admin, url);
        expect(res.statusCode, url).toBe(404);
        expect(res.body).not.toContain('Other tenant nightly');
      }
      for (const op of ['pause', 'run', 'delete']) {
        const res = await webPost(h.app, admin, `/app/schedules/${id}/${op}`);
        expect(res.statusCode, op).toBe(404);
      }
      expect((await webGet(h.app, admin, '/app/schedules/not-a-uuid')).statusCode).toBe(404);
      const still = await h.app.inject({
        url: `/api/v1/schedules/${id}`,
        headers: bearer(h.otherKeys.admin),
      });
      expect(still.json().status).toBe('active');
    });
  });
}
