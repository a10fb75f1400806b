import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { until } from './support/wait.ts';

const run = promisify(execFile);

interface Subject {
  id: string;
  email: string;
  name: string;
}

/**
 * The rows the reference schema links to a customer, written out by hand from the schema
 * (not from the data map the code reads): their customer row, their conversations (by id,
 * or by the email they typed when not identified), those conversations' messages, and their
 * consent records.
 */
async function expectedRows(h: ExportHarness, s: Subject) {
  const q = async (statement: string) =>
    (await sql<{ id: string }>`${sql.raw(statement)}`.execute(h.database.db)).rows
      .map((r) => String(r.id))
      .sort();
  const t = h.tenant.id;
  const conversations = `SELECT id FROM conversations WHERE tenant_id = '${t}' AND (customer_id = '${s.id}' OR lower(customer_email) = '${s.email.toLowerCase()}')`;
  return {
    customers: await q(`SELECT id FROM customers WHERE tenant_id = '${t}' AND id = '${s.id}'`),
    conversations: await q(conversations),
    messages: await q(
      `SELECT id FROM messages WHERE tenant_id = '${t}' AND conversation_id IN (${conversations})`,
    ),
    consent_records: await q(
      `SELECT id FROM consent_records WHERE tenant_id = '${t}' AND customer_id = '${s.id}'`,
    ),
  };
}

for (const dialect of DIALECTS) {
  describe(`access package on ${dialect}`, () => {
    let h: ExportHarness;
    let dir: string;
    let subject: Subject;
    let others: string[];

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 30 });
      dir = await mkdtemp(path.join(tmpdir(), 'ferry-dsar-access-'));
      const rows = await sql<Subject>`
        SELECT c.id, c.email, c.name FROM customers c
        WHERE c.tenant_id = ${h.tenant.id} AND c.email IS NOT NULL
          AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = c.id)
        ORDER BY c.id`.execute(h.database.db);
      subject = rows.rows[0]!;
      others = rows.rows.slice(1).map((r) => r.email);
      expect(others.length).toBeGreaterThan(0);
      // A conversation the subject had before they were identified: only their email links it.
      const site = await h.database.db
        .selectFrom('sites')
        .select('id')
        .where('tenant_id', '=', h.tenant.id)
        .executeTakeFirstOrThrow();
      const conversation = randomUUID();
      await h.database.db
        .insertInto('conversations')
        .values({
          id: conversation,
          tenant_id: h.tenant.id,
          site_id: site.id,
          session_id: `s-${conversation.slice(0, 8)}`,
          start_timestamp: '2026-09-03 10:00:00.123456+00',
          customer_email: subject.email.toUpperCase(),
          customer_name: subject.name,
          status: 'resolved',
          language: 'pt-BR',
        } as never)
        .execute();
      // A purchase that followed one of their identified conversations.
      const theirs = await h.database.db
        .selectFrom('conversations')
        .select(['id'])
        .where('customer_id', '=', subject.id)
        .orderBy('start_timestamp')
        .executeTakeFirstOrThrow();
      await sql`INSERT INTO revenue_events (id, tenant_id, customer_id, conversation_ids, amount, currency, transaction_type, product_category, customer_segment, occurred_at)
        SELECT ${randomUUID()}, tenant_id, customer_id, ARRAY[id], 249.50, 'EUR', 'purchase', 'bundles', 'consumer', start_timestamp + interval '2 hours 0.000123 seconds'
        FROM conversations WHERE id = ${theirs.id}`.execute(h.database.db);
      // An agent quotes another customer's address in the subject's conversation.
      await h.database.db
        .insertInto('messages')
        .values({
          id: randomUUID(),
          tenant_id: h.tenant.id,
          conversation_id: conversation,
          created_at: '2026-09-03 10:01:00.654321+00',
          sender_type: 'human',
          content: `Your order is on its way 🚚 — "we also wrote to ${others[0]}" and ${subject.email} 🙂`,
          message_length: 80,
        } as never)
        .execute();
    }, 180_000);

    afterAll(async () => {
      await h?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("holds every row the schema links to the subject, as JSON and CSV, and nothing of anyone else's", async () => {
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/dsar',
        headers: bearer(h.keys.manager),
        payload: {
          type: 'access',
          regulation: 'gdpr',
          source: 'api',
          subject: { email: ` ${subject.email.toUpperCase()} ` },
        },
      });
      expect(created.statusCode, created.body).toBe(201);
      const id = created.json().id as string;
      const verified = await h.app.inject({
        method: 'POST',
        url: `/api/v1/dsar/${id}/verify`,
        headers: bearer(h.keys.manager),
        payload: { reason: 'Answered the security question on the account' },
      });
      expect(verified.statusCode, verified.body).toBe(200);
      const done = await until(
        'the access request to finish',
        async () => {
          const res = await h.app.inject({ url: `/api/v1/dsar/${id}`, headers: bearer(h.keys.admin) });
          const body = res.json();
          return ['completed', 'failed'].includes(body.status) ? body : undefined;
        },
        { timeoutMs: 120_000 },
      );
      expect(done.error).toBeNull();
      expect(done.status).toBe('completed');
      expect(done.outcome).toBe('package_ready');
      expect(done.subject).toBeNull();
      const exportId = done.result.steps.package.export_id as string;

      const link = await h.app.inject({
        url: `/api/v1/exports/${exportId}/download`,
        headers: bearer(h.keys.admin),
      });
      expect(link.statusCode, link.body).toBe(200);
      const url = link.json().url as string;
      const file = await h.app.inject({ url: url.slice(url.indexOf('/api/')) });
      expect(file.statusCode).toBe(200);
      expect(sha256(file.rawPayload)).toBe(done.result.steps.package.sha256);
      const zip = path.join(dir, `${id}.zip`);
      await writeFile(zip, file.rawPayload);
      const names = (await run('unzip', ['-Z1', zip])).stdout.trim().split('\n');
      const entry = (suffix: string) => names.find((n) => n.endsWith(suffix));
      for (const needed of [
        'index.html',
        'metadata.json',
        'checksums.sha256',
        'data_dictionary.md',
        'datapackage.json',
      ])
        expect(entry(`/${needed}`), needed).toBeDefined();
      expect(names[0]).toMatch(/^personal-data-\d{4}-\d{2}-\d{2}\//);
      // The checksums the package lists are the bytes it holds.
      await run('bash', [
        '-c',
        `cd "${dir}" && rm -rf x && mkdir x && cd x && unzip -q ../${id}.zip && cd personal-data-* && sha256sum -c --quiet checksums.sha256`,
      ]);
      const read = async (name: string) =>
        (await run('unzip', ['-p', zip, name], { maxBuffer: 64 << 20 })).stdout;
      const jsonRows = async (suffix: string) => {
        const name = entry(suffix);
        expect(name, suffix).toBeDefined();
        const parsed = JSON.parse(await read(name!)) as
          | { data?: Record<string, unknown>[] }
          | Record<string, unknown>[];
        return Array.isArray(parsed) ? parsed : (parsed.data ?? []);
      };
      const expected = await expectedRows(h, subject);
      const ids = (rows: Record<string, unknown>[], key: string) => rows.map((r) => String(r[key])).sort();
      expect(ids(await jsonRows('/customers.json'), 'customer_id')).toEqual(expected.customers);
      expect(ids(await jsonRows('/messages.json'), 'message_id')).toEqual(expected.messages);
      expect(ids(await jsonRows('/consent_records.json'), 'consent_id')).toEqual(expected.consent_records);
      // Their purchases as the revenue report credits them, and no one else's.
      const revenue = await jsonRows('/attribution_last_touch.json');
      const expectedRevenue = await sql<{ id: string }>`
        SELECT id FROM revenue_events WHERE tenant_id = ${h.tenant.id} AND customer_id = ${subject.id} AND cardinality(conversation_ids) > 0`.execute(
        h.database.db,
      );
      expect(revenue.length).toBe(expectedRevenue.rows.length);
      expect(revenue.every((r) => r.customer_id === subject.id)).toBe(true);
      const conversationFiles = names.filter((n) => /\/conversations\/[0-9a-f-]{36}\.json$/.test(n));
      expect(conversationFiles.map((n) => path.basename(n, '.json')).sort()).toEqual(expected.conversations);
      // Both forms: CSV next to the JSON for the tabular datasets.
      const csv = await read(entry('/messages.csv')!);
      expect(csv.trim().split('\n').length).toBeGreaterThan(expected.messages.length);
      // Nobody else: no other customer's address anywhere in the package, not even quoted.
      const everything = (await run('bash', ['-c', `unzip -p "${zip}"`], { maxBuffer: 256 << 20 })).stdout;
      for (const email of others) expect(everything.toLowerCase()).not.toContain(email.toLowerCase());
      expect(everything).toContain('[email]');
      expect(everything).toContain(subject.email);
      const metadata = JSON.parse(await read(entry('/metadata.json')!));
      expect(metadata.data_subject_request).toBe(id);
    });
  });
}
