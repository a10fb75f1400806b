import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listHolds } from '../src/privacy/holds.ts';
import { effectiveRetention } from '../src/privacy/retention-policies.ts';
import { DIALECTS } from './support/databases.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { until } from './support/wait.ts';

/** The dashboard's retention page: policies, the sweep, legal holds, the audit chain, closing the account. */
for (const dialect of DIALECTS) {
  describe(`the retention page on ${dialect}`, () => {
    let h: ExportHarness;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, workers: true, conversations: 20 });
    }, 120_000);
    afterAll(async () => h?.close());

    it('is for admins only, in the navigation and when forced', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/retention');
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('href="/app/retention"');
      expect(page.body).toContain(
        'Activity logs are kept for 2 years after they are created, then archived for 5 years',
      );
      expect(page.body).toContain('verified');
      for (const role of ['manager', 'analyst'] as const) {
        const session = await signInAs(h.app, h.database, h.tenant, role);
        const other = await webGet(h.app, session, '/app/exports');
        expect(other.body).not.toContain('href="/app/retention"');
        expect((await webGet(h.app, session, '/app/retention')).statusCode).toBe(403);
        expect(
          (
            await webPost(h.app, session, '/app/retention/holds', {
              scope: 'tenant',
              reason: 'r',
              matter: 'm',
            })
          ).statusCode,
        ).toBe(403);
      }
    });

    it('changes a policy, refuses a bad one with the reason, and resets it', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const bad = await webPost(h.app, admin, '/app/retention', {
        dataset: 'conversations',
        keep: 'forever',
        after: 'created',
        action: 'delete',
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.body).toContain('not an ISO 8601 duration');
      const saved = await webPost(h.app, admin, '/app/retention', {
        dataset: 'conversations',
        keep: 'P3Y',
        after: 'last_activity',
        action: 'anonymize',
      });
      expect(saved.statusCode).toBe(303);
      const policy = (await effectiveRetention(h.database, h.tenant.id)).find(
        (p) => p.dataset === 'conversations',
      )!;
      expect(policy).toMatchObject({
        keep: 'P3Y',
        after: 'last_activity',
        action: 'anonymize',
        source: 'tenant',
      });
      const page = await webGet(h.app, admin, '/app/retention');
      expect(page.body).toContain(
        'Conversations are kept for 3 years after their last activity, then anonymized',
      );
      await webPost(h.app, admin, '/app/retention/reset', { dataset: 'conversations' });
      expect((await effectiveRetention(h.database, h.tenant.id)).every((p) => p.source === 'default')).toBe(
        true,
      );
    });

    it('places a hold that the next-sweep table counts, and releases it with a reason', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      await webPost(h.app, admin, '/app/retention', {
        dataset: 'conversations',
        keep: 'P1D',
        after: 'created',
        action: 'delete',
      });
      const missing = await webPost(h.app, admin, '/app/retention/holds', {
        scope: 'subject',
        reason: 'r',
        matter: 'm',
      });
      expect(missing.statusCode).toBe(400);
      const placed = await webPost(h.app, admin, '/app/retention/holds', {
        scope: 'date_range',
        from: '2026-08-01',
        to: '2026-08-15',
        reason: 'Preservation <letter>',
        matter: 'PL-9',
      });
      expect(placed.statusCode).toBe(303);
      const page = await webGet(h.app, admin, '/app/retention');
      expect(page.body).toContain('Preservation &#60;letter&#62;');
      const held = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM conversations WHERE tenant_id = ${h.tenant.id}
        AND start_timestamp >= '2026-08-01' AND start_timestamp < '2026-08-15'`.execute(h.database.db);
      const row = /<tr><td>conversations<\/td>.*?<\/tr>/.exec(
        page.body.slice(page.body.indexOf('id="next-sweep"')),
      )?.[0];
      expect(row).toContain(`${Number(held.rows[0]!.n)} (PL-9)`);
      const [hold] = await listHolds(h.database, h.tenant.id);
      const released = await webPost(h.app, admin, `/app/retention/holds/${hold!.id}/release`, {
        reason: 'Letter withdrawn',
      });
      expect(released.statusCode).toBe(303);
      expect(await listHolds(h.database, h.tenant.id)).toEqual([]);
      await webPost(h.app, admin, '/app/retention/reset', { dataset: 'conversations' });
    });

    it('queues a sweep that the workers run', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const run = await webPost(h.app, admin, '/app/retention/run');
      expect(run.statusCode).toBe(303);
      await until('the queued sweep', async () => {
        const r = await sql<{
          status: string;
        }>`SELECT status FROM retention_sweeps WHERE tenant_id = ${h.tenant.id}
          AND trigger = 'manual'`.execute(h.database.db);
        return r.rows[0]?.status === 'completed' ? true : undefined;
      });
    });

    it('closes the account only with the slug typed, and reopens it', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const wrong = await webPost(h.app, admin, '/app/retention/close', { confirm: 'nope' });
      expect(wrong.statusCode).toBe(400);
      const closed = await webPost(h.app, admin, '/app/retention/close', { confirm: h.tenant.slug });
      expect(closed.statusCode).toBe(303);
      const page = await webGet(h.app, admin, '/app/retention');
      expect(page.body).toContain('Reopen the account');
      await webPost(h.app, admin, '/app/retention/reopen');
      const state = await sql<{
        status: string;
      }>`SELECT status FROM tenants WHERE id = ${h.tenant.id}`.execute(h.database.db);
      expect(state.rows[0]!.status).toBe('active');
    });
  });
}
