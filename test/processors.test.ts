import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMailer, type Mailer } from '../src/deliver/mailer.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import {
  acknowledgeNotification,
  createProcessor,
  notifyProcessors,
  PROCESSOR_CATEGORIES,
  type Processor,
  tenantProcessors,
} from '../src/privacy/processors.ts';
import { categoriesOf, classesOf, type Ropa, ropaCsv, ropaJson } from '../src/privacy/ropa.ts';
import { effectiveRetention, putRetention } from '../src/privacy/retention-policies.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness, SECRET } from './support/fixtures/export-jobs.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import { startWebhookReceiver, type TestWebhookReceiver } from './support/webhook-receiver.ts';

/** The receiver listens on 127.0.0.1, which the operator allow-lists (FERRY_OUTBOUND_ALLOW). */
const LOCAL = outboundPolicy(['127.0.0.1']);

for (const dialect of DIALECTS) {
  describe(`processors and the record of processing (${dialect})`, () => {
    let h: ExportHarness;
    let smtp: TestSmtpServer;
    let receiver: TestWebhookReceiver;
    let mailer: Mailer;

    beforeAll(async () => {
      smtp = await startSmtpServer();
      receiver = await startWebhookReceiver('/erasure');
      mailer = createMailer({ url: smtp.url, from: 'privacy@ferry.example' });
      h = await exportHarness(dialect, { conversations: 10, env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' } });
      await sql`UPDATE tenants SET home_country = 'DE' WHERE id = ${h.tenant.id}`.execute(h.database.db);
    }, 240_000);
    afterAll(async () => {
      mailer?.close();
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

    it('derives the allowed categories from the data map: identifiers and the personal classes', () => {
      expect([...PROCESSOR_CATEGORIES]).toEqual([
        'identifier',
        'contact',
        'network',
        'location',
        'free_text',
      ]);
    });

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
      expect(created.json()).toMatchObject({
        name: body.name,
        channel: 'email',
        data_categories: ['identifier', 'contact'],
        location: 'US',
        retention: body.retention,
        deletion_contact: body.deletion_contact,
        deletion_instructions: null,
        included_in_exports: false,
        export_instructions_url: body.export_instructions_url,
      });
      const id = created.json().id as string;
      const again = await call('POST', '/api/v1/processors', h.keys.admin, body);
      expect(again.statusCode).toBe(409);
      expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
      for (const [change, field] of [
        [{ data_categories: ['secret'] }, 'data_categories[0]'],
        [{ data_categories: ['contact', 'internal'] }, 'data_categories[1]'],
        [{ data_categories: ['none'] }, 'data_categories[0]'],
        [{ name: '   ' }, 'name'],
        [{ deletion_channel: 'pigeon' }, 'deletion_channel'],
        [{ deletion_contact: 'not an address' }, 'deletion_contact'],
        [{ deletion_contact: null }, 'deletion_contact'],
        [{ deletion_channel: 'webhook', deletion_contact: 'http://10.0.0.7/erase' }, 'deletion_contact'],
        [{ deletion_channel: 'webhook', deletion_contact: 'https://169.254.169.254/x' }, 'deletion_contact'],
        [{ deletion_channel: 'manual', deletion_contact: null }, 'deletion_instructions'],
        [{ export_instructions_url: 'ftp://x.example' }, 'export_instructions_url'],
      ] as const) {
        const res = await call('POST', '/api/v1/processors', h.keys.admin, {
          ...body,
          name: randomUUID(),
          ...change,
        });
        expect(res.statusCode, JSON.stringify(change)).toBe(400);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.json().errors[0].parameter, JSON.stringify(change)).toBe(field);
      }
      // An unknown field is refused by the schema.
      const extra = await call('POST', '/api/v1/processors', h.keys.admin, {
        ...body,
        name: 'x',
        owner: 'me',
      });
      expect(extra.statusCode).toBe(400);

      // Roles: admins change, admins and managers read, analysts and agents neither.
      expect(
        (await call('POST', '/api/v1/processors', h.keys.manager, { ...body, name: 'x' })).statusCode,
      ).toBe(403);
      expect(
        (await call('PATCH', `/api/v1/processors/${id}`, h.keys.manager, { location: 'IE' })).statusCode,
      ).toBe(403);
      expect((await call('DELETE', `/api/v1/processors/${id}`, h.keys.manager)).statusCode).toBe(403);
      expect((await call('GET', '/api/v1/processors', h.keys.manager)).json().data).toHaveLength(1);
      expect((await call('GET', `/api/v1/processors/${id}`, h.keys.manager)).statusCode).toBe(200);
      for (const key of [h.keys.analyst, h.keys.agent]) {
        expect((await call('GET', '/api/v1/processors', key)).statusCode).toBe(403);
        expect((await call('GET', `/api/v1/processors/${id}`, key)).statusCode).toBe(403);
        expect((await call('POST', '/api/v1/processors', key, { ...body, name: 'x' })).statusCode).toBe(403);
      }
      // Another tenant sees none of it.
      expect((await call('GET', `/api/v1/processors/${id}`, h.otherKeys.admin)).statusCode).toBe(404);
      expect((await call('DELETE', `/api/v1/processors/${id}`, h.otherKeys.admin)).statusCode).toBe(404);
      expect((await call('GET', '/api/v1/processors', h.otherKeys.admin)).json().data).toEqual([]);
      expect((await call('GET', '/api/v1/processors/not-a-uuid', h.keys.admin)).statusCode).toBe(404);

      const patched = await call('PATCH', `/api/v1/processors/${id}`, h.keys.admin, { location: 'IE' });
      expect(patched.statusCode, patched.body).toBe(200);
      expect(patched.json()).toMatchObject({ location: 'IE', deletion_contact: 'privacy@stripe.example' });
      const manual = await call('PATCH', `/api/v1/processors/${id}`, h.keys.admin, {
        deletion_channel: 'manual',
      });
      expect(manual.statusCode).toBe(400);
      expect(manual.json().errors[0].parameter).toBe('deletion_instructions');
      const removed = await call('DELETE', `/api/v1/processors/${id}`, h.keys.admin);
      expect(removed.statusCode).toBe(200);
      expect(removed.json().name).toBe(body.name);
      expect((await call('GET', `/api/v1/processors/${id}`, h.keys.admin)).statusCode).toBe(404);
      const audit = await sql<{
        action: string;
        actor: string;
      }>`SELECT action, actor FROM audit_events WHERE tenant_id = ${h.tenant.id}
        AND target_id = ${id} ORDER BY seq`.execute(h.database.db);
      expect(audit.rows.map((r) => r.action)).toEqual([
        'processor.created',
        'processor.updated',
        'processor.deleted',
      ]);
    });

    it("notifies each processor holding the erased person's categories once, and tracks acknowledgements", async () => {
      const who = { actor: 'cli' };
      const add = (input: Parameters<typeof createProcessor>[2]) =>
        createProcessor(h.database, h.tenant.id, input, who);
      const mail = await add({
        name: 'Mailchimp',
        purpose: 'Newsletters',
        data_categories: ['contact'],
        location: 'US',
        retention: 'Until unsubscribed',
        deletion_channel: 'email',
        deletion_contact: 'dpo@mailchimp.example',
      });
      const hook = await add({
        name: 'Zendesk',
        purpose: 'Ticket handover',
        data_categories: ['free_text', 'contact'],
        location: 'IE',
        retention: '2 years',
        deletion_channel: 'webhook',
        deletion_contact: receiver.url,
      });
      const geo = await add({
        name: 'GeoIP Co',
        purpose: 'IP lookups',
        data_categories: ['network'],
        location: 'DE',
        retention: 'None',
        deletion_channel: 'manual',
        deletion_instructions: 'Open a ticket at the GeoIP portal.',
      });
      expect(geo.channel).toBe('manual');
      const requestId = randomUUID();
      const notices = await notifyProcessors(
        { database: h.database, mailer, outbound: LOCAL },
        { tenantId: h.tenant.id, requestId, categories: ['contact', 'free_text'] },
      );
      // Only the processors whose categories meet the person's: not GeoIP Co (network).
      expect(notices.map((n) => [n.processor, n.channel, n.status])).toEqual([
        ['Mailchimp', 'email', 'sent'],
        ['Zendesk', 'webhook', 'sent'],
      ]);
      for (const n of notices) {
        expect(n.request_id).toBe(requestId);
        expect(n.notified_at).not.toBeNull();
        expect(n.acknowledged_at).toBeNull();
      }
      expect(smtp.messages).toHaveLength(1);
      expect(smtp.messages[0]!.to).toEqual(['dpo@mailchimp.example']);
      expect(smtp.messages[0]!.mail.subject).toContain(requestId);
      expect(smtp.messages[0]!.mail.text).toContain(requestId);
      expect(receiver.requests).toHaveLength(1);
      expect(receiver.requests[0]!.headers['content-type']).toBe('application/json');
      const posted = JSON.parse(receiver.requests[0]!.body);
      expect(posted).toEqual({
        type: 'erasure_request',
        request_id: requestId,
        notification_id: notices[1]!.notification_id,
        tenant_id: h.tenant.id,
        controller: expect.any(String),
        processor: 'Zendesk',
        data_categories: ['free_text', 'contact'],
        requested_at: expect.any(String),
      });
      // A retried erasure sends nothing twice.
      const retried = await notifyProcessors(
        { database: h.database, mailer, outbound: LOCAL },
        { tenantId: h.tenant.id, requestId, categories: ['contact', 'free_text'] },
      );
      expect(retried.map((n) => n.notification_id)).toEqual(notices.map((n) => n.notification_id));
      expect(smtp.messages).toHaveLength(1);
      expect(receiver.requests).toHaveLength(1);
      const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM processor_notifications
        WHERE request_id = ${requestId}`.execute(h.database.db);
      expect(Number(rows.rows[0]!.n)).toBe(2);

      // Acknowledgements: admins only, through the notice's own processor, the first time kept.
      const ackUrl = (processorId: string, noticeId: string) =>
        `/api/v1/processors/${processorId}/notifications/${noticeId}/acknowledge`;
      expect(
        (await call('POST', ackUrl(mail.id, notices[0]!.notification_id), h.keys.analyst)).statusCode,
      ).toBe(403);
      expect(
        (await call('POST', ackUrl(mail.id, notices[0]!.notification_id), h.keys.manager)).statusCode,
      ).toBe(403);
      expect(
        (await call('POST', ackUrl(hook.id, notices[0]!.notification_id), h.keys.admin)).statusCode,
      ).toBe(404);
      expect(
        (await call('POST', ackUrl(mail.id, notices[0]!.notification_id), h.otherKeys.admin)).statusCode,
      ).toBe(404);
      const ack = await call('POST', ackUrl(mail.id, notices[0]!.notification_id), h.keys.admin);
      expect(ack.statusCode, ack.body).toBe(200);
      expect(ack.json()).toMatchObject({
        status: 'acknowledged',
        processor: 'Mailchimp',
        request_id: requestId,
      });
      expect(ack.json().acknowledged_at).not.toBeNull();
      const byFunction = await acknowledgeNotification(
        h.database,
        h.tenant.id,
        notices[1]!.notification_id,
        'cli',
      );
      expect(byFunction).toMatchObject({ status: 'acknowledged', processor: 'Zendesk' });
      const twice = await acknowledgeNotification(
        h.database,
        h.tenant.id,
        notices[1]!.notification_id,
        'cli',
      );
      expect(twice.acknowledged_at).toBe(byFunction.acknowledged_at);
      await expect(
        acknowledgeNotification(h.database, h.other.id, notices[1]!.notification_id, 'cli'),
      ).rejects.toMatchObject({ code: 'not_found' });
      const listed = await call('GET', `/api/v1/processors/${mail.id}/notifications`, h.keys.manager);
      expect(listed.statusCode, listed.body).toBe(200);
      expect(listed.json().data.map((n: { status: string }) => n.status)).toEqual(['acknowledged']);
      expect(
        (await call('GET', `/api/v1/processors/${mail.id}/notifications`, h.keys.analyst)).statusCode,
      ).toBe(403);
      expect(
        (await call('GET', `/api/v1/processors/${mail.id}/notifications?status=lost`, h.keys.admin))
          .statusCode,
      ).toBe(400);

      // A real erasure: the manual processor is pending with its instructions; the webhook is refused
      // because erasure was given no outbound allow-list (127.0.0.1 is not public), and a retry with it sends.
      const customer = (
        await sql<{
          email: string;
        }>`SELECT email FROM customers WHERE tenant_id = ${h.tenant.id} AND email IS NOT NULL
          ORDER BY id LIMIT 1`.execute(h.database.db)
      ).rows[0]!;
      const subject = await resolveSubject(h.database, h.tenant.id, { email: customer.email });
      const erasureId = randomUUID();
      const erasure = await executeErasure(
        { database: h.database, store: h.store, secretKey: SECRET, mailer },
        { tenantId: h.tenant.id, requestId: erasureId, subject },
      );
      expect(erasure.processors_notified.map((p) => p.processor)).toEqual(['Mailchimp']);
      expect(erasure.processor_notices!.find((n) => n.processor === 'GeoIP Co')).toMatchObject({
        status: 'pending',
        notified_at: null,
        instructions: 'Open a ticket at the GeoIP portal.',
      });
      const refused = erasure.processor_notices!.find((n) => n.processor === 'Zendesk')!;
      expect(refused).toMatchObject({ status: 'failed', notified_at: null });
      expect(refused.error).toMatch(/loopback/);
      expect(smtp.messages).toHaveLength(2);
      expect(receiver.requests).toHaveLength(1);
      const again = await notifyProcessors(
        { database: h.database, mailer, outbound: LOCAL },
        { tenantId: h.tenant.id, requestId: erasureId, categories: ['contact', 'free_text', 'network'] },
      );
      expect(again.map((n) => [n.processor, n.status])).toEqual([
        ['GeoIP Co', 'pending'],
        ['Mailchimp', 'sent'],
        ['Zendesk', 'sent'],
      ]);
      expect(again.find((n) => n.processor === 'Zendesk')!.notification_id).toBe(refused.notification_id);
      expect(smtp.messages).toHaveLength(2);
      expect(receiver.requests).toHaveLength(2);
      expect(JSON.parse(receiver.requests[1]!.body).request_id).toBe(erasureId);
      // Neither channel carries the person's identifiers.
      const sent = JSON.stringify([
        receiver.requests.map((r) => r.body),
        smtp.messages.map((m) => m.mail.text),
      ]);
      expect(sent).not.toContain(customer.email);
      const pending = await call(
        'GET',
        `/api/v1/processors/${geo.id}/notifications?status=pending&request_id=${erasureId}`,
        h.keys.admin,
      );
      expect(pending.json().data).toEqual([
        expect.objectContaining({
          request_id: erasureId,
          instructions: 'Open a ticket at the GeoIP portal.',
        }),
      ]);
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
      // Categories come from the column classes: identifiers of people, then the personal classes.
      expect(classesOf(['conversations'])).toEqual([
        'identifier',
        'contact',
        'network',
        'location',
        'free_text',
      ]);
      expect(classesOf(['conversations'])).toEqual(
        expect.arrayContaining(['contact', 'network', 'location', 'free_text']),
      );
      expect(classesOf(['documents', 'document_chunks'])).toEqual([]);
      expect(categoriesOf(['messages'])).toEqual(['Identifiers', 'Communication content']);

      expect((await call('GET', '/api/v1/ropa', h.keys.analyst)).statusCode).toBe(403);
      expect((await call('GET', '/api/v1/ropa', h.keys.agent)).statusCode).toBe(403);
      expect((await call('GET', '/api/v1/ropa?format=xml', h.keys.admin)).statusCode).toBe(400);
      const ropa = await call('GET', '/api/v1/ropa', h.keys.manager);
      expect(ropa.statusCode, ropa.body).toBe(200);
      const record = ropa.json() as Ropa;
      expect(record).toMatchObject({ tenant_id: h.tenant.id, source: 'default' });
      expect(record.activities.map((a) => a.processing_activity)).toEqual([
        'Customer support conversations',
        'Conversation analytics and quality',
        'Revenue attribution',
        'Knowledge base for the AI assistant',
        'Consent management',
        'Account, team and billing administration',
        'Security and audit logging',
      ]);
      const support = record.activities[0]!;
      expect(Object.keys(support)).toEqual([
        'processing_activity',
        'legal_basis',
        'data_categories',
        'retention_period',
        'data_subjects',
        'recipients',
        'international_transfers',
        'automated_processing',
        'datasets',
      ]);
      expect(support.datasets).toEqual(['conversations', 'messages', 'customers']);
      expect(support.data_categories).toEqual([
        'Identifiers',
        'Contact information',
        'Technical data (IP address, browser)',
        'Location data',
        'Communication content',
      ]);
      // The retention period is the policies' own statements, in the activity's table order.
      const statements = new Map(
        (await effectiveRetention(h.database, h.tenant.id)).map((p) => [p.dataset, p.statement]),
      );
      expect(support.retention_period).toBe(
        ['conversations', 'messages', 'customers'].map((d) => statements.get(d)).join(' '),
      );
      expect(support.recipients).toEqual([
        'Customer support team',
        'GeoIP Co (processor, DE)',
        'Mailchimp (processor, US)',
        'Zendesk (processor, IE)',
      ]);
      // US is a transfer from a German controller; Ireland, in the EEA, is not.
      expect(support.international_transfers.countries).toEqual(['US']);
      expect(support.international_transfers.safeguards).toContain('Standard contractual clauses');
      expect(support.automated_processing).toMatchObject({ exists: true });
      const knowledge = record.activities[3]!;
      expect(knowledge).toMatchObject({
        data_categories: [],
        recipients: ['Customer support team'],
        international_transfers: { countries: [], safeguards: null },
      });
      // Revenue events hold only a customer id, but the activity also reads the customers' contact data.
      expect(record.activities[2]!.recipients).toEqual([
        'Marketing and finance',
        'Mailchimp (processor, US)',
        'Zendesk (processor, IE)',
      ]);

      // A retention override shows in the record at once, as its statement.
      await putRetention(
        h.database,
        h.tenant.id,
        [{ dataset: 'conversations', keep: 'P2Y', after: 'last_activity', action: 'delete' }],
        'test',
      );
      const csv = await call('GET', '/api/v1/ropa?format=csv', h.keys.admin);
      expect(csv.statusCode, csv.body).toBe(200);
      expect(csv.headers['content-type']).toContain('text/csv');
      expect(csv.headers['content-disposition']).toContain('attachment');
      const rows = parse(csv.body, { columns: true }) as Record<string, string>[];
      expect(rows).toHaveLength(7);
      const row = rows.find((r) => r.processing_activity === 'Customer support conversations')!;
      expect(row.retention_period).toContain(
        'Conversations are kept for 2 years after their last activity, then deleted, unless a legal hold applies.',
      );
      expect(row.retention_period).not.toBe(support.retention_period);
      expect(row.data_categories!.split('; ')).toEqual(support.data_categories);
      expect(row.recipients!.split('; ')).toEqual(support.recipients);
      expect(row.international_transfers_countries).toBe('US');
      expect(row.automated_processing_exists).toBe('true');
      expect(row.datasets).toBe('conversations; messages; customers');
      await putRetention(h.database, h.tenant.id, [], 'test');
      expect((await call('GET', '/api/v1/ropa', h.keys.admin)).json().activities[0].retention_period).toBe(
        support.retention_period,
      );

      // Declared activities replace the defaults; their categories are still derived.
      const declared = {
        activities: [
          {
            processing_activity: 'Chat support, "live"',
            legal_basis: 'Contract (Art. 6(1)(b))',
            datasets: ['conversations'],
            data_subjects: ['Visitors'],
            recipients: ['Support, 1st line'],
            international_transfers: { countries: ['CH'], safeguards: 'Adequacy decision' },
          },
          {
            processing_activity: '=HYPERLINK("https://evil.example")',
            legal_basis: 'Legitimate interests',
            datasets: ['revenue_events'],
            data_subjects: ['Buyers'],
          },
        ],
      };
      expect((await call('PUT', '/api/v1/ropa/activities', h.keys.manager, declared)).statusCode).toBe(403);
      const put = await call('PUT', '/api/v1/ropa/activities', h.keys.admin, declared);
      expect(put.statusCode, put.body).toBe(200);
      const mine = put.json() as Ropa;
      expect(mine.source).toBe('declared');
      expect(mine.activities[0]).toMatchObject({
        processing_activity: 'Chat support, "live"',
        data_categories: categoriesOf(['conversations']),
        recipients: [
          'Support, 1st line',
          'GeoIP Co (processor, DE)',
          'Mailchimp (processor, US)',
          'Zendesk (processor, IE)',
        ],
        international_transfers: { countries: ['CH', 'US'], safeguards: 'Adequacy decision' },
        automated_processing: { exists: false, description: null, human_review: null },
      });
      expect(mine.activities[1]!.data_categories).toEqual(['Identifiers']);
      // JSON and CSV read back; CSV quotes commas and quotes, and guards formulas.
      const text = ropaCsv(mine);
      const back = parse(text, { columns: true }) as Record<string, string>[];
      expect(back.map((r) => r.processing_activity)).toEqual([
        'Chat support, "live"',
        `'=HYPERLINK("https://evil.example")`,
      ]);
      expect(text).toContain('"Chat support, ""live"""');
      expect(back[0]!.recipients).toBe(
        'Support, 1st line; GeoIP Co (processor, DE); Mailchimp (processor, US); Zendesk (processor, IE)',
      );
      expect(JSON.parse(ropaJson(mine))).toEqual(mine);
      for (const [activities, field] of [
        [
          [{ processing_activity: 'x', legal_basis: 'y', datasets: ['nope'], data_subjects: ['z'] }],
          'activities[0].datasets[0]',
        ],
        [
          [{ processing_activity: ' ', legal_basis: 'y', datasets: ['messages'], data_subjects: ['z'] }],
          'activities[0].processing_activity',
        ],
        [
          [
            {
              processing_activity: 'x',
              legal_basis: 'y',
              datasets: ['messages'],
              data_subjects: ['z'],
              automated_processing: { exists: true },
            },
          ],
          'activities[0].automated_processing.human_review',
        ],
      ] as const) {
        const bad = await call('PUT', '/api/v1/ropa/activities', h.keys.admin, { activities });
        expect(bad.statusCode, JSON.stringify(activities)).toBe(400);
        expect(bad.json().errors[0].parameter).toBe(field);
      }
      expect((await call('GET', '/api/v1/ropa', h.keys.admin)).json().source).toBe('declared');
      const reset = await call('PUT', '/api/v1/ropa/activities', h.keys.admin, { activities: [] });
      expect(reset.json().source).toBe('default');
      expect((await call('GET', '/api/v1/ropa', h.keys.admin)).json().activities).toHaveLength(7);
      // Another tenant's record knows nothing of these processors.
      const other = (await call('GET', '/api/v1/ropa', h.otherKeys.admin)).json() as Ropa;
      expect(other.activities[0]!.recipients).toEqual(['Customer support team']);
      expect((await tenantProcessors(h.database, h.other.id)) as Processor[]).toEqual([]);
    });
  });
}
