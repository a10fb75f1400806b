import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Role } from '../src/auth/context.ts';
import type { Config } from '../src/config/config.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import { nextRunAfter } from '../src/schedules/frequency.ts';
import { scheduleDb } from '../src/schedules/tables.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const SECRET = 'schedules-api-test-secret-0123456789abcdef';
const S3_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

const s3Target = (extra: Record<string, unknown> = {}) => ({
  type: 's3',
  name: 'backups',
  bucket: 'acme-exports',
  prefix: 'daily-exports/',
  region: 'us-east-1',
  access_key_id: 'AKIAIOSFODNN7EXAMPLE',
  secret_access_key: S3_SECRET,
  ...extra,
});

/** The product documentation's automated export, as written there. */
const exportConfig = (extra: Record<string, unknown> = {}) => ({
  export_config: {
    name: 'Daily Backup to S3',
    schedule: '0 2 * * *',
    data_types: ['conversations', 'analytics'],
    format: 'csv',
    compression: 'gzip',
    destination: {
      type: 's3',
      bucket: 'acme-backups',
      prefix: 'daily-exports/',
      access_key_id: 'AKIAIOSFODNN7EXAMPLE',
      secret_access_key: S3_SECRET,
      region: 'us-east-1',
    },
    notifications: { success: ['admin@example.com'], failure: ['admin@example.com', 'devops@example.com'] },
    retention: { local: '7_days', s3: '1_year' },
    ...extra,
  },
});

const daily = (extra: Record<string, unknown> = {}) => ({
  name: 'Nightly conversations',
  frequency: { type: 'daily' },
  time: '02:30',
  timezone: 'Europe/Berlin',
  datasets: [
    { dataset: 'conversations', mode: 'incremental' },
    { dataset: 'analytics', mode: 'window', period: 'previous_day' },
  ],
  format: 'ndjson',
  targets: [s3Target()],
  ...extra,
});

for (const dialect of DIALECTS) {
  describe(`schedules API on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let config: Config;
    let tenant: TestTenant;
    let other: TestTenant;
    let starter: TestTenant;
    let keys: Record<Role, string>;
    let otherKeys: Record<Role, string>;
    let starterKeys: Record<Role, string>;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      config = authTestConfig({ FERRY_SECRET_KEY: SECRET });
      app = await buildApp({ database: t.database, config });
      tenant = await createTenant(t.database, 'pro');
      other = await createTenant(t.database, 'pro');
      starter = await createTenant(t.database, 'starter');
      await t.database.db
        .updateTable('tenants')
        .set({ timezone: 'America/New_York' })
        .where('id', '=', tenant.id)
        .execute();
      keys = await keysByRole(t.database, tenant);
      otherKeys = await keysByRole(t.database, other);
      starterKeys = await keysByRole(t.database, starter);
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const post = (body: unknown, key = keys.admin) =>
      app.inject({ method: 'POST', url: '/api/v1/schedules', headers: bearer(key), payload: body as object });

    /** The first invalid parameter a 400 names. */
    async function rejected(body: unknown, key = keys.admin): Promise<{ parameter: string; detail: string }> {
      const res = await post(body, key);
      expect(res.statusCode, res.body).toBe(400);
      const problem = res.json();
      expect(problem.code).toBe('invalid_parameter');
      return { parameter: problem.errors?.[0]?.parameter, detail: problem.detail };
    }

    test('creates a daily schedule: next run in its zone, secrets sealed and shown masked', async () => {
      const res = await post(daily());
      expect(res.statusCode, res.body).toBe(201);
      const body = res.json();
      expect(res.headers.location).toBe(`/api/v1/schedules/${body.id}`);
      expect(body).toMatchObject({
        name: 'Nightly conversations',
        status: 'active',
        frequency: { type: 'daily' },
        time: '02:30',
        timezone: 'Europe/Berlin',
        cron: '30 2 * * *',
        datasets: [
          { dataset: 'conversations', mode: 'incremental' },
          { dataset: 'analytics', mode: 'window', period: 'previous_day' },
        ],
        format: 'ndjson',
        compression: 'none',
        package: 'none',
        pii: 'enhanced',
        notifications: { success: [], failure: [] },
        retention: { local_days: 90, target_days: null },
        last_run: null,
        checkpoints: [],
      });
      // 02:30 in Berlin is 00:30 or 01:30 UTC.
      expect(body.next_run_at).toMatch(/T0[01]:30:00\.000Z$/);
      expect(new Date(body.next_run_at).getTime()).toBe(
        nextRunAfter(
          { frequency: { type: 'daily' }, cron: '30 2 * * *', timezone: 'Europe/Berlin' },
          new Date(body.created_at),
        )!.getTime(),
      );
      expect(body.next_runs).toHaveLength(3);
      expect(body.targets).toEqual([
        {
          type: 's3',
          name: 'backups',
          bucket: 'acme-exports',
          prefix: 'daily-exports/',
          region: 'us-east-1',
          force_path_style: false,
          access_key_id: 'AKIAIOSFODNN7EXAMPLE',
          secret_access_key: '••••EKEY',
          verify: 'head',
          required: true,
        },
      ]);
      expect(res.body).not.toContain(S3_SECRET);
      const stored = await scheduleDb(t.database)
        .selectFrom('schedules')
        .select('config')
        .where('id', '=', body.id)
        .executeTakeFirstOrThrow();
      expect(JSON.stringify(stored.config)).not.toContain(S3_SECRET);
      expect(JSON.stringify(stored.config)).toMatch(/"secret_access_key":\{"sealed":"v2:/);

      const got = await app.inject({ url: `/api/v1/schedules/${body.id}`, headers: bearer(keys.analyst) });
      expect(got.statusCode).toBe(200);
      expect(got.json().targets[0].secret_access_key).toBe('••••EKEY');
      expect(got.body).not.toContain(S3_SECRET);
    });

    test('accepts the export_config of the product documentation as written', async () => {
      const res = await post(exportConfig());
      expect(res.statusCode, res.body).toBe(201);
      const body = res.json();
      expect(body).toMatchObject({
        name: 'Daily Backup to S3',
        frequency: { type: 'cron', expression: '0 2 * * *' },
        time: null,
        // The tenant's zone.
        timezone: 'America/New_York',
        cron: '0 2 * * *',
        datasets: [
          { dataset: 'conversations', mode: 'incremental' },
          { dataset: 'analytics', mode: 'window', period: 'previous_day' },
        ],
        format: 'csv',
        compression: 'gzip',
        notifications: {
          success: ['admin@example.com'],
          failure: ['admin@example.com', 'devops@example.com'],
        },
        retention: { local_days: 7, target_days: 365 },
        targets: [{ type: 's3', bucket: 'acme-backups', secret_access_key: '••••EKEY', required: true }],
      });
      // 02:00 in New York is 06:00 or 07:00 UTC.
      expect(body.next_run_at).toMatch(/T0[67]:00:00\.000Z$/);
      expect(res.body).not.toContain(S3_SECRET);
    });

    test('validation errors name the field, in the caller’s own terms', async () => {
      expect((await rejected(daily({ time: '25:00' }))).parameter).toBe('time');
      expect((await rejected(daily({ time: undefined }))).parameter).toBe('time');
      expect((await rejected(daily({ timezone: 'Mars/Olympus' }))).parameter).toBe('timezone');
      expect((await rejected(daily({ frequency: { type: 'weekly' } }))).parameter).toBe('frequency.days');
      expect((await rejected(daily({ frequency: { type: 'weekly', days: ['funday'] } }))).parameter).toBe(
        'frequency.days[0]',
      );
      expect((await rejected(daily({ frequency: { type: 'hourly' } }))).parameter).toBe('frequency.type');
      const often = await rejected(
        daily({ frequency: { type: 'cron', expression: '*/5 * * * *' }, time: undefined }),
      );
      expect(often.parameter).toBe('frequency.expression');
      expect(often.detail).toMatch(/more often than every 15 minutes/);
      expect((await rejected(daily({ datasets: [{ dataset: 'chats' }] }))).parameter).toBe(
        'datasets[0].dataset',
      );
      const mode = await rejected(daily({ datasets: [{ dataset: 'analytics', mode: 'incremental' }] }));
      expect(mode.parameter).toBe('datasets[0].mode');
      expect(mode.detail).toMatch(/no change feed/);
      expect(
        (await rejected(daily({ datasets: [{ dataset: 'messages', mode: 'window', days: 0 }] }))).parameter,
      ).toBe('datasets[0].days');
      expect((await rejected(daily({ format: 'docx' }))).parameter).toBe('format');
      expect((await rejected(daily({ targets: [s3Target({ bucket: undefined })] }))).parameter).toBe(
        'targets[0].bucket',
      );
      expect((await rejected(daily({ targets: [s3Target({ colour: 'red' })] }))).parameter).toBe(
        'targets[0].colour',
      );
      expect(
        (await rejected(daily({ targets: [{ type: 'webhook', endpoint_id: crypto.randomUUID() }] })))
          .parameter,
      ).toBe('targets[0].endpoint_id');
      expect((await rejected(daily({ notifications: { failure: ['not-an-address'] } }))).parameter).toBe(
        'notifications.failure[0]',
      );
      expect((await rejected(daily({ retention: { local_days: 400 } }))).parameter).toBe(
        'retention.local_days',
      );
      expect(
        (
          await rejected(
            daily({ retention: { target_days: 30 }, targets: [s3Target({ prefix: '{date}/' })] }),
          )
        ).parameter,
      ).toBe('targets[0].prefix');
      expect((await rejected({ ...daily(), export_config: exportConfig().export_config })).parameter).toBe(
        'name',
      );

      // export_config: errors name export_config's fields.
      expect((await rejected(exportConfig({ schedule: '0 2 * *' }))).parameter).toBe(
        'export_config.schedule',
      );
      expect((await rejected(exportConfig({ data_types: ['chats'] }))).parameter).toBe(
        'export_config.data_types[0]',
      );
      expect(
        (
          await rejected(
            exportConfig({ destination: { type: 's3', bucket: 'b', prefix: 'p/', access_key_id: 'AKIA' } }),
          )
        ).parameter,
      ).toBe('export_config.destination.secret_access_key');
      expect((await rejected(exportConfig({ retention: { local: 'a_while' } }))).parameter).toBe(
        'export_config.retention.local',
      );
      expect((await rejected(exportConfig({ retention: { local: '1_year' } }))).parameter).toBe(
        'export_config.retention.local',
      );
      expect((await rejected(exportConfig({ frequency: 'daily' }))).parameter).toBe(
        'export_config.frequency',
      );
      expect((await rejected(exportConfig({ compression: 'rar' }))).parameter).toBe(
        'export_config.compression',
      );
    });

    test('a lake layout: created and shown through the API; what a lake cannot be is a 400', async () => {
      const lake = {
        name: 'Lake',
        frequency: { type: 'daily' },
        time: '03:00',
        datasets: [{ dataset: 'messages' }, { dataset: 'conversations', mode: 'full' }],
        layout: 'lake',
        targets: [s3Target({ prefix: 'lake/' })],
      };
      const res = await post(lake);
      expect(res.statusCode, res.body).toBe(201);
      expect(res.json()).toMatchObject({
        layout: 'lake',
        format: 'parquet',
        package: 'none',
        compression: 'none',
      });
      const shown = await app.inject({
        url: `/api/v1/schedules/${res.json().id}`,
        headers: bearer(keys.admin),
      });
      expect(shown.json().layout).toBe('lake');
      const files = await post(daily());
      expect(files.json().layout).toBe('files');
      // Leaves the tenant's schedules as the other tests expect them.
      for (const id of [res.json().id, files.json().id])
        expect(
          (
            await app.inject({
              method: 'DELETE',
              url: `/api/v1/schedules/${id}`,
              headers: bearer(keys.admin),
            })
          ).statusCode,
        ).toBe(200);

      expect((await rejected({ ...lake, layout: 'pond' })).parameter).toBe('layout');
      expect((await rejected({ ...lake, targets: [s3Target({ prefix: 'lake/{date}/' })] })).parameter).toBe(
        'targets[0].prefix',
      );
      expect((await rejected({ ...lake, datasets: [{ dataset: 'analytics' }] })).parameter).toBe(
        'datasets[0].dataset',
      );
      // A folder of the server is the operator's to set (the command line), never an API caller's.
      const folder = await rejected({ ...lake, targets: [{ type: 'folder', path: '/srv/lake' }] });
      expect(folder.parameter).toBe('targets[0].type');
      expect(folder.detail).toMatch(/only be set by an operator/);
      expect((await rejected(daily({ targets: [{ type: 'folder', path: '/etc' }] }))).parameter).toBe(
        'targets[0].type',
      );
    });

    test('the plan limits active schedules; paused ones do not count', async () => {
      const first = await post(daily({ name: 'one' }), starterKeys.admin);
      expect(first.statusCode, first.body).toBe(201);
      expect(
        (await post(daily({ name: 'two', retention: { local_days: 30 } }), starterKeys.admin)).statusCode,
      ).toBe(201);
      const third = await post(daily({ name: 'three' }), starterKeys.admin);
      expect(third.statusCode).toBe(429);
      expect(third.json()).toMatchObject({ code: 'quota_exceeded', quota: 'active_schedules' });
      expect(third.json().detail).toMatch(/starter plan allows 2 active schedules/);

      const paused = await post(daily({ name: 'three', status: 'paused' }), starterKeys.admin);
      expect(paused.statusCode).toBe(201);
      expect(paused.json()).toMatchObject({ status: 'paused', next_run_at: null, next_runs: [] });
      const id = paused.json().id;
      const resume = () =>
        app.inject({
          method: 'POST',
          url: `/api/v1/schedules/${id}/resume`,
          headers: bearer(starterKeys.admin),
        });
      expect((await resume()).statusCode).toBe(429);
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${id}`,
        headers: bearer(starterKeys.admin),
        payload: { status: 'active' },
      });
      expect(patched.statusCode).toBe(429);

      const pause = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${first.json().id}/pause`,
        headers: bearer(starterKeys.manager),
      });
      expect(pause.statusCode).toBe(200);
      expect(pause.json()).toMatchObject({ status: 'paused', next_run_at: null });
      const resumed = await resume();
      expect(resumed.statusCode).toBe(200);
      expect(resumed.json().status).toBe('active');
      expect(resumed.json().next_run_at).not.toBeNull();

      const usage = await app.inject({ url: '/api/v1/usage', headers: bearer(starterKeys.admin) });
      expect(JSON.stringify(usage.json())).toMatch(/active_schedules/);
    });

    test('pages through schedules created within one millisecond (the cursor keeps microseconds)', async () => {
      for (const name of ['page one', 'page two', 'page three'])
        expect((await post(daily({ name, status: 'paused' }))).statusCode).toBe(201);
      // Rows written by now() differ below the millisecond; a cursor cut to milliseconds repeats them.
      await sql`
        UPDATE schedules s SET created_at = b.base + n.rn * interval '1 microsecond'
        FROM (SELECT date_trunc('milliseconds', min(created_at)) AS base FROM schedules WHERE tenant_id = ${tenant.id}) b,
             (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM schedules WHERE tenant_id = ${tenant.id}) n
        WHERE s.id = n.id`.execute(t.database.db);
      const ids: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 200; pages++) {
        const url = `/api/v1/schedules?limit=1${cursor ? `&cursor=${cursor}` : ''}`;
        const res = await app.inject({ url, headers: bearer(keys.admin) });
        expect(res.statusCode, res.body).toBe(200);
        const page = res.json() as { items: { id: string }[]; next_cursor: string | null };
        ids.push(...page.items.map((s) => s.id));
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      const all = await scheduleDb(t.database)
        .selectFrom('schedules')
        .select('id')
        .where('tenant_id', '=', tenant.id)
        .orderBy('created_at')
        .orderBy('id')
        .execute();
      expect(all.length).toBeGreaterThanOrEqual(3);
      expect(ids).toEqual(all.map((r) => r.id));
    });

    test('lists, changes and deletes; another tenant sees 404; roles are enforced', async () => {
      const created = (await post(daily({ name: 'to change' }))).json();
      const list = await app.inject({ url: '/api/v1/schedules?limit=2', headers: bearer(keys.manager) });
      expect(list.statusCode).toBe(200);
      expect(list.json().items).toHaveLength(2);
      expect(list.json().next_cursor).toEqual(expect.any(String));
      const rest = await app.inject({
        url: `/api/v1/schedules?cursor=${list.json().next_cursor}`,
        headers: bearer(keys.manager),
      });
      expect(rest.json().items.map((s: { id: string }) => s.id)).toContain(created.id);

      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${created.id}`,
        headers: bearer(keys.admin),
        payload: { frequency: { type: 'weekly', days: ['mon', 'Thursday'] }, time: '06:15', timezone: 'UTC' },
      });
      expect(patched.statusCode, patched.body).toBe(200);
      expect(patched.json()).toMatchObject({
        frequency: { type: 'weekly', days: ['monday', 'thursday'] },
        cron: '15 6 * * 1,4',
        targets: [{ secret_access_key: '••••EKEY' }],
      });
      for (const at of patched.json().next_runs) {
        expect(at).toMatch(/T06:15:00\.000Z$/);
        expect([1, 4]).toContain(new Date(at).getUTCDay());
      }
      const monthly = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${created.id}`,
        headers: bearer(keys.admin),
        payload: { frequency: { type: 'monthly', day_of_month: 31 } },
      });
      expect(monthly.statusCode, monthly.body).toBe(200);
      // The 31st, or the last day of shorter months.
      for (const at of monthly.json().next_runs) {
        const d = new Date(at);
        expect(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate()).toBe(
          d.getUTCDate(),
        );
      }

      expect(
        (await app.inject({ url: `/api/v1/schedules/${created.id}`, headers: bearer(otherKeys.admin) }))
          .statusCode,
      ).toBe(404);
      expect(
        (
          await app.inject({
            method: 'DELETE',
            url: `/api/v1/schedules/${created.id}`,
            headers: bearer(otherKeys.admin),
          })
        ).statusCode,
      ).toBe(404);
      expect((await app.inject({ url: '/api/v1/schedules', headers: bearer(keys.agent) })).statusCode).toBe(
        403,
      );
      // An analyst may manage schedules, but not of personal data.
      const analyst = await post(daily({ pii: 'full' }), keys.analyst);
      expect(analyst.statusCode).toBe(403);
      expect(analyst.json().detail).toMatch(/personal data/);
      expect((await post(daily({ name: 'anonymous' }), keys.analyst)).statusCode).toBe(201);

      // Without a job queue in this app, "run now" answers 503.
      const run = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${created.id}/run`,
        headers: bearer(keys.admin),
      });
      expect(run.statusCode).toBe(503);

      const deleted = await app.inject({
        method: 'DELETE',
        url: `/api/v1/schedules/${created.id}`,
        headers: bearer(keys.admin),
      });
      expect(deleted.statusCode).toBe(200);
      expect(deleted.json().id).toBe(created.id);
      expect(
        (await app.inject({ url: `/api/v1/schedules/${created.id}`, headers: bearer(keys.admin) }))
          .statusCode,
      ).toBe(404);
      const runs = await app.inject({
        url: `/api/v1/schedules/${created.id}/runs`,
        headers: bearer(keys.admin),
      });
      expect(runs.statusCode).toBe(404);
    });

    test('refuses S3 endpoints and SFTP hosts on loopback or link-local addresses when saved', async () => {
      const sftp = {
        type: 'sftp',
        host: '127.0.0.1',
        port: 2222,
        username: 'ferry',
        password: 'pw-123456',
        directory: '/incoming',
        host_key: 'insecure-accept-any',
      };
      const cases: [Record<string, unknown>, string, string][] = [
        [s3Target({ endpoint: 'http://127.0.0.1:9000' }), 'targets[0].endpoint', 'loopback'],
        [s3Target({ endpoint: 'http://169.254.169.254/' }), 'targets[0].endpoint', 'linkLocal'],
        [s3Target({ endpoint: 'http://0x7f.1:9000' }), 'targets[0].endpoint', 'loopback'],
        [sftp, 'targets[0].host', 'loopback'],
        [{ ...sftp, host: '169.254.169.254' }, 'targets[0].host', 'linkLocal'],
        [{ ...sftp, host: '[::1]' }, 'targets[0].host', 'loopback'],
      ];
      for (const [target, parameter, range] of cases) {
        const problem = await rejected(daily({ targets: [target] }));
        expect(problem.parameter, JSON.stringify(target)).toBe(parameter);
        expect(problem.detail).toContain(`is a ${range} address`);
      }
      const documented = await post(
        exportConfig({
          destination: { ...exportConfig().export_config.destination, endpoint: 'http://127.0.0.1:9000' },
        }),
      );
      expect(documented.statusCode).toBe(400);
      expect(documented.json().errors[0].parameter).toBe('export_config.destination.endpoint');
      // A change of the targets is checked too.
      const created = (await post(daily())).json();
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/schedules/${created.id}`,
        headers: bearer(keys.admin),
        payload: { targets: [sftp] },
      });
      expect(patched.statusCode).toBe(400);
      expect(patched.json().errors[0].parameter).toBe('targets[0].host');
      await app.inject({
        method: 'DELETE',
        url: `/api/v1/schedules/${created.id}`,
        headers: bearer(keys.admin),
      });

      // The operator's allow-list lets them through (as for webhooks).
      const allowing = await buildApp({
        database: t.database,
        config: authTestConfig({ FERRY_SECRET_KEY: SECRET, FERRY_OUTBOUND_ALLOW: '127.0.0.1' }),
      });
      try {
        for (const target of [s3Target({ endpoint: 'http://127.0.0.1:9000' }), sftp]) {
          const res = await allowing.inject({
            method: 'POST',
            url: '/api/v1/schedules',
            headers: bearer(keys.admin),
            payload: daily({ targets: [target] }),
          });
          expect(res.statusCode, res.body).toBe(201);
          await allowing.inject({
            method: 'DELETE',
            url: `/api/v1/schedules/${res.json().id}`,
            headers: bearer(keys.admin),
          });
        }
      } finally {
        await allowing.close();
      }
    });

    test("applies the role matrix to stored schedules: an analyst cannot act on an admin's personal data", async () => {
      const personal = (await post(daily({ name: 'Full conversations', pii: 'full' }))).json();
      expect(personal.targets[0].access_key_id).toBe('AKIAIOSFODNN7EXAMPLE');
      const as = (key: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', suffix = '', payload?: object) =>
        app.inject({
          method,
          url: `/api/v1/schedules/${personal.id}${suffix}`,
          headers: bearer(key),
          ...(payload ? { payload } : {}),
        });
      for (const [method, suffix, payload] of [
        ['POST', '/run'],
        ['POST', '/pause'],
        ['PATCH', '', { name: 'renamed' }],
        ['DELETE', ''],
      ] as const) {
        const res = await as(keys.analyst, method, suffix, payload);
        expect(res.statusCode, `${method} ${suffix}: ${res.body}`).toBe(403);
        expect(res.json().code).toBe('forbidden');
        expect(res.json().detail).toContain('pii level "full"');
      }
      // Still there, unchanged; the analyst sees it without the target's access key id.
      const seen = await as(keys.analyst, 'GET');
      expect(seen.statusCode).toBe(200);
      expect(seen.json()).toMatchObject({ name: 'Full conversations', status: 'active' });
      expect(seen.json().targets[0].access_key_id).not.toContain('AKIAIOSFODNN7');
      expect(seen.body).not.toContain('AKIAIOSFODNN7');
      const listed = await app.inject({
        method: 'GET',
        url: '/api/v1/schedules?limit=100',
        headers: bearer(keys.analyst),
      });
      const inList = listed.json().items.find((item: { id: string }) => item.id === personal.id);
      expect(JSON.stringify(inList)).not.toContain('AKIAIOSFODNN7');
      // A manager may export personal data: the full view, and may act on it.
      expect((await as(keys.manager, 'GET')).json().targets[0].access_key_id).toBe('AKIAIOSFODNN7EXAMPLE');
      expect((await as(keys.manager, 'POST', '/pause')).statusCode).toBe(200);
      // An anonymized schedule stays the analyst's to run and change.
      const anonymized = (await post(daily({ name: 'Anonymized' }), keys.admin)).json();
      const paused = await app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${anonymized.id}/pause`,
        headers: bearer(keys.analyst),
      });
      expect(paused.statusCode, paused.body).toBe(200);
      expect(paused.json().targets[0].access_key_id).toBe('AKIAIOSFODNN7EXAMPLE');
      for (const id of [personal.id, anonymized.id])
        await app.inject({ method: 'DELETE', url: `/api/v1/schedules/${id}`, headers: bearer(keys.admin) });
    });
  });
}
