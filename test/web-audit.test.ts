import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import { type ExportHarness, exportHarness, requestExport } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';

/** The dashboard's audit log: what each role sees, filters, paging, names, escaping, the CSV export. */
for (const dialect of DIALECTS) {
  describe(`the audit log page on ${dialect}`, () => {
    let h: ExportHarness;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const actions = (body: string) =>
      [...body.matchAll(/<td><code>([^<]+)<\/code><\/td>/g)].map((m) => m[1]!);

    it('shows admins every action with the member by name, and managers only exports and downloads', async () => {
      const exported = await requestExport(h.app, h.keys.admin, { datasets: ['account'], format: 'json' });
      await h.waitForExport(exported.id);
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/audit');
      expect(page.statusCode).toBe(200);
      expect(actions(page.body)).toContain('session.signed_in');
      expect(actions(page.body)).toContain('export.requested');
      const name = (
        await sql<{
          name: string;
        }>`SELECT name FROM team_members WHERE id = ${h.tenant.members.admin}`.execute(h.database.db)
      ).rows[0]!.name;
      expect(page.body).toContain(`<td>${name}</td>`);
      const manager = await signInAs(h.app, h.database, h.tenant, 'manager');
      const limited = await webGet(h.app, manager, '/app/audit');
      expect(actions(limited.body).length).toBeGreaterThan(0);
      for (const action of actions(limited.body)) expect(action).toMatch(/^export\./);
      // Managers may not export the audit log itself.
      expect(limited.body).not.toContain('Export as CSV');
      expect((await webPost(h.app, manager, '/app/audit/export')).statusCode).toBe(403);
      const analyst = await signInAs(h.app, h.database, h.tenant, 'analyst');
      expect((await webGet(h.app, analyst, '/app/audit')).statusCode).toBe(403);
    });

    it('filters by action, pages by 50 without repeats, and escapes what callers sent', async () => {
      for (let i = 0; i < 60; i++)
        await recordAudit(h.database, {
          tenantId: h.tenant.id,
          actor: 'system',
          action: 'test.event',
          success: true,
          userAgent: `<script>alert(${i})</script>`,
        });
      await recordAudit(h.database, {
        tenantId: h.other.id,
        actor: 'system',
        action: 'test.event',
        success: true,
      });
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const first = await webGet(h.app, admin, '/app/audit?action=test.event');
      expect(actions(first.body)).toHaveLength(50);
      expect(first.body).not.toContain('<script>alert');
      expect(first.body).toContain('&#60;script&#62;alert');
      const older = /href="(\/app\/audit\?[^"]+)" rel="next"/.exec(first.body)![1]!.replaceAll('&#38;', '&');
      const second = await webGet(h.app, admin, older);
      // 60 of this tenant's events in all: the other tenant's one never shows.
      expect(actions(second.body)).toHaveLength(10);
      expect(second.body).not.toContain('rel="next"');
    });

    it('exports the log as CSV through the pipeline, one line per event', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const events = async () =>
        Number(
          (
            await sql<{
              n: string;
            }>`SELECT count(*) AS n FROM audit_events WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db)
          ).rows[0]!.n,
        );
      const before = await events();
      const res = await webPost(h.app, admin, '/app/audit/export', { from: '', to: '' });
      expect(res.statusCode).toBe(303);
      const id = /([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
      const done = await h.waitForExport(id);
      expect(done.status).toBe('completed');
      // Every event up to the export's own request, and none of another tenant.
      expect(done.files[0]!.records).toBeGreaterThanOrEqual(before + 1);
      expect(done.files[0]!.records).toBeLessThanOrEqual(await events());
      expect(done.files[0]!.name).toMatch(/\.csv$/);
    });
  });
}
