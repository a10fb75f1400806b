import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, type WebSession, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';

const TECHNICAL = {
  filters: {
    escalated: true,
    topics: ['technical_support', 'bug_report', 'integration'],
    confidence_score: { max: 0.5 },
  },
  include_messages: true,
  annotations: { resolution_notes: true, follow_up_required: true },
};

/** The "Saved exports" section of the dashboard's export page: save, list, run, delete, as the API does. */
for (const dialect of DIALECTS) {
  describe(`saved exports on the dashboard's export page (${dialect})`, () => {
    let h: ExportHarness;
    let admin: WebSession;
    let analyst: WebSession;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true });
      admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      analyst = await signInAs(h.app, h.database, h.tenant, 'analyst');
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const saved = async () =>
      (
        await sql<{ id: string; name: string; definition: unknown }>`
          SELECT id, name, definition FROM export_configs WHERE tenant_id = ${h.tenant.id}`.execute(
          h.database.db,
        )
      ).rows;

    it('saves a configuration from the form, refusing a bad one with the field at fault', async () => {
      const page = await webGet(h.app, admin, '/app/export');
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('Saved exports');
      expect(page.body).toContain('No saved exports yet.');

      const bad = await webPost(h.app, admin, '/app/export-configs', {
        export_name: 'Bad <one>',
        definition: '{"columns": ["conversation_id", "shoe_size"]}',
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.body).toContain('shoe_size');
      // The form keeps what was typed, escaped.
      expect(bad.body).toContain('Bad &#60;one&#62;');
      expect(bad.body).not.toContain('Bad <one>');
      const notJson = await webPost(h.app, admin, '/app/export-configs', {
        export_name: 'x',
        definition: '{"filters": ',
      });
      expect(notJson.statusCode).toBe(400);
      expect(notJson.body).toContain('is not JSON');
      expect(await saved()).toEqual([]);

      const res = await webPost(h.app, admin, '/app/export-configs', {
        export_name: 'Technical "Escalation" 🔧',
        definition: JSON.stringify(TECHNICAL),
      });
      expect(res.statusCode, res.body).toBe(303);
      const rows = await saved();
      expect(rows).toHaveLength(1);
      expect(rows[0]!.definition).toEqual({ export_name: 'Technical "Escalation" 🔧', ...TECHNICAL });
      const listed = await webGet(h.app, admin, '/app/export');
      expect(listed.body).toContain('Technical &#34;Escalation&#34; 🔧');
      expect(listed.body).toContain('ZIP of conversations.csv, messages.csv');
      expect(listed.body).toContain(`/app/export-configs/${rows[0]!.id}/run`);
      expect(listed.body).toContain('hx-confirm=');
    });

    it('runs a saved configuration to a completed export, and shows its last run', async () => {
      const [config] = await saved();
      const res = await webPost(h.app, admin, `/app/export-configs/${config!.id}/run`, {});
      expect(res.statusCode, res.body).toBe(303);
      const exportId = /\/app\/exports\/([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
      const done = await h.waitForExport(exportId);
      expect(done.status).toBe('completed');
      expect(done.files[0]!.name).toMatch(/^technical-escalation-.*\.zip$/);
      const listed = await webGet(h.app, admin, '/app/export');
      expect(listed.body).toContain(`/app/exports/${exportId}`);
    });

    it('lets an analyst run but not save or delete', async () => {
      const [config] = await saved();
      const page = await webGet(h.app, analyst, '/app/export');
      expect(page.body).toContain(`/app/export-configs/${config!.id}/run`);
      expect(page.body).not.toContain(`/app/export-configs/${config!.id}/delete`);
      expect(page.body).not.toContain('Save an export');
      const refused = await webPost(h.app, analyst, `/app/export-configs/${config!.id}/delete`, {});
      expect(refused.statusCode).toBe(403);
      expect(await saved()).toHaveLength(1);
    });

    it('deletes a saved configuration', async () => {
      const [config] = await saved();
      const res = await webPost(h.app, admin, `/app/export-configs/${config!.id}/delete`, {});
      expect(res.statusCode).toBe(303);
      expect(await saved()).toEqual([]);
      expect((await webPost(h.app, admin, `/app/export-configs/${config!.id}/delete`, {})).statusCode).toBe(
        404,
      );
    });
  });
}
