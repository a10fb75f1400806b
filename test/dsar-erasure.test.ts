import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import { jobsSchema } from '../src/jobs/queue.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { createEndpoint } from '../src/webhooks/endpoints.ts';
import { emitEvent } from '../src/webhooks/emit.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { until } from './support/wait.ts';

const exec = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;

const EMAIL = 'Zoe.OHara+DSAR@Example.com';
const NAME = "Zoë O'Hara-Lindqvist";
const PHONE = '+4915123456789';
/** How the identifiers appear in text: any case, national and spaced phone numbers. */
const NEEDLES = [EMAIL.toLowerCase(), NAME.toLowerCase(), PHONE, '0151 2345 6789', '+49 151 23456789'];

/** Every row of every table of the given schemas, as text, with the tables that hold a needle. */
async function findInDatabase(h: ExportHarness, schemas: string[]): Promise<string[]> {
  const found: string[] = [];
  const tables = await sql<{ s: string; t: string }>`
    SELECT table_schema AS s, table_name AS t FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND table_schema = ANY (${schemas}::text[])`.execute(h.database.db);
  for (const { s, t } of tables.rows) {
    const rows = await sql<{ r: string }>`SELECT x::text AS r FROM ${sql.id(s, t)} x`.execute(h.database.db);
    for (const { r } of rows.rows) {
      const text = r.toLowerCase();
      for (const needle of NEEDLES)
        if (text.includes(needle.toLowerCase())) found.push(`${s}.${t}: ${needle}`);
    }
  }
  return found;
}

/** Every object of the store, read back through the store (which decrypts at rest). */
async function findInStore(h: ExportHarness): Promise<string[]> {
  const found: string[] = [];
  for await (const object of h.store.list('')) {
    const chunks: Buffer[] = [];
    for await (const chunk of await h.store.get(object.key)) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8').toLowerCase();
    for (const needle of NEEDLES)
      if (text.includes(needle.toLowerCase())) found.push(`${object.key}: ${needle}`);
  }
  return found;
}

for (const dialect of DIALECTS) {
  describe(`erasure on ${dialect}`, () => {
    let h: ExportHarness;
    let customer: string;
    let theirConversations: string[];
    let exportId: string;

    beforeAll(async () => {
      h = await exportHarness(dialect, {
        workers: true,
        conversations: 20,
        env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' },
      });
      const db = h.database.db;
      const t = h.tenant.id;
      // The subject: a seeded customer with conversations, given real-shaped identifiers.
      const row = await sql<{ id: string }>`
        SELECT c.id FROM customers c WHERE c.tenant_id = ${t}
          AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = c.id)
        ORDER BY c.id LIMIT 1`.execute(db);
      customer = row.rows[0]?.id ?? '';
      expect(customer).not.toBe('');
      await db
        .updateTable('customers')
        .set({ email: EMAIL, name: NAME, phone: PHONE })
        .where('id', '=', customer)
        .execute();
      // A purchase kept for bookkeeping.
      await sql`INSERT INTO revenue_events (id, tenant_id, customer_id, amount, currency, transaction_type, product_category, customer_segment, occurred_at)
        VALUES (${randomUUID()}, ${t}, ${customer}, 129.90, 'EUR', 'purchase', 'accessories', 'consumer', '2026-09-04 12:00:00.000001+00')`.execute(
        db,
      );
      await db
        .insertInto('consent_records')
        .values({
          id: randomUUID(),
          tenant_id: t,
          customer_id: customer,
          purpose: 'marketing',
          granted: true,
          source: 'widget banner',
          ip_address: '203.0.113.77',
          recorded_at: '2026-09-02 08:00:00.123456+00',
        })
        .execute();
      // Denormalized copies and free text in their own conversations.
      await sql`UPDATE conversations SET customer_email = ${EMAIL.toUpperCase()}, customer_name = ${NAME},
          internal_notes = ${`Called ${NAME} back on 0151 2345 6789;\nsays "fine" 👍`},
          satisfaction_feedback = ${`write to ${EMAIL} please`}
        WHERE customer_id = ${customer}`.execute(db);
      theirConversations = (
        await db.selectFrom('conversations').select('id').where('customer_id', '=', customer).execute()
      ).map((c) => c.id);
      await sql`UPDATE messages SET content = content || ${` — reach me at +49 151 23456789 or ${EMAIL}`}
        WHERE conversation_id = ${theirConversations[0]!}`.execute(db);
      // Another person's conversation that mentions them.
      const other = await sql<{ id: string }>`
        SELECT m.id FROM messages m JOIN conversations v ON v.id = m.conversation_id
        WHERE v.tenant_id = ${t} AND (v.customer_id IS NULL OR v.customer_id <> ${customer}) ORDER BY m.id LIMIT 1`.execute(
        db,
      );
      await sql`UPDATE messages SET content = ${`My friend ${NAME} (${EMAIL.toLowerCase()}) recommended you ✨`}
        WHERE id = ${other.rows[0]!.id}`.execute(db);
      // The knowledge base quotes them, and a retrieval chunk with its vector holds the quote.
      const doc = await db
        .selectFrom('documents')
        .select('id')
        .where('tenant_id', '=', t)
        .executeTakeFirstOrThrow();
      await sql`UPDATE documents SET content = content || ${`\n\n> "Great help" — ${NAME}, ${EMAIL}`} WHERE id = ${doc.id}`.execute(
        db,
      );
      await db
        .insertInto('document_chunks')
        .values({
          id: randomUUID(),
          tenant_id: t,
          document_id: doc.id,
          chunk_index: 999,
          content: `Testimonial from ${NAME} <${EMAIL}>`,
          embedding: sql`ARRAY[0.12, -0.5, 0.33]::real[]`,
        } as never)
        .execute();
      // The audit trail, a webhook message and its attempt, the live-stream outbox.
      await recordAudit(h.database, {
        tenantId: t,
        actor: 'system',
        action: 'export.failed',
        success: false,
        error: `delivery to ${EMAIL} bounced`,
        userAgent: `Mozilla/5.0 (${NAME})`,
      });
      await createEndpoint(
        h.database,
        t,
        { url: 'http://127.0.0.1:9/hooks', events: ['export.completed'] },
        { secrets: h.secrets, outbound: outboundPolicy(['127.0.0.1']) },
      );
      const [message] = await emitEvent(h.database, t, 'export.completed', {
        export_id: randomUUID(),
        data: { note: `for ${EMAIL}`, name: NAME },
      });
      await sql`INSERT INTO webhook_attempts (id, message_id, attempt, started_at, status_code, latency_ms, outcome, error, response_excerpt)
        VALUES (${randomUUID()}, ${message!.id}, 1, now(), 500, 12, 'failure', 'HTTP 500', ${`unknown recipient ${EMAIL}`})`.execute(
        db,
      );
      await sql`INSERT INTO stream_events (tenant_id, conversation_id, site_id, event, data)
        SELECT tenant_id, id, site_id, 'conversation_updated', ${JSON.stringify({ customer_email: EMAIL })}::jsonb
        FROM conversations WHERE id = ${theirConversations[0]!}`.execute(db);
      // A stored export file that holds them.
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
        payload: { datasets: ['customers'], format: 'csv', pii: 'full' },
      });
      expect(created.statusCode, created.body).toBe(202);
      exportId = created.json().id;
      await h.waitForExport(exportId);
    }, 240_000);

    afterAll(async () => {
      await h?.close();
    });

    it('finds nothing of the subject in any table or stored file afterwards; the receipt verifies and counts what was removed', {
      timeout: 240_000,
    }, async () => {
      const schemas = [h.config.databaseSchema ?? 'public', jobsSchema(h.config)];
      const before = await findInDatabase(h, schemas);
      for (const place of [
        'customers',
        'conversations',
        'messages',
        'documents',
        'document_chunks',
        'audit_events',
        'webhook_messages',
        'stream_events',
      ])
        expect(
          before.some((f) => f.includes(`.${place}:`)),
          place,
        ).toBe(true);
      expect((await findInStore(h)).length).toBeGreaterThan(0);
      const t = h.tenant.id;
      const count = async (statement: string) =>
        Number((await sql<{ n: number }>`${sql.raw(statement)}`.execute(h.database.db)).rows[0]!.n);
      const conversationList = theirConversations.map((c) => `'${c}'`).join(', ');
      const expected = {
        consents: await count(`SELECT count(*) AS n FROM consent_records WHERE customer_id = '${customer}'`),
        conversations: await count(
          `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${t}' AND (customer_id = '${customer}' OR lower(customer_email) = '${EMAIL.toLowerCase()}')`,
        ),
        messages: await count(
          `SELECT count(*) AS n FROM messages WHERE conversation_id IN (${conversationList})`,
        ),
        mentions: await count(
          `SELECT count(*) AS n FROM messages WHERE tenant_id = '${t}' AND conversation_id NOT IN (${conversationList}) AND (lower(content) LIKE '%${EMAIL.toLowerCase()}%' OR content LIKE '%O''Hara-Lindqvist%')`,
        ),
        revenue: await count(`SELECT count(*) AS n FROM revenue_events WHERE customer_id = '${customer}'`),
      };

      const post = (url: string, payload: object = {}) =>
        h.app.inject({ method: 'POST', url, headers: bearer(h.keys.admin), payload });
      const created = await post('/api/v1/dsar', {
        type: 'erasure',
        regulation: 'gdpr',
        source: 'email',
        subject: { email: EMAIL },
      });
      expect(created.statusCode, created.body).toBe(201);
      const id = created.json().id as string;
      const plan = await post(`/api/v1/dsar/${id}/plan`);
      expect(plan.statusCode, plan.body).toBe(200);
      const planned = plan.json();
      expect(planned.dry_run).toBe(true);
      // The plan changed nothing (the open request itself names its subject until it closes).
      expect((await findInDatabase(h, schemas)).filter((f) => !f.includes('.dsar_requests:'))).toEqual(
        before,
      );
      expect(
        (await post(`/api/v1/dsar/${id}/verify`, { reason: 'Signed request received by post' })).statusCode,
      ).toBe(200);
      expect((await post(`/api/v1/dsar/${id}/approve`)).statusCode).toBe(200);
      const done = await until<{ status: string; error: string | null }>(
        'the erasure to finish',
        async () => {
          const res = await h.app.inject({ url: `/api/v1/dsar/${id}`, headers: bearer(h.keys.admin) });
          return ['completed', 'failed'].includes(res.json().status) ? res.json() : undefined;
        },
        { timeoutMs: 120_000 },
      );
      expect(done.error).toBeNull();
      expect(done.status).toBe('completed');

      // Nothing of them is left anywhere Ferry keeps data.
      expect(await findInDatabase(h, schemas)).toEqual([]);
      expect(await findInStore(h)).toEqual([]);

      // The receipt: its counts are what was removed, and it verifies with Ferry and without.
      const receiptRes = await h.app.inject({
        url: `/api/v1/dsar/${id}/receipt`,
        headers: bearer(h.keys.admin),
      });
      expect(receiptRes.statusCode, receiptRes.body).toBe(200);
      const document = receiptRes.json();
      const receipt = document.receipt;
      expect(JSON.stringify(document)).not.toContain(EMAIL.toLowerCase());
      const store = (dataset: string) =>
        receipt.stores.find((s: { store: string; dataset: string }) => s.dataset === dataset) ?? {};
      expect(store('consent_records').deleted).toBe(expected.consents);
      expect(store('customers').deleted).toBe(1);
      expect(store('conversations').anonymized).toBe(expected.conversations);
      expect(store('messages').anonymized).toBe(expected.messages);
      expect(store('messages').scrubbed).toBe(expected.mentions);
      expect(store('document_chunks').deleted).toBe(1);
      expect(store('documents').scrubbed).toBe(1);
      expect(store('revenue_events')).toMatchObject({ anonymized: expected.revenue, retained: 0 });
      // The purchase stays for bookkeeping, without its customer.
      const kept = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM revenue_events WHERE tenant_id = ${t} AND customer_id IS NULL AND amount = 129.90`.execute(
        h.database.db,
      );
      expect(Number(kept.rows[0]!.n)).toBe(1);
      expect(receipt.files.deleted.map((f: { export_id: string }) => f.export_id)).toContain(exportId);
      // The dry run said the same.
      for (const s of receipt.stores) {
        const p = planned.stores.find(
          (x: { dataset: string; store: string }) => x.dataset === s.dataset && x.store === s.store,
        );
        expect(p, s.dataset).toMatchObject({
          deleted: s.deleted,
          anonymized: s.anonymized,
          scrubbed: s.scrubbed,
        });
      }
      const exported = await h.app.inject({
        url: `/api/v1/exports/${exportId}`,
        headers: bearer(h.keys.admin),
      });
      expect(exported.json().status).toBe('expired');

      const work = mkdtempSync(path.join(tmpdir(), 'ferry-erasure-receipt-'));
      writeFileSync(path.join(work, 'receipt.json'), JSON.stringify(document, null, 2));
      const keys = await h.app.inject({ url: '/.well-known/ferry-receipt-keys.json' });
      writeFileSync(path.join(work, 'keys.json'), keys.body);
      const verified = await exec(
        path.join(REPO, 'node_modules/.bin/node'),
        [path.join(REPO, 'bin/ferry.js'), 'receipts', 'verify', 'receipt.json', '--keys', 'keys.json'],
        { cwd: work, env: { ...process.env, FERRY_DATA_DIR: work, FERRY_DEMO: 'off' } },
      );
      expect(verified.stdout).toBe(
        `valid: receipt ${receipt.receipt_id} signed by ${document.signature.kid}\n`,
      );
      // Without Ferry: the documented openssl steps.
      const doc = readFileSync(path.join(REPO, 'docs/receipts.md'), 'utf8');
      const section = doc.slice(doc.indexOf('\n## Verify without Ferry\n'));
      const shell = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
      const [, split, verifyStep] = shell as [string, string, string];
      await exec('bash', ['-e', '-c', split], { cwd: work });
      const openssl = await exec('bash', ['-e', '-c', verifyStep], { cwd: work });
      expect(openssl.stdout).toBe('Signature Verified Successfully\n');
    });
  });
}
