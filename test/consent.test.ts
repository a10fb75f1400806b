import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { openDatabase } from '../src/db/open.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { resolveSubject, subjectRowCondition } from '../src/privacy/subject.ts';
import { runFerry } from './support/cli.ts';
import { DIALECTS, dropJobsSchema, TEST_DATABASE_URL } from './support/databases.ts';
import { bearer, createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

/** The subject as their record holds it: diacritics, an apostrophe and a plus in the address. */
const EMAIL = "zoë.o'hara+consent@example.com";
/** How people type it: any case. */
const TYPED = "Zoë.O'Hara+Consent@Example.COM";
const NAME = 'Zoë "Zo" O\'Hara 😀';
const MICROS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const USER_AGENT = 'ferry-consent-test/1.0 (préférences 🍪)';

interface RecordJson {
  id: string;
  customer_id: string;
  purpose: string;
  granted: boolean;
  legal_basis: string;
  source: string;
  policy_version: string | null;
  ip_address: string | null;
  recorded_at: string;
}

async function addCustomer(
  database: Database,
  tenantId: string,
  values: { id?: string; email: string | null; name: string },
): Promise<string> {
  const id = values.id ?? randomUUID();
  await database.db
    .insertInto('customers')
    .values({
      id,
      tenant_id: tenantId,
      email: values.email,
      name: values.name,
      phone: '+4930123456789',
      country: 'DE',
      segment: 'consumer',
      created_at: new Date('2026-01-02T03:04:05.123Z'),
      updated_at: new Date('2026-01-02T03:04:05.123Z'),
    } as never)
    .execute();
  return id;
}

for (const dialect of DIALECTS) {
  describe(`consent records over the API (${dialect})`, () => {
    let h: ExportHarness;
    let customer: string;

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 5 });
      customer = await addCustomer(h.database, h.tenant.id, { email: EMAIL, name: NAME });
    }, 240_000);
    afterAll(async () => h?.close());

    const post = (url: string, key: string, payload: object) =>
      h.app.inject({
        method: 'POST',
        url,
        headers: { ...bearer(key), 'user-agent': USER_AGENT },
        payload,
      });
    const list = (subject: string, key = h.keys.manager) =>
      h.app.inject({
        method: 'GET',
        url: `/api/v1/consent?subject=${encodeURIComponent(subject)}`,
        headers: bearer(key),
      });
    const consentRows = async () =>
      Number(
        (
          await sql<{
            n: string;
          }>`SELECT count(*) AS n FROM consent_records WHERE tenant_id = ${h.tenant.id}`.execute(
            h.database.db,
          )
        ).rows[0]!.n,
      );

    it('gives, withdraws and gives again: the latest record is the state, the history keeps all three in order', async () => {
      const given = await post('/api/v1/consent', h.keys.manager, {
        subject: { email: TYPED },
        purpose: 'marketing',
        granted: true,
        source: 'widget_banner',
        policy_version: '2026-11 "v3" ✓',
        ip_address: '2001:db8::7',
        recorded_at: '2026-11-01T10:00:00.123456Z',
      });
      expect(given.statusCode, given.body).toBe(201);
      expect(given.json()).toEqual({
        id: expect.any(String),
        customer_id: customer,
        purpose: 'marketing',
        granted: true,
        legal_basis: 'consent',
        source: 'widget_banner',
        policy_version: '2026-11 "v3" ✓',
        ip_address: '2001:db8::7',
        recorded_at: '2026-11-01T10:00:00.123456Z',
      });

      // An offset is kept to the microsecond and answered in UTC.
      const withdrawn = await post('/api/v1/consent/withdraw', h.keys.admin, {
        subject: { customer_id: customer.toUpperCase() },
        purpose: 'marketing',
        source: 'email',
        recorded_at: '2026-11-15T09:00:00.000001+01:00',
      });
      expect(withdrawn.statusCode, withdrawn.body).toBe(201);
      expect(withdrawn.json()).toMatchObject({
        customer_id: customer,
        granted: false,
        policy_version: null,
        ip_address: null,
        recorded_at: '2026-11-15T08:00:00.000001Z',
      });

      // Given again now: the database's clock, with its microseconds.
      const again = await post('/api/v1/consent', h.keys.admin, {
        subject: { email: EMAIL, customer_id: customer },
        purpose: 'marketing',
        granted: true,
        legal_basis: 'consent',
        source: 'preference_center',
        policy_version: '2026-12',
      });
      expect(again.statusCode, again.body).toBe(201);
      const againJson = again.json() as RecordJson;
      expect(againJson.recorded_at).toMatch(MICROS);
      expect(Date.parse(againJson.recorded_at)).toBeGreaterThan(Date.now() - 60_000);

      const view = await list(TYPED);
      expect(view.statusCode, view.body).toBe(200);
      const body = view.json() as {
        subject: { customer_id: string };
        current: Record<string, unknown>[];
        history: RecordJson[];
      };
      expect(body.subject).toEqual({ customer_id: customer });
      expect(body.history).toEqual([given.json(), withdrawn.json(), againJson]);
      expect(body.current).toEqual([
        {
          purpose: 'marketing',
          status: 'given',
          legal_basis: 'consent',
          policy_version: '2026-12',
          source: 'preference_center',
          given_at: againJson.recorded_at,
          withdrawn_at: null,
        },
      ]);
      // By id, the same answer.
      expect((await list(customer)).json()).toEqual(body);
    });

    it('shows a purpose withdrawn without an earlier grant, and orders purposes by recorded time in the history', async () => {
      const objected = await post('/api/v1/consent/withdraw', h.keys.admin, {
        subject: { email: EMAIL.toUpperCase() },
        purpose: 'analytics',
        legal_basis: 'legitimate_interests',
        source: 'api',
        recorded_at: '2026-10-30T23:59:59.999999Z',
      });
      expect(objected.statusCode, objected.body).toBe(201);
      const body = (await list(EMAIL)).json();
      expect(body.history.map((r: RecordJson) => [r.purpose, r.granted, r.recorded_at])).toEqual([
        ['analytics', false, '2026-10-30T23:59:59.999999Z'],
        ['marketing', true, '2026-11-01T10:00:00.123456Z'],
        ['marketing', false, '2026-11-15T08:00:00.000001Z'],
        ['marketing', true, expect.stringMatching(MICROS)],
      ]);
      expect(body.current.find((c: { purpose: string }) => c.purpose === 'analytics')).toEqual({
        purpose: 'analytics',
        status: 'withdrawn',
        legal_basis: 'legitimate_interests',
        policy_version: null,
        source: 'api',
        given_at: null,
        withdrawn_at: '2026-10-30T23:59:59.999999Z',
      });
    });

    it('finds the subject by email in any case, and by id', async () => {
      const ids = new Set<string>();
      for (const subject of [
        EMAIL,
        TYPED,
        EMAIL.toUpperCase(),
        `  ${EMAIL}  `,
        customer,
        customer.toUpperCase(),
      ]) {
        const res = await list(subject);
        expect(res.statusCode, `${subject}: ${res.body}`).toBe(200);
        ids.add(res.json().subject.customer_id);
      }
      expect([...ids]).toEqual([customer]);
      // An unencoded + is a space in a query string: not an email, and the answer says so.
      const unencoded = await h.app.inject({
        method: 'GET',
        url: `/api/v1/consent?subject=${encodeURIComponent(EMAIL).replace('%2B', '+')}`,
        headers: bearer(h.keys.manager),
      });
      expect(unencoded.statusCode).toBe(400);
      expect(unencoded.json().errors[0].parameter).toBe('subject');
      expect(unencoded.json().detail).toContain('%2B');
    });

    it('writes one audit event per change, naming the record, the caller and the purpose, never the email', async () => {
      const audit = await sql<Record<string, unknown>>`
        SELECT * FROM audit_events WHERE tenant_id = ${h.tenant.id} AND action LIKE 'consent.%'
        ORDER BY seq`.execute(h.database.db);
      const records = await sql<{ id: string }>`
        SELECT id::text AS id FROM consent_records WHERE tenant_id = ${h.tenant.id} AND customer_id = ${customer}`.execute(
        h.database.db,
      );
      expect(audit.rows.map((r) => r.action)).toEqual([
        'consent.given',
        'consent.withdrawn',
        'consent.given',
        'consent.withdrawn',
      ]);
      expect(new Set(audit.rows.map((r) => r.target_id))).toEqual(new Set(records.rows.map((r) => r.id)));
      for (const row of audit.rows) {
        expect(row).toMatchObject({
          data_type: 'consent_records',
          success: true,
          ip_address: '127.0.0.1',
          user_agent: USER_AGENT,
        });
        expect(row.actor).toMatch(/^api_key:/);
      }
      expect(audit.rows.map((r) => r.error)).toEqual([
        'marketing (consent)',
        'marketing (consent)',
        'marketing (consent)',
        'analytics (legitimate_interests)',
      ]);
      const text = JSON.stringify(audit.rows).toLowerCase();
      for (const part of ['example.com', "o'hara", 'zoë', 'zo\\u00eb']) expect(text).not.toContain(part);

      // The compliance export of the trail names the customer, the basis and the consent state.
      const trail = await h.app.inject({
        method: 'GET',
        url: '/api/v1/export/audit_trail?format=json&action=consent.withdrawn',
        headers: bearer(h.keys.admin),
      });
      expect(trail.statusCode, trail.body).toBe(200);
      const rows = trail.json().data as Record<string, unknown>[];
      expect(rows.map((r) => [r.customer_id, r.consent_status, r.legal_basis])).toEqual([
        [customer, 'withdrawn', 'consent'],
        [customer, 'withdrawn', 'legitimate_interests'],
      ]);
    });

    it('exports the records as the consent_records dataset and in the subject’s access package', async () => {
      const exported = await h.app.inject({
        method: 'GET',
        url: '/api/v1/export/consent_records?format=json',
        headers: bearer(h.keys.manager),
      });
      expect(exported.statusCode, exported.body).toBe(200);
      const mine = (exported.json().data as Record<string, unknown>[]).filter(
        (r) => r.customer_id === customer,
      );
      expect(mine).toHaveLength(4);
      expect(mine.map((r) => r.policy_version)).toContain('2026-11 "v3" ✓');
      expect(mine.map((r) => r.legal_basis).sort()).toEqual([
        'consent',
        'consent',
        'consent',
        'legitimate_interests',
      ]);
      // The access package narrows each dataset by the subject's rows (src/privacy/dsar-steps.ts):
      // found by their email, these are exactly the records above.
      const subject = await resolveSubject(h.database, h.tenant.id, { email: TYPED });
      expect(subject.matches.find((m) => m.table === 'consent_records')).toMatchObject({
        rows: 4,
        matched_by: ['link:customer_id'],
      });
      const condition = subjectRowCondition('consent_records', subject, 't');
      const packaged = await sql<{ id: string }>`
        SELECT t.id::text AS id FROM consent_records t
        WHERE t.tenant_id = ${h.tenant.id} AND (${sql.raw(condition!)}) ORDER BY t.id`.execute(h.database.db);
      expect(packaged.rows.map((r) => r.id)).toEqual(mine.map((r) => String(r.consent_id)).sort());
    });

    it('answers an unknown subject with 404 and invalid input with 400 naming the field, writing nothing', async () => {
      const before = await consentRows();
      for (const subject of [{ email: 'nobody@example.com' }, { customer_id: randomUUID() }]) {
        const res = await post('/api/v1/consent', h.keys.admin, {
          subject,
          purpose: 'marketing',
          granted: true,
          source: 'api',
        });
        expect(res.statusCode, res.body).toBe(404);
        expect(res.headers['content-type']).toContain('application/problem+json');
        expect(res.json()).toMatchObject({ status: 404, code: 'not_found' });
      }
      expect((await list('nobody@example.com')).statusCode).toBe(404);

      const valid = {
        subject: { customer_id: customer },
        purpose: 'marketing',
        granted: true,
        source: 'api',
      };
      const cases: [string, object, string][] = [
        ['/api/v1/consent', { ...valid, purpose: 'spam' }, 'purpose'],
        ['/api/v1/consent', { ...valid, legal_basis: 'because' }, 'legal_basis'],
        ['/api/v1/consent', { ...valid, recorded_at: 'yesterday' }, 'recorded_at'],
        ['/api/v1/consent', { ...valid, recorded_at: '2026-02-30T10:00:00Z' }, 'recorded_at'],
        ['/api/v1/consent', { ...valid, recorded_at: '2026-11-01T10:00:00' }, 'recorded_at'],
        ['/api/v1/consent', { ...valid, recorded_at: '2999-01-01T00:00:00Z' }, 'recorded_at'],
        ['/api/v1/consent', { ...valid, ip_address: 'the café wifi' }, 'ip_address'],
        ['/api/v1/consent', { ...valid, source: '' }, 'source'],
        ['/api/v1/consent', { ...valid, source: 's'.repeat(201) }, 'source'],
        ['/api/v1/consent', { ...valid, granted: 'yes' }, 'granted'],
        ['/api/v1/consent', { ...valid, name: NAME }, 'name'],
        ['/api/v1/consent', { ...valid, subject: {} }, 'subject'],
        ['/api/v1/consent', { ...valid, subject: { customer_id: 'cust-42' } }, 'subject.customer_id'],
        ['/api/v1/consent', { ...valid, subject: { email: 'not an address' } }, 'subject.email'],
        ['/api/v1/consent/withdraw', valid, 'granted'],
      ];
      for (const [url, body, field] of cases) {
        const res = await post(url, h.keys.admin, body);
        expect(res.statusCode, `${field}: ${res.body}`).toBe(400);
        expect(res.headers['content-type']).toContain('application/problem+json');
        expect(res.json().errors[0].parameter, res.body).toBe(field);
      }
      const purpose = await post('/api/v1/consent', h.keys.admin, { ...valid, purpose: 'spam' });
      expect(purpose.json()).toMatchObject({
        type: '/problems/invalid_parameter',
        status: 400,
        instance: '/api/v1/consent',
        code: 'invalid_parameter',
        errors: [{ parameter: 'purpose', in: 'body' }],
      });
      expect(purpose.json().errors[0].accepted).toEqual([
        'chat_transcripts',
        'analytics',
        'marketing',
        'ai_training',
      ]);
      expect(await consentRows()).toBe(before);
    });

    it('refuses an email that two customers share: the caller names the customer by id', async () => {
      const shared = `Sam.Ng+${randomUUID().slice(0, 6)}@example.com`;
      const first = await addCustomer(h.database, h.tenant.id, { email: shared, name: 'Sam Ng' });
      await addCustomer(h.database, h.tenant.id, { email: shared.toLowerCase(), name: 'Sam Ng (2)' });
      const res = await post('/api/v1/consent', h.keys.admin, {
        subject: { email: shared },
        purpose: 'ai_training',
        granted: false,
        source: 'support_ticket',
      });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().errors[0].parameter).toBe('subject.email');
      const byGet = await list(shared);
      expect(byGet.statusCode).toBe(400);
      expect(byGet.json().errors[0].parameter).toBe('subject');
      const both = await post('/api/v1/consent', h.keys.admin, {
        subject: { email: shared, customer_id: first },
        purpose: 'ai_training',
        granted: false,
        source: 'support_ticket',
      });
      expect(both.statusCode, both.body).toBe(201);
      expect(both.json().customer_id).toBe(first);
      // An email and an id of two different people name no one.
      const mismatch = await post('/api/v1/consent', h.keys.admin, {
        subject: { email: EMAIL, customer_id: first },
        purpose: 'ai_training',
        granted: true,
        source: 'api',
      });
      expect(mismatch.statusCode).toBe(404);
    });

    it('is for admins and managers of the tenant only', async () => {
      const body = { subject: { customer_id: customer }, purpose: 'marketing', granted: true, source: 'api' };
      for (const role of ['analyst', 'agent'] as const) {
        const recorded = await post('/api/v1/consent', h.keys[role], body);
        expect(recorded.statusCode, recorded.body).toBe(403);
        expect(recorded.headers['content-type']).toContain('application/problem+json');
        expect(recorded.json()).toMatchObject({ code: 'forbidden' });
        expect(recorded.json().detail).toContain('consent:manage');
        expect(
          (await post('/api/v1/consent/withdraw', h.keys[role], { ...body, granted: undefined })).statusCode,
        ).toBe(403);
        expect((await list(customer, h.keys[role])).statusCode).toBe(403);
      }
      const anonymous = await h.app.inject({ method: 'GET', url: `/api/v1/consent?subject=${customer}` });
      expect(anonymous.statusCode).toBe(401);
      expect(anonymous.headers['content-type']).toContain('application/problem+json');
      // Another tenant's admin does not learn that the customer exists.
      const other = await list(customer, h.otherKeys.admin);
      expect(other.statusCode).toBe(404);
      const otherPost = await post('/api/v1/consent', h.otherKeys.admin, body);
      expect(otherPost.statusCode).toBe(404);
    });
  });

  describe(`ferry consent (${dialect})`, () => {
    let env: NodeJS.ProcessEnv;
    let work: string;
    let tenant: TestTenant;
    let customer: string;
    const schema = `ferry_cli_consent_${process.pid}_${Date.now()}`;

    const ferry = (...args: string[]) => runFerry(args, { env });

    /** The database the CLI uses, opened while no command runs (PGlite admits one process). */
    async function inspect<T>(fn: (database: Database) => Promise<T>): Promise<T> {
      const database = await openDatabase(loadConfig(env));
      try {
        return await fn(database);
      } finally {
        await database.close();
      }
    }

    beforeAll(async () => {
      work = await mkdtemp(path.join(tmpdir(), 'ferry-consent-cli-'));
      env = {
        ...process.env,
        FERRY_DATA_DIR: work,
        FERRY_SECRET_KEY: 'consent-cli-test-secret-0123456789abcdef',
        FERRY_DEMO: 'off',
        LOG_LEVEL: 'silent',
        ...(dialect === 'postgres' ? { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
      };
      if (dialect === 'pglite') {
        delete env.DATABASE_URL;
        delete env.DATABASE_SCHEMA;
      }
      await inspect(async (database) => {
        tenant = await createTenant(database, 'pro');
        customer = await addCustomer(database, tenant.id, { email: EMAIL, name: NAME });
      });
    }, 120_000);
    afterAll(async () => {
      if (dialect === 'postgres') {
        const admin = postgresDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
        await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await admin.close();
        await dropJobsSchema(loadConfig(env));
      }
      if (work) await rm(work, { recursive: true, force: true });
    });

    it('records, withdraws and lists a subject’s consents; mistakes are one line and a non-zero exit', async () => {
      const given = await ferry(
        'consent',
        'record',
        '--tenant',
        tenant.slug,
        '--subject',
        TYPED,
        '--purpose',
        'chat_transcripts',
        '--source',
        'phone',
        '--policy-version',
        '2026-11 "v3"',
        '--json',
      );
      expect(given.code, given.stderr).toBe(0);
      const record = JSON.parse(given.stdout) as RecordJson;
      expect(record).toMatchObject({
        customer_id: customer,
        purpose: 'chat_transcripts',
        granted: true,
        legal_basis: 'consent',
        source: 'phone',
        policy_version: '2026-11 "v3"',
      });
      expect(record.recorded_at).toMatch(MICROS);

      const withdrawn = await ferry(
        'consent',
        'withdraw',
        '--tenant',
        tenant.id,
        '--subject',
        customer,
        '--purpose',
        'chat_transcripts',
        '--basis',
        'legitimate_interests',
        '--source',
        'letter',
      );
      expect(withdrawn.code, withdrawn.stderr).toBe(0);
      expect(withdrawn.stdout).toMatch(
        new RegExp(`^consent withdrawn: chat_transcripts for customer ${customer} at \\S+\\.\\d{6}Z\\n$`),
      );

      const listed = await ferry('consent', 'list', '--tenant', tenant.slug, '--subject', EMAIL, '--json');
      expect(listed.code, listed.stderr).toBe(0);
      const view = JSON.parse(listed.stdout);
      expect(view.subject).toEqual({ customer_id: customer });
      expect(view.history).toHaveLength(2);
      expect(view.history[0]).toEqual(record);
      expect(view.history[1]).toMatchObject({
        granted: false,
        legal_basis: 'legitimate_interests',
        source: 'letter',
      });
      expect(view.current).toEqual([
        {
          purpose: 'chat_transcripts',
          status: 'withdrawn',
          legal_basis: 'legitimate_interests',
          policy_version: null,
          source: 'letter',
          given_at: null,
          withdrawn_at: view.history[1].recorded_at,
        },
      ]);

      const table = await ferry('consent', 'list', '--tenant', tenant.slug, '--subject', customer);
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout).toContain(`customer ${customer}`);
      expect(table.stdout).toMatch(/^chat_transcripts\s+withdrawn\s+legitimate_interests\s/m);
      expect(table.stdout).toContain(record.recorded_at);

      for (const [args, pattern] of [
        [['--subject', 'nobody@example.com', '--purpose', 'marketing'], /no customer of this tenant/],
        [
          ['--subject', EMAIL, '--purpose', 'spam'],
          /^ferry: purpose: "spam" is not a consent purpose \(accepted: chat_transcripts, /,
        ],
        [['--subject', EMAIL, '--purpose', 'marketing', '--basis', 'vibes'], /^ferry: legal_basis: /],
        [
          ['--subject', 'not an address', '--purpose', 'marketing'],
          /^ferry: subject: is neither a customer id nor an email/,
        ],
      ] as const) {
        const refused = await ferry(
          'consent',
          'record',
          '--tenant',
          tenant.slug,
          '--source',
          'phone',
          ...args,
        );
        expect(refused.code, refused.stdout).not.toBe(0);
        const lines = refused.stderr.trim().split('\n');
        expect(lines, refused.stderr).toHaveLength(1);
        expect(lines[0]).toMatch(pattern);
      }
      const noTenant = await ferry('consent', 'list', '--tenant', 'no-such-tenant', '--subject', EMAIL);
      expect(noTenant.code).not.toBe(0);
      expect(noTenant.stderr.trim().split('\n')).toHaveLength(1);

      await inspect(async (database) => {
        const audit = await sql<{ action: string; actor: string; target_id: string; error: string }>`
          SELECT action, actor, target_id, error FROM audit_events
          WHERE tenant_id = ${tenant.id} AND action LIKE 'consent.%' ORDER BY seq`.execute(database.db);
        expect(audit.rows).toEqual([
          {
            action: 'consent.given',
            actor: 'cli',
            target_id: record.id,
            error: 'chat_transcripts (consent)',
          },
          {
            action: 'consent.withdrawn',
            actor: 'cli',
            target_id: view.history[1].id,
            error: 'chat_transcripts (legitimate_interests)',
          },
        ]);
        const count = await sql<{ n: string }>`
          SELECT count(*) AS n FROM consent_records WHERE tenant_id = ${tenant.id}`.execute(database.db);
        expect(Number(count.rows[0]!.n)).toBe(2);
      });
    }, 180_000);
  });
}
