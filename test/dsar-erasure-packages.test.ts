import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { until } from './support/wait.ts';

/**
 * Erasing one person deletes the stored files that hold their data, their own access
 * packages included, and leaves another person's access package alone (it holds only
 * that other person's rows).
 */
for (const dialect of DIALECTS) {
  describe(`erasure and other people's access packages on ${dialect}`, () => {
    let h: ExportHarness;
    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    const api = async (method: string, url: string, payload?: object) => {
      const res = await h.app.inject({
        method: method as 'POST',
        url,
        headers: bearer(h.keys.admin),
        ...(payload ? { payload } : {}),
      });
      expect(res.statusCode, res.body).toBeLessThan(300);
      return res.json();
    };
    const finished = (id: string) =>
      until(`request ${id}`, async () => {
        const view = await api('GET', `/api/v1/dsar/${id}`);
        return view.status === 'completed' ? view : undefined;
      });
    const request = async (type: string, email: string) => {
      const created = await api('POST', '/api/v1/dsar', {
        type,
        regulation: 'gdpr',
        source: 'api',
        subject: { email },
      });
      await api('POST', `/api/v1/dsar/${created.id}/verify`, { reason: 'known caller' });
      if (type === 'erasure') await api('POST', `/api/v1/dsar/${created.id}/approve`);
      return finished(created.id);
    };
    const packageOf = async (view: { result: { steps: { package: { export_id: string } } } }) => {
      const id = view.result.steps.package.export_id;
      return (
        await sql<{
          files_deleted_at: Date | null;
        }>`SELECT files_deleted_at FROM export_requests WHERE id = ${id}`.execute(h.database.db)
      ).rows[0]!;
    };

    it("keeps another person's package, and deletes the person's own", async () => {
      const { rows } = await sql<{ email: string }>`SELECT email FROM customers
        WHERE tenant_id = ${h.tenant.id} AND email LIKE '%@%' ORDER BY email LIMIT 2`.execute(h.database.db);
      const [a, b] = rows.map((r) => r.email);
      const aPackage = await request('access', a!);
      const bPackage = await request('access', b!);
      expect((await packageOf(aPackage)).files_deleted_at).toBeNull();
      await request('erasure', b!);
      expect((await packageOf(aPackage)).files_deleted_at).toBeNull();
      expect((await packageOf(bPackage)).files_deleted_at).not.toBeNull();
    });
  });
}
