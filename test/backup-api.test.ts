import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { until } from './support/wait.ts';

for (const dialect of DIALECTS) {
  describe(`backups over the API and on the dashboard (${dialect})`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true, conversations: 20 });
    }, 240_000);
    afterAll(async () => h?.close());

    const call = (method: 'GET' | 'PUT' | 'POST', url: string, key: string, payload?: unknown) =>
      h.app.inject({
        method,
        url,
        headers: bearer(key),
        ...(payload === undefined ? {} : { payload: payload as object }),
      });

    const settled = (url: string, key = h.keys.admin) =>
      until(`${url} to finish`, async () => {
        const res = await call('GET', url, key);
        const body = res.json();
        return body.status === 'running' ? undefined : body;
      });

    it('is for admins only', async () => {
      for (const role of ['manager', 'analyst', 'agent'] as const) {
        expect((await call('GET', '/api/v1/backups', h.keys[role])).statusCode).toBe(403);
        expect((await call('POST', '/api/v1/backups', h.keys[role])).statusCode).toBe(403);
      }
    });

    it('shows the default preset and refuses bad settings with a problem naming the field', async () => {
      const res = await call('GET', '/api/v1/backups/settings', h.keys.admin);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({
        enabled: false,
        frequency: 'daily',
        keep: { keep_daily: 30, keep_weekly: 52, keep_monthly: 24, keep_yearly: 7 },
        destinations: [{ type: 'default', name: 'primary' }],
      });
      for (const [body, parameter] of [
        [{ keep: { keep_fortnightly: 2 } }, 'keep.keep_fortnightly'],
        [{ time_of_day: '25:00' }, 'time_of_day'],
        [{ destinations: [{ type: 'local', name: 'disk', path: '/tmp' }] }, 'destinations[0].type'],
        [{ recipients: ['AGE-SECRET-KEY-1XYZ'] }, 'recipients[0]'],
      ] as const) {
        const bad = await call('PUT', '/api/v1/backups/settings', h.keys.admin, body);
        expect(bad.statusCode, JSON.stringify(body)).toBe(400);
        expect(bad.headers['content-type']).toContain('application/problem+json');
        expect(JSON.stringify(bad.json())).toContain(parameter);
      }
      // Nothing to drill before the first backup.
      const drill = await call('POST', '/api/v1/backups/drills', h.keys.admin);
      expect(drill.statusCode).toBe(404);
      expect(drill.headers['content-type']).toContain('application/problem+json');
      const saved = await call('PUT', '/api/v1/backups/settings', h.keys.admin, {
        enabled: true,
        time_of_day: '03:30',
        keep: { keep_daily: 7, keep_weekly: 4 },
      });
      expect(saved.json()).toMatchObject({
        enabled: true,
        time_of_day: '03:30',
        keep: { keep_daily: 7, keep_weekly: 4 },
      });
    });

    it('takes a backup, verifies it, restores it into a sandbox and drills it', async () => {
      const created = await call('POST', '/api/v1/backups', h.keys.admin);
      expect(created.statusCode).toBe(202);
      expect(created.json()).toMatchObject({ status: 'running' });
      const backup = await settled(created.headers.location as string);
      expect(backup).toMatchObject({ status: 'completed', kind: 'full' });
      expect(backup.rows).toBeGreaterThan(100);

      const list = await call('GET', '/api/v1/backups', h.keys.admin);
      expect(list.json().data.map((b: { id: string }) => b.id)).toContain(backup.id);
      // Another tenant's admin sees nothing of it.
      expect((await call('GET', `/api/v1/backups/${backup.id}`, h.otherKeys.admin)).statusCode).toBe(404);
      expect((await call('GET', '/api/v1/backups/not-a-uuid', h.keys.admin)).statusCode).toBe(404);

      const verified = await call('POST', `/api/v1/backups/${backup.id}/verify`, h.keys.admin, {
        level: 'full',
      });
      expect(verified.statusCode).toBe(200);
      expect(verified.json()).toMatchObject({
        ok: true,
        level: 'full',
        destinations: [{ destination: 'primary', ok: true }],
      });
      expect(
        (await call('POST', `/api/v1/backups/${backup.id}/verify`, h.keys.admin, { level: 'deep' }))
          .statusCode,
      ).toBe(400);

      for (const [body, parameter] of [
        [{ mode: 'database' }, 'mode'],
        [{ mode: 'sandbox', destination: 'elsewhere' }, 'destination'],
        [{ mode: 'sandbox', extra: true }, 'extra'],
      ] as const) {
        const bad = await call('POST', `/api/v1/backups/${backup.id}/restore`, h.keys.admin, body);
        expect(bad.statusCode, JSON.stringify(body)).toBe(400);
        expect(JSON.stringify(bad.json())).toContain(parameter);
      }
      const replace = await call('POST', `/api/v1/backups/${backup.id}/restore`, h.keys.admin, {
        mode: 'replace',
      });
      expect(replace.statusCode).toBe(400);
      expect(JSON.stringify(replace.json())).toContain('confirm');
      const restore = await call('POST', `/api/v1/backups/${backup.id}/restore`, h.keys.admin, {
        mode: 'sandbox',
      });
      expect(restore.statusCode).toBe(202);
      const done = await settled(restore.headers.location as string);
      expect(done).toMatchObject({ status: 'completed', mode: 'sandbox' });
      const target = done.report.target_tenant_id as string;
      const rows = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM messages WHERE tenant_id = ${target}`.execute(h.database.db);
      const live = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM messages WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db);
      expect(rows.rows[0]!.n).toBe(live.rows[0]!.n);

      const drill = await call('POST', '/api/v1/backups/drills', h.keys.admin);
      expect(drill.statusCode).toBe(202);
      const drilled = await settled(drill.headers.location as string);
      expect(drilled).toMatchObject({
        status: 'completed',
        mode: 'drill',
        report: { ok: true, sandbox_deleted: true },
      });
      expect((await call('GET', '/api/v1/backups/drills', h.keys.admin)).json().data[0].id).toBe(drilled.id);

      const audited = await sql<{ action: string }>`
        SELECT action FROM audit_events WHERE tenant_id = ${h.tenant.id} AND action LIKE 'backup.%' ORDER BY seq`.execute(
        h.database.db,
      );
      expect(audited.rows.map((r) => r.action)).toEqual(
        expect.arrayContaining(['backup.completed', 'backup.verified', 'backup.restored', 'backup.drilled']),
      );
    }, 120_000);

    it('shows backups, restores and drills on the dashboard, for admins only', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/backups');
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('href="/app/backups"');
      expect(page.body).toContain('Restore drills');
      expect(page.body).toMatch(/daily at 03:30/);
      const manager = await signInAs(h.app, h.database, h.tenant, 'manager');
      expect((await webGet(h.app, manager, '/app/backups')).statusCode).toBe(403);
      expect((await webGet(h.app, manager, '/app/exports')).body).not.toContain('href="/app/backups"');

      const completed = async () =>
        (
          await sql<{ n: number }>`
            SELECT count(*)::int AS n FROM backups WHERE tenant_id = ${h.tenant.id} AND status = 'completed'`.execute(
            h.database.db,
          )
        ).rows[0]!.n;
      const before = await completed();
      const run = await webPost(h.app, admin, '/app/backups/run', {});
      expect(run.statusCode).toBe(303);
      await until('the dashboard backup', async () => ((await completed()) > before ? true : undefined));
      // Restoring over the live account needs the slug typed.
      const latest = await sql<{ id: string }>`
        SELECT id FROM backups WHERE tenant_id = ${h.tenant.id} AND status = 'completed' ORDER BY started_at DESC LIMIT 1`.execute(
        h.database.db,
      );
      const refused = await webPost(h.app, admin, '/app/backups/restore-live', {
        backup_id: latest.rows[0]!.id,
        confirm: 'wrong',
      });
      expect(refused.statusCode).toBe(400);
      expect(refused.body).toContain(`type ${h.tenant.slug} to confirm`);
      const shown = await webGet(h.app, admin, '/app/backups');
      expect(shown.body).toContain('completed');
      expect(shown.body).toContain('met');
    }, 120_000);
  });
}
