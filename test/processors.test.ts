import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailer } from '../src/deliver/mailer.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import { createProcessor, notifyProcessors } from '../src/privacy/processors.ts';
import { putRetention } from '../src/privacy/retention-policies.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, SECRET } from './support/fixtures/export-jobs.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';

for (const dialect of DIALECTS) {
  describe(`processors and the record of processing (${dialect})`, () => {
    let h: ExportHarness;
    let smtp: TestSmtpServer;
    let receiver: TestWebhookReceiver;

    beforeAll(async () => {
      smtp = await startSmtpServer();
      receiver = await startWebhookReceiver('/erasure');
      h = await exportHarness(dialect, { conversations: 10, env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' } });
      await sql`UPDATE tenants SET home_country = 'DE' WHERE id = ${h.tenant.id}`.execute(h.database.db);
    }, 240_000);
    afterAll(async () => {
      await h?.close();
      await smtp?.stop();
      await receiver?.stop();
    });

    const call = (
      method: 'GET' | 'POST' | 'PATCH' | 'DELETE' | 'PUT',
      url: string,
      key: string,
      payload?: object,
    ) => h.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });

    it('registers, changes and removes processors; refuses bad ones with the field named', async () => {
      const body = {
        name: 'Stripe, Inc. "Payments"',
        purpose: 'Payment processing',
        data_categories: ['identifier', 'contact'],
        location: 'US',
        retention: '7 years after the transaction',
        deletion_channel: 'email',
        deletion_contact: 'privacy@stripe.example',
        included_in_exports: false,
        export_instructions_url: 'https://support.stripe.example/export-my-data',
      };
      const created = await call('POST', '/api/v1/processors', h.keys.admin, body);
      expect(created.statusCode, created.body).toBe(201);
      expect(created.json()).toMatchObject({ name: body.name, channel: 'email' });
      const id = created.json().id as string;
      expect((await call('POST', '/api/v1/processors', h.keys.admin, body)).statusCode).toBe(409);
      for (const [change, field] of [
        [{ data_categories: ['secret'] }, 'data_categories[0]'],
        [{ deletion_channel: 'pigeon' }, 'deletion_channel'],
        [{ deletion_contact: 'not an address' }, 'deletion_contact'],
        [{ deletion_channel: 'webhook', deletion_contact: 'http://10.0.0.7/erase' }, 'deletion_contact'],
        [{ deletion_channel: 'manual', deletion_contact: null }, 'deletion_instructions'],
        [{ export_instructions_url: 'ftp://x.example' }, 'export_instructions_url'],
      ] as const) {
        const res = await call('POST', '/api/v1/processors', h.keys.admin, {
          ...body,
          name: randomUUID(),
          ...change,
        });
        expect(res.statusCode, JSON.stringify(change)).toBe(400);
        expect(res.json().errors[0].parameter).toBe(field);
      }
      expect(
        (await call('POST', '/api/v1/processors', h.keys.manager, { ...body, name: 'x' })).statusCode,
      ).toBe(403);
      expect((await call('GET', '/api/v1/processors', h.keys.manager)).statusCode).toBe(200);
      expect((await call('GET', '/api/v1/processors', h.keys.analyst)).statusCode).toBe(403);
      const patched = await call('PATCH', `/api/v1/processors/${id}`, h.keys.admin, { location: 'IE' });
      expect(patched.json()).toMatchObject({ location: 'IE', deletion_contact: 'privacy@stripe.example' });
      const removed = await call('DELETE', `/api/v1/processors/${id}`, h.keys.admin);
      expect(removed.statusCode).toBe(200);
      expect((await call('GET', `/api/v1/processors/${id}`, h.keys.admin)).statusCode).toBe(404);
      const audit = await sql<{
        action: string;
      }>`SELECT action FROM audit_events WHERE tenant_id = ${h.tenant.id}
        AND target_id = ${id} ORDER BY seq`.execute(h.database.db);
      expect(audit.rows.map((r) => r.action)).toEqual([
        'processor.created',
        'processor.updated',
        'processor.deleted',
      ]);
    });

    it("notifies each processor holding the erased person's categories once, and tracks acknowledgements", async () => {
      const who = { actor: 'cli' };
      const mail = await createProcessor(
        h.database,
        h.tenant.id,
        {
          name: 'Mailchimp',
          purpose: 'Newsletters',
          data_categories: ['contact'],
          location: 'US',
          retention: 'Until unsubscribed',
          deletion_channel: 'email',
          deletion_contact: 'dpo@mailchimp.example',
        },
        who,
      );
      await createProcessor(
        h.database,
        h.tenant.id,
        {
          name: 'Zendesk',
          purpose: 'Ticket handover',
          data_categories: ['free_text', 'contact'],
          location: 'IE',
          retention: '2 years',
          deletion_channel: 'webhook',
          deletion_contact: receiver.url,
        },
        who,
      );
      await createProcessor(
        h.database,
        h.tenant.id,
        {
          name: 'GeoIP Co',
          purpose: 'IP lookups',
          data_categories: ['network'],
          location: 'DE',
          retention: 'None',
          deletion_channel: 'manual',
          deletion_instructions: 'Open a ticket at the GeoIP portal.',
        },
        who,
      );
      const mailer = createMailer({ url: smtp.url, from: 'privacy@ferry.example' });
      const requestId = randomUUID();
      const notices = await notifyProcessors(
        { database: h.database, mailer },
        { tenantId: h.tenant.id, requestId, categories: ['contact', 'free_text'] },
      );
      expect(notices.map((n) => [n.processor, n.status])).toEqual([
        ['Mailchimp', 'sent'],
        ['Zendesk', 'sent'],
      ]);
      expect(smtp.messages).toHaveLength(1);
      expect(smtp.messages[0]!.to).toEqual(['dpo@mailchimp.example']);
      expect(smtp.messages[0]!.mail.text).toContain(requestId);
      expect(receiver.requests).toHaveLength(1);
      const posted = JSON.parse(receiver.requests[0]!.body);
      expect(posted).toMatchObject({
        type: 'erasure_request',
        request_id: requestId,
        data_categories: ['free_text', 'contact'],
      });
      // A retried erasure sends nothing twice.
      await notifyProcessors(
        { database: h.database, mailer },
        { tenantId: h.tenant.id, requestId, categories: ['contact'] },
      );
      expect(smtp.messages).toHaveLength(1);
      expect(receiver.requests).toHaveLength(1);
      const ack = await call(
        'POST',
        `/api/v1/processors/${mail.id}/notifications/${notices[0]!.notification_id}/acknowledge`,
        h.keys.admin,
      );
      expect(ack.statusCode, ack.body).toBe(200);
      expect(ack.json()).toMatchObject({ status: 'acknowledged', processor: 'Mailchimp' });
      expect(ack.json().acknowledged_at).not.toBeNull();

      // A real erasure: the manual processor is pending with its instructions, the others on the receipt's list.
      const customer = (
        await sql<{
          email: string;
        }>`SELECT email FROM customers WHERE tenant_id = ${h.tenant.id} AND email IS NOT NULL
          ORDER BY id LIMIT 1`.execute(h.database.db)
      ).rows[0]!;
      const subject = await resolveSubject(h.database, h.tenant.id, { email: customer.email });
      const erasure = await executeErasure(
        { database: h.database, store: h.store, secretKey: SECRET, mailer },
        { tenantId: h.tenant.id, requestId: randomUUID(), subject },
      );
      expect(erasure.processors_notified.map((p) => p.processor).sort()).toEqual(['Mailchimp', 'Zendesk']);
      expect(erasure.processor_notices!.find((n) => n.processor === 'GeoIP Co')).toMatchObject({
        status: 'pending',
        instructions: 'Open a ticket at the GeoIP portal.',
      });
      expect(smtp.messages).toHaveLength(2);
      expect(JSON.stringify(receiver.requests.map((r) => r.body))).not.toContain(customer.email);
    });

    it('puts the registry into the company package, listed in its checksums', async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'ferry-processors-'));
      try {
        const outcome = await exportCompanyPackage(
          h.database,
          { tenantId: h.tenant.id, kind: 'directory', pii: 'full', datasets: ['account'] },
          { dir },
        );
        const root = path.join(dir, outcome.root);
        const registry = JSON.parse(await readFile(path.join(root, 'processors.json'), 'utf8'));
        expect(registry.processors.map((p: { name: string }) => p.name)).toEqual([
          'GeoIP Co',
          'Mailchimp',
          'Zendesk',
        ]);
        expect(JSON.stringify(registry)).not.toContain('dpo@mailchimp.example');
        expect(await readFile(path.join(root, 'checksums.sha256'), 'utf8')).toContain('processors.json');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('derives the record of processing from the data map, the retention policies and the registry', async () => {
      const ropa = await call('GET', '/api/v1/ropa', h.keys.manager);
      expect(ropa.statusCode, ropa.body).toBe(200);
      expect(ropa.json().source).toBe('default');
      const support = ropa
        .json()
        .activities.find(
          (a: { processing_activity: string }) => a.processing_activity === 'Customer support conversations',
        );
      expect(support.data_categories).toEqual([
        'Identifiers',
        'Contact information',
        'Technical data (IP address, browser)',
        'Location data',
        'Communication content',
      ]);
      expect(support.retention_period).toContain("conversations: the account's lifetime");
      expect(support.recipients).toContain('Mailchimp (processor, US)');
      expect(support.international_transfers.countries).toEqual(expect.arrayContaining(['US', 'IE']));
      expect(support.international_transfers.safeguards).toContain('Standard contractual clauses');
      expect(support.automated_processing.exists).toBe(true);
      // A retention override shows in the record at once.
      await putRetention(
        h.database,
        h.tenant.id,
        [{ dataset: 'conversations', keep: 'P2Y', after: 'last_activity', action: 'delete' }],
        'test',
      );
      const csv = await call('GET', '/api/v1/ropa?format=csv', h.keys.admin);
      expect(csv.headers['content-type']).toContain('text/csv');
      const rows = parse(csv.body, { columns: true }) as Record<string, string>[];
      const row = rows.find((r) => r.processing_activity === 'Customer support conversations')!;
      expect(row.retention_period).toContain('conversations: 2 years after last activity, then deleted');
      expect(row.data_categories!.split('; ')).toContain('Communication content');
      await putRetention(h.database, h.tenant.id, [], 'test');
      // Declared activities replace the defaults; their categories are still derived.
      const put = await call('PUT', '/api/v1/ropa/activities', h.keys.admin, {
        activities: [
          {
            processing_activity: 'Chat support',
            legal_basis: 'Contract (Art. 6(1)(b))',
            datasets: ['conversations'],
            data_subjects: ['Visitors'],
          },
        ],
      });
      expect(put.statusCode, put.body).toBe(200);
      expect(put.json()).toMatchObject({
        source: 'declared',
        activities: [{ processing_activity: 'Chat support' }],
      });
      expect(put.json().activities[0].data_categories).toContain('Contact information');
      const bad = await call('PUT', '/api/v1/ropa/activities', h.keys.admin, {
        activities: [
          { processing_activity: 'x', legal_basis: 'y', datasets: ['nope'], data_subjects: ['z'] },
        ],
      });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().errors[0].parameter).toBe('activities[0].datasets[0]');
      await call('PUT', '/api/v1/ropa/activities', h.keys.admin, { activities: [] });
      expect((await call('GET', '/api/v1/ropa', h.keys.admin)).json().source).toBe('default');
    });
  });
}
