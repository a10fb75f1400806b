import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordConsent } from '../src/privacy/consent.ts';
import { tenantProcessors } from '../src/privacy/processors.ts';
import { DIALECTS } from './support/databases.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';

/** The dashboard's compliance page: the self-audit, the monthly report, processors, the record of processing, consents. */
for (const dialect of DIALECTS) {
  describe(`the compliance page on ${dialect}`, () => {
    let h: ExportHarness;
    beforeAll(async () => {
      h = await exportHarness(dialect, { web: true, conversations: 5 });
    }, 120_000);
    afterAll(async () => h?.close());

    it('shows the self-audit, the report and the record of processing to admins and managers only', async () => {
      const manager = await signInAs(h.app, h.database, h.tenant, 'manager');
      const page = await webGet(h.app, manager, '/app/compliance');
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('href="/app/compliance"');
      expect(page.body).toMatch(/Data portability: \d+\/10/);
      expect(page.body).toContain('Customer support conversations');
      // Managers read; they do not register processors.
      expect(page.body).not.toContain('Register a processor');
      expect((await webPost(h.app, manager, '/app/compliance/processors', { name: 'x' })).statusCode).toBe(
        403,
      );
      const csv = await webGet(h.app, manager, '/app/compliance/ropa.csv');
      expect(csv.headers['content-type']).toContain('text/csv');
      expect(csv.body.split('\n')[0]).toContain('processing_activity,legal_basis,data_categories');
      const analyst = await signInAs(h.app, h.database, h.tenant, 'analyst');
      expect((await webGet(h.app, analyst, '/app/compliance')).statusCode).toBe(403);
      const bad = await webGet(h.app, manager, '/app/compliance?period=2099-01');
      expect(bad.statusCode).toBe(200);
      expect(bad.body).toContain('No report for');
    });

    it('registers and removes a processor, refusing a bad one with the reason', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const bad = await webPost(h.app, admin, '/app/compliance/processors', {
        name: 'Nameless',
        purpose: 'x',
        location: 'US',
        retention: '1 year',
        deletion_channel: 'email',
        deletion_contact: 'nope',
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.body).toContain('data_categories');
      const made = await webPost(h.app, admin, '/app/compliance/processors', {
        name: 'Twilio <SMS>',
        purpose: 'Text messages',
        data_categories: ['contact', 'free_text'],
        location: 'US',
        retention: '30 days',
        deletion_channel: 'email',
        deletion_contact: 'privacy@twilio.example',
      });
      expect(made.statusCode).toBe(303);
      const page = await webGet(h.app, admin, '/app/compliance');
      expect(page.body).toContain('Twilio &#60;SMS&#62;');
      expect(page.body).toContain('Twilio &#60;SMS&#62; (processor, US)');
      const [p] = await tenantProcessors(h.database, h.tenant.id);
      expect((await webPost(h.app, admin, `/app/compliance/processors/${p!.id}/remove`)).statusCode).toBe(
        303,
      );
      expect(await tenantProcessors(h.database, h.tenant.id)).toEqual([]);
    });

    it("looks up a customer's consents", async () => {
      const customer = randomUUID();
      await h.database.db
        .insertInto('customers')
        .values({
          id: customer,
          tenant_id: h.tenant.id,
          email: 'mia.consent@example.com',
          name: 'Mia',
          phone: null,
          country: 'DE',
          segment: 'consumer',
          created_at: new Date(),
          updated_at: new Date(),
        } as never)
        .execute();
      await recordConsent(
        h.database,
        h.tenant.id,
        {
          subject: { customer_id: customer },
          purpose: 'ai_training',
          granted: false,
          source: 'widget_banner',
        },
        { actor: 'cli' },
      );
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/compliance?subject=MIA.CONSENT%40example.com');
      expect(page.body).toContain(`Consents of customer <code>${customer}</code>`);
      expect(page.body).toContain('<td>ai_training</td><td>withdrawn</td>');
      const unknown = await webGet(h.app, admin, '/app/compliance?subject=nobody%40example.com');
      expect(unknown.body).toContain('no customer of this tenant has that email or id');
    });
  });
}
