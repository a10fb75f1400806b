import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateSecretKey } from '../src/lib/secret-box.ts';
import { closeAccount, purgeAccount } from '../src/privacy/closure.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import { createHold } from '../src/privacy/holds.ts';
import { receiptJwks } from '../src/privacy/receipt-keys.ts';
import { verifyReceipt } from '../src/privacy/receipts.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

/** Tables of the schema with rows that contain the text, with how many. */
async function rowsMentioning(h: ExportHarness, needle: string): Promise<Record<string, number>> {
  const schema = h.config.databaseSchema ?? 'public';
  const tables = await sql<{ t: string }>`
    SELECT table_name AS t FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND table_schema = ${schema}`.execute(h.database.db);
  const found: Record<string, number> = {};
  for (const { t } of tables.rows) {
    const r = await sql<{ n: number | string }>`
      SELECT count(*) AS n FROM ${sql.id(schema, t)} x WHERE strpos(x::text, ${needle}) > 0`.execute(
      h.database.db,
    );
    const n = Number(r.rows[0]?.n ?? 0);
    if (n) found[t] = n;
  }
  return found;
}

async function objectsMentioning(h: ExportHarness, needle: string): Promise<string[]> {
  const found: string[] = [];
  for await (const object of h.store.list('')) {
    const chunks: Buffer[] = [];
    for await (const chunk of await h.store.get(object.key)) chunks.push(chunk as Buffer);
    if (object.key.includes(needle) || Buffer.concat(chunks).includes(needle)) found.push(object.key);
  }
  return found;
}

const count = async (h: ExportHarness, statement: string) =>
  Number((await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(h.database.db)).rows[0]!.n);

for (const dialect of DIALECTS) {
  describe(`account closure and purge (${dialect})`, () => {
    let h: ExportHarness;
    let customer: { id: string; email: string };
    let heldConversation: string;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 30 });
      const created = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
        payload: { datasets: ['account', 'conversations', 'messages', 'customers'], package: 'zip' },
      });
      expect(created.statusCode, created.body).toBe(202);
      await h.waitForExport(created.json().id);
      const c = await sql<{ id: string; email: string }>`
        SELECT id, email FROM customers WHERE tenant_id = ${h.tenant.id} AND email IS NOT NULL
          AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = customers.id)
        ORDER BY id LIMIT 1`.execute(h.database.db);
      customer = c.rows[0]!;
      heldConversation = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${h.tenant.id}
          AND customer_id IS DISTINCT FROM ${customer.id} ORDER BY id LIMIT 1`.execute(h.database.db)
      ).rows[0]!.id;
    }, 300_000);

    afterAll(async () => h?.close());

    it('closes with confirmation, suspends changes, reopens, and purges everything but held data and the receipt', {
      timeout: 300_000,
    }, async () => {
      const manager = await h.app.inject({
        method: 'POST',
        url: '/api/v1/account/close',
        headers: bearer(h.keys.manager),
        payload: { confirm: h.tenant.slug },
      });
      expect(manager.statusCode).toBe(403);
      const wrong = await h.app.inject({
        method: 'POST',
        url: '/api/v1/account/close',
        headers: bearer(h.keys.admin),
        payload: { confirm: 'not-the-slug' },
      });
      expect(wrong.statusCode).toBe(400);
      expect(wrong.headers['content-type']).toContain('application/problem+json');
      const closed = await h.app.inject({
        method: 'POST',
        url: '/api/v1/account/close',
        headers: bearer(h.keys.admin),
        payload: { confirm: h.tenant.slug, reason: 'Moving to "another" platform' },
      });
      expect(closed.statusCode, closed.body).toBe(200);
      expect(closed.json()).toMatchObject({ status: 'closing' });
      const graceDays =
        (Date.parse(closed.json().purge_after) - Date.parse(closed.json().closed_at)) / 86_400_000;
      expect(graceDays).toBe(30);

      // In the grace period: reading and exporting work, other changes do not.
      const list = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
      });
      expect(list.statusCode).toBe(200);
      const hook = await h.app.inject({
        method: 'POST',
        url: '/api/v1/webhooks',
        headers: bearer(h.keys.admin),
        payload: { url: 'https://example.com/hook' },
      });
      expect(hook.statusCode).toBe(403);
      expect(hook.json().code).toBe('account_closed');
      const reopened = await h.app.inject({
        method: 'POST',
        url: '/api/v1/account/reopen',
        headers: bearer(h.keys.admin),
      });
      expect(reopened.json()).toMatchObject({ status: 'active', purge_after: null });

      // Holds placed; closed again; the purge waits for the grace period unless forced.
      await createHold(
        h.database,
        h.tenant.id,
        { scope: 'subject', subject: { customer_id: customer.id }, reason: 'Tax audit', matter: 'TAX-2026' },
        { actor: 'cli' },
      );
      await createHold(
        h.database,
        h.tenant.id,
        {
          scope: 'conversation_ids',
          conversation_ids: [heldConversation],
          reason: 'Complaint',
          matter: 'C-1',
        },
        { actor: 'cli' },
      );
      // The held customer asks to be erased: their held rows stay, and so does the stored package that copies them.
      const full = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
        payload: { datasets: ['customers'], format: 'csv', pii: 'full' },
      });
      expect(full.statusCode, full.body).toBe(202);
      await h.waitForExport(full.json().id);
      const filesBefore = await objectsMentioning(h, '');
      const subject = await resolveSubject(h.database, h.tenant.id, { customer_id: customer.id });
      const erased = await executeErasure(
        { database: h.database, store: h.store, secretKey: loadOrCreateSecretKey(h.config) },
        { tenantId: h.tenant.id, requestId: randomUUID(), subject },
      );
      expect(erased.files.deleted, JSON.stringify(erased.stores)).toEqual([]);
      expect(erased.stores.find((s) => s.dataset === 'export_files')).toMatchObject({
        store: 'object_store',
        deleted: 0,
        retain_reason: 'kept under a legal hold',
      });
      expect(await objectsMentioning(h, '')).toEqual(filesBefore);
      expect(filesBefore.length).toBeGreaterThan(0);
      await closeAccount(h.database, h.tenant.id, { actor: 'cli' });
      const secretKey = loadOrCreateSecretKey(h.config);
      const deps = { database: h.database, store: h.store, secretKey, secrets: h.secrets };
      await expect(purgeAccount(deps, h.tenant.id, { actor: 'cli' })).rejects.toThrow(/grace period/);
      const otherBefore = await rowsMentioning(h, h.other.id);

      const expected = {
        conversations: await count(
          h,
          `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${h.tenant.id}' AND (customer_id = '${customer.id}' OR id = '${heldConversation}' OR lower(customer_email) = lower('${customer.email}'))`,
        ),
      };
      const outcome = await purgeAccount(deps, h.tenant.id, { actor: 'cli' }, { force: true });
      expect(outcome.files_deleted).toBeGreaterThan(0);
      const kept = Object.fromEntries(outcome.kept.map((k) => [k.dataset, k.rows]));
      expect(kept.conversations).toBe(expected.conversations);
      // The held customer, and the customer of the held conversation (a held row keeps what it refers to).
      expect(kept.customers).toBe(
        await count(
          h,
          `SELECT count(DISTINCT customer_id) AS n FROM conversations WHERE tenant_id = '${h.tenant.id}' AND customer_id IS NOT NULL`,
        ),
      );
      expect(
        await count(
          h,
          `SELECT count(*) AS n FROM customers WHERE tenant_id = '${h.tenant.id}' AND id = '${customer.id}'`,
        ),
      ).toBe(1);

      // Byte-level: the tenant id is only in held rows (and what they need), the holds and the receipt.
      const mentions = await rowsMentioning(h, h.tenant.id);
      const allowed = new Set([
        'tenants',
        'legal_holds',
        'dsar_receipts',
        'receipt_chains',
        ...outcome.kept.map((k) => k.dataset),
      ]);
      for (const table of Object.keys(mentions))
        expect(allowed, `${table} still names the tenant`).toContain(table);
      expect(mentions.tenants).toBe(1);
      expect(mentions.dsar_receipts).toBe(1);
      for (const k of outcome.kept) expect(mentions[k.dataset]).toBe(k.rows);
      // The kept conversations are exactly the held ones.
      expect(
        await count(
          h,
          `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${h.tenant.id}' AND NOT (customer_id = '${customer.id}' OR id = '${heldConversation}' OR coalesce(lower(customer_email) = lower('${customer.email}'), false))`,
        ),
      ).toBe(0);
      expect(await objectsMentioning(h, h.tenant.id)).toEqual([]);
      // The account's record keeps no name; the other tenant is untouched.
      const tenant = await sql<{ name: string; slug: string; status: string }>`
        SELECT name, slug, status FROM tenants WHERE id = ${h.tenant.id}`.execute(h.database.db);
      expect(tenant.rows[0]).toMatchObject({ name: 'Closed account', status: 'purged' });
      expect(tenant.rows[0]!.slug).not.toBe(h.tenant.slug);
      expect(await rowsMentioning(h, h.other.id)).toEqual(otherBefore);

      // The receipt verifies against the published keys and records what was kept.
      const verdict = verifyReceipt(outcome.receipt.document, await receiptJwks(h.database));
      expect(verdict.valid).toBe(true);
      const body = outcome.receipt.document.receipt;
      expect(body.type).toBe('account_closure');
      expect(body.holds.map((x) => x.reason).sort()).toEqual(['C-1: Complaint', 'TAX-2026: Tax audit']);
      expect(JSON.stringify(outcome.receipt.document)).not.toContain(customer.email);

      // The keys are gone.
      const after = await h.app.inject({
        method: 'GET',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
      });
      expect(after.statusCode).toBe(401);
    });
  });
}
