import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authDb } from '../src/auth/tables.ts';
import { executeErasure, planErasure } from '../src/privacy/erasure.ts';
import { rectify } from '../src/privacy/rectification.ts';
import { normalizeIdentifiers, resolveSubject } from '../src/privacy/subject.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { until } from './support/wait.ts';

const SECRET = 'dsar-subject-test-secret-0123456789abcdef';

interface Customer {
  id: string;
  email: string;
  name: string;
}

for (const dialect of DIALECTS) {
  describe(`finding, correcting and erasing a subject on ${dialect}`, () => {
    let h: ExportHarness;
    let customers: Customer[];

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 24 });
      customers = (
        await sql<Customer>`
          SELECT c.id, c.email, c.name FROM customers c
          WHERE c.tenant_id = ${h.tenant.id} AND c.email IS NOT NULL
            AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = c.id)
          ORDER BY c.id`.execute(h.database.db)
      ).rows;
      expect(customers.length).toBeGreaterThanOrEqual(4);
    }, 180_000);

    afterAll(async () => {
      await h?.close();
    });

    it('normalizes identifiers and refuses what names no one', () => {
      expect(
        normalizeIdentifiers({ email: '  Ana.Souza@Example.COM ', phone: '+49 (151) 234-56789' }),
      ).toEqual({
        email: 'ana.souza@example.com',
        phone: '+4915123456789',
      });
      expect(() => normalizeIdentifiers({})).toThrow(/names no one/);
      expect(() => normalizeIdentifiers({ phone: '0151 23456789' })).toThrow(/international/);
      expect(() => normalizeIdentifiers({ customer_id: 'robert"); drop table' })).toThrow(/uuid/);
    });

    it('resolves by email in any case, by phone in any writing and by id, and says how each table matched', async () => {
      const [a] = customers as [Customer];
      await h.database.db
        .updateTable('customers')
        .set({ phone: '+4915199887766' })
        .where('id', '=', a.id)
        .execute();
      // Someone else's message mentions them.
      const other = await sql<{ id: string }>`
        SELECT m.id FROM messages m JOIN conversations v ON v.id = m.conversation_id
        WHERE v.tenant_id = ${h.tenant.id} AND (v.customer_id IS NULL OR v.customer_id <> ${a.id}) ORDER BY m.id LIMIT 1`.execute(
        h.database.db,
      );
      await sql`UPDATE messages SET content = ${`ask ${a.email.toUpperCase()} about it`} WHERE id = ${other.rows[0]!.id}`.execute(
        h.database.db,
      );
      const byEmail = await resolveSubject(h.database, h.tenant.id, { email: a.email.toUpperCase() });
      const byPhone = await resolveSubject(
        h.database,
        h.tenant.id,
        normalizeIdentifiers({ phone: '+49 151 9988 7766' }),
      );
      const byId = await resolveSubject(h.database, h.tenant.id, { customer_id: a.id });
      for (const subject of [byEmail, byPhone, byId]) {
        expect(subject.customerIds).toEqual([a.id]);
        expect(subject.emails).toContain(a.email.toLowerCase());
        expect(subject.phones).toContain('+4915199887766');
      }
      const table = (name: string) => byEmail.matches.find((m) => m.table === name);
      expect(table('customers')?.matched_by).toEqual(expect.arrayContaining(['link:id', 'link:email']));
      expect(table('conversations')?.matched_by).toContain('link:customer_id');
      expect(table('messages')?.matched_by).toEqual(
        expect.arrayContaining(['link:conversation_id→conversations', 'free_text:messages.content']),
      );
      const ownMessages = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM messages m JOIN conversations v ON v.id = m.conversation_id
        WHERE v.customer_id = ${a.id} OR lower(v.customer_email) = ${a.email.toLowerCase()}`.execute(
        h.database.db,
      );
      expect(table('messages')?.rows).toBe(Number(ownMessages.rows[0]!.n) + 1);
      // Someone unknown resolves to nothing, without error.
      const nobody = await resolveSubject(h.database, h.tenant.id, {
        email: `nobody-${randomUUID()}@example.com`,
      });
      expect(nobody.customerIds).toEqual([]);
      expect(nobody.matches).toEqual([]);
    });

    it('rectifies the subject everywhere the map stores them, with hashed before and after in the audit trail', async () => {
      const b = customers[1]!;
      const subject = await resolveSubject(h.database, h.tenant.id, { customer_id: b.id });
      const requestId = randomUUID();
      const outcome = await rectify(
        h.database,
        h.tenant.id,
        subject,
        { email: 'new.address+ü@example.org', name: 'Bea "B." Nakamura 🌸', language: 'ja' },
        { secretKey: SECRET, requestId },
      );
      const customer = await h.database.db
        .selectFrom('customers')
        .selectAll()
        .where('id', '=', b.id)
        .executeTakeFirstOrThrow();
      expect(customer).toMatchObject({ email: 'new.address+ü@example.org', name: 'Bea "B." Nakamura 🌸' });
      const copies = await h.database.db
        .selectFrom('conversations')
        .select(['customer_email', 'customer_name'])
        .where('customer_id', '=', b.id)
        .execute();
      expect(copies.length).toBeGreaterThan(0);
      for (const c of copies)
        expect(c).toEqual({
          customer_email: 'new.address+ü@example.org',
          customer_name: 'Bea "B." Nakamura 🌸',
        });
      expect(outcome.tables.map((t) => t.table)).toEqual(
        expect.arrayContaining(['customers', 'conversations']),
      );
      expect(outcome.not_stored).toEqual(['language']);
      const audit = await authDb(h.database)
        .selectFrom('audit_events')
        .select(['action', 'error'])
        .where('target_id', '=', requestId)
        .executeTakeFirstOrThrow();
      expect(audit.action).toBe('dsar.rectified');
      expect(audit.error).toContain('hmac:');
      expect(audit.error).not.toContain(b.email);
      expect(audit.error).not.toContain('new.address');
    });

    it('an erasure interrupted between stores resumes with the same totals as its plan, erasing nothing twice', async () => {
      const c = customers[2]!;
      const subject = await resolveSubject(h.database, h.tenant.id, { email: c.email });
      const plan = await planErasure(h.database, h.tenant.id, subject);
      const requestId = randomUUID();
      const deps = {
        database: h.database,
        store: h.store,
        secretKey: SECRET,
        between: async (store: string) => {
          if (store === 'database') throw new Error('worker lost between stores');
        },
      };
      await expect(executeErasure(deps, { tenantId: h.tenant.id, requestId, subject })).rejects.toThrow(
        /worker lost/,
      );
      // The database part is done and recorded: the customer is already gone.
      const gone = await h.database.db
        .selectFrom('customers')
        .select('id')
        .where('id', '=', c.id)
        .executeTakeFirst();
      expect(gone).toBeUndefined();
      const resumed = await executeErasure(
        { ...deps, between: undefined },
        { tenantId: h.tenant.id, requestId, subject },
      );
      const again = await executeErasure(
        { ...deps, between: undefined },
        { tenantId: h.tenant.id, requestId, subject },
      );
      expect(again).toEqual(resumed);
      const database = resumed.stores.filter((s) => s.store === 'database');
      expect(database).toEqual(plan.stores.filter((s) => s.store === 'database'));
      expect(database.find((s) => s.dataset === 'conversations')?.anonymized).toBeGreaterThan(0);
      const ledger = await sql<{
        n: number;
      }>`SELECT count(*)::int AS n FROM erasure_ledger WHERE request_id = ${requestId}`.execute(
        h.database.db,
      );
      expect(Number(ledger.rows[0]!.n)).toBe(1);
    });

    it('restriction and opt-out withdraw consent on every customer record of the subject, with a receipt', async () => {
      const d = customers[3]!;
      for (const [type, purposes] of [
        ['restriction', ['ai_training', 'analytics', 'marketing']],
        ['opt_out', ['ai_training', 'marketing']],
      ] as const) {
        const created = await h.app.inject({
          method: 'POST',
          url: '/api/v1/dsar',
          headers: bearer(h.keys.admin),
          payload: {
            type,
            regulation: type === 'opt_out' ? 'ccpa' : 'gdpr',
            source: 'api',
            subject: { customer_id: d.id },
          },
        });
        expect(created.statusCode, created.body).toBe(201);
        const id = created.json().id;
        await h.app.inject({
          method: 'POST',
          url: `/api/v1/dsar/${id}/verify`,
          headers: bearer(h.keys.admin),
          payload: { reason: 'Request came from the signed-in account' },
        });
        const done = await until<{ status: string; receipt_id: string | null }>(
          `the ${type} to finish`,
          async () => {
            const res = await h.app.inject({ url: `/api/v1/dsar/${id}`, headers: bearer(h.keys.admin) });
            return ['completed', 'failed'].includes(res.json().status) ? res.json() : undefined;
          },
        );
        expect(done).toMatchObject({
          status: 'completed',
          outcome: type === 'opt_out' ? 'opted_out' : 'restricted',
        });
        expect(done.receipt_id).not.toBeNull();
        const withdrawn = await h.database.db
          .selectFrom('consent_records')
          .select('purpose')
          .where('customer_id', '=', d.id)
          .where('source', '=', `dsar:${type}`)
          .where('granted', '=', false)
          .execute();
        expect(withdrawn.map((w) => w.purpose).sort()).toEqual([...purposes]);
      }
    });
  });
}
