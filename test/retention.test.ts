import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { sql } from 'kysely';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import type { Config } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { verifyAuditChain } from '../src/privacy/audit-chain.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import { createHold, holdReport, releaseHold } from '../src/privacy/holds.ts';
import { archiveKey, previewRetention, runRetentionSweep } from '../src/privacy/retention.ts';
import { putRetention } from '../src/privacy/retention-policies.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { seed } from '../src/seed/seed.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { authTestConfig } from './support/fixtures/auth.ts';
import { testAdapters } from './support/keyring.ts';

const SECRET = 'retention-test-secret-key-0123456789abcdef';
const ZONE = 'America/New_York';
const DAY = 86_400_000;

async function n(database: Database, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(database.db);
  return Number(r.rows[0]?.n ?? 0);
}

/** The cutoff the policies promise: the start of the tenant's local day, minus the period. */
function cutoff(now: Date, years: number): string {
  return DateTime.fromJSDate(now).setZone(ZONE).startOf('day').minus({ years }).toUTC().toISO()!;
}

async function readObject(store: ObjectStore, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.get(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

for (const dialect of DIALECTS) {
  describe(`retention sweeps and legal holds over 800 simulated days (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;
    let config: Config;
    let store: ObjectStore;
    let tenantId: string;
    let heldConversations: string[];
    let heldCustomer: { id: string; email: string };
    let subjectHoldId: string;
    let conversationHoldId: string;
    const start = new Date('2026-01-02T15:00:00.123456Z');

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
      config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
      store = (await testAdapters(database, config)).store;
      const summary = await seed(database, {
        tenants: 1,
        conversations: 120,
        messagesPerConversation: 4,
        seed: 13,
        since: new Date('2024-01-01T00:00:00Z'),
        until: new Date('2026-01-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      await sql`UPDATE tenants SET timezone = ${ZONE}, plan = 'pro' WHERE id = ${tenantId}`.execute(
        database.db,
      );
      // Audit events from two and a half years back: the trail's own policy (two years) cuts them.
      for (let i = 0; i < 5; i++)
        await recordAudit(database, {
          tenantId,
          actor: 'cli',
          action: 'export.requested',
          success: true,
          error: `old "event" ${i}\n😀`,
          occurredAt: new Date(Date.parse('2023-07-01T00:00:00Z') + i * DAY),
        });
      await putRetention(
        database,
        tenantId,
        [
          { dataset: 'conversations', keep: 'P1Y', after: 'created', action: 'delete' },
          { dataset: 'activity_logs', keep: 'P1Y', after: 'created', action: 'archive', archive_keep: 'P1Y' },
          { dataset: 'revenue_events', keep: 'P1Y', after: 'created', action: 'anonymize' },
        ],
        'test',
      );
      // Three of the oldest conversations are evidence in a dispute; one customer's data is under a hold.
      heldConversations = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${tenantId}
          ORDER BY start_timestamp LIMIT 3`.execute(database.db)
      ).rows.map((r) => r.id);
      const who = await sql<{ id: string; email: string }>`
        SELECT c.id, c.email FROM customers c WHERE c.tenant_id = ${tenantId} AND c.email IS NOT NULL
          AND EXISTS (SELECT 1 FROM conversations v WHERE v.customer_id = c.id AND v.start_timestamp < '2024-06-01')
          AND EXISTS (SELECT 1 FROM revenue_events r WHERE r.customer_id = c.id)
        ORDER BY c.id LIMIT 1`.execute(database.db);
      heldCustomer = who.rows[0]!;
      expect(heldCustomer).toBeDefined();
      conversationHoldId = (
        await createHold(
          database,
          tenantId,
          {
            scope: 'conversation_ids',
            conversation_ids: heldConversations,
            reason: 'Evidence in the "Müller" complaint',
            matter: 'CASE-2026-114',
          },
          { actor: 'cli' },
        )
      ).id;
      subjectHoldId = (
        await createHold(
          database,
          tenantId,
          {
            scope: 'subject',
            subject: { email: heldCustomer.email.toUpperCase() },
            reason: 'Litigation hold',
            matter: 'LIT-7',
          },
          { actor: 'cli' },
        )
      ).id;
    }, 240_000);

    afterAll(async () => {
      await t?.drop();
      if (config) await rm(config.dataDir, { recursive: true, force: true });
    });

    /** Rows of conversations a hold keeps, counted without Ferry's hold code. */
    const heldConversationSql = () =>
      `coalesce(id IN (${heldConversations.map((c) => `'${c}'`).join(', ')}) OR customer_id = '${heldCustomer.id}' OR lower(customer_email) = '${heldCustomer.email.toLowerCase()}', false)`;

    it('deletes, anonymizes and archives exactly what the policies say at every step; held rows survive', {
      timeout: 600_000,
    }, async () => {
      const tenant = `tenant_id = '${tenantId}'`;
      let erased = false;
      const written: { key: string; at: Date }[] = [];
      for (const offset of [0, 200, 400, 600, 800]) {
        const now = new Date(start.getTime() + offset * DAY);
        const c1 = cutoff(now, 1);
        const expected = {
          conversations: await n(
            database,
            `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND start_timestamp < '${c1}' AND NOT ${heldConversationSql()}`,
          ),
          messages: await n(
            database,
            `SELECT count(*) AS n FROM messages WHERE ${tenant} AND conversation_id IN (SELECT id FROM conversations WHERE ${tenant} AND start_timestamp < '${c1}' AND NOT ${heldConversationSql()})`,
          ),
          activity: await n(
            database,
            `SELECT count(*) AS n FROM activity_logs WHERE ${tenant} AND occurred_at < '${c1}' AND actor_id IS DISTINCT FROM '${heldCustomer.id}'`,
          ),
          activityBefore: await n(
            database,
            `SELECT count(*) AS n FROM activity_logs WHERE ${tenant} AND occurred_at < '${c1}'`,
          ),
          revenue: await n(
            database,
            `SELECT count(*) AS n FROM revenue_events WHERE ${tenant} AND occurred_at < '${c1}' AND customer_id IS NOT NULL AND customer_id <> '${heldCustomer.id}'`,
          ),
        };
        const heldBefore = await n(
          database,
          `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND ${heldConversationSql()}`,
        );

        const preview = await previewRetention({ database, store, now: () => now }, tenantId);
        const plan = Object.fromEntries(preview.datasets.map((d) => [d.dataset, d]));
        expect(plan.conversations!.rows).toBe(expected.conversations);
        expect(plan.conversations!.cutoff).toBe(new Date(c1).toISOString());
        expect(plan.revenue_events!.rows).toBe(expected.revenue);
        if (expected.conversations + heldBefore > 0 && offset < 800)
          expect(plan.conversations!.holds.map((h) => h.hold_id).sort()).toEqual(
            [conversationHoldId, subjectHoldId].sort(),
          );

        const sweep = await runRetentionSweep({ database, store, now: () => now, batchRows: 7 }, tenantId, {
          trigger: 'schedule',
          actor: 'system',
        });
        expect(sweep.status).toBe('completed');
        const counts = sweep.datasets;
        expect(counts.conversations!.deleted).toBe(expected.conversations);
        expect(counts.conversations!.cascaded.messages ?? 0).toBe(expected.messages);
        expect(counts.revenue_events!.anonymized).toBe(expected.revenue);
        expect(counts.activity_logs!.deleted).toBe(expected.activity);
        expect(counts.activity_logs!.archived).toBe(expected.activity);
        // Nothing past its period is left but what the holds keep.
        expect(
          await n(
            database,
            `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND start_timestamp < '${c1}' AND NOT ${heldConversationSql()}`,
          ),
        ).toBe(0);
        expect(
          await n(
            database,
            `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND ${heldConversationSql()}`,
          ),
        ).toBe(heldBefore);
        expect(
          await n(
            database,
            `SELECT count(*) AS n FROM revenue_events WHERE ${tenant} AND customer_id = '${heldCustomer.id}'`,
          ),
        ).toBeGreaterThan(0);
        // The archive is a verified package of every row past its period.
        if (expected.activity > 0) {
          const archive = counts.activity_logs!.archive!;
          expect(archive.key).toBe(archiveKey(tenantId, sweep.id, 'activity_logs'));
          const bytes = await readObject(store, archive.key);
          expect(createHash('sha256').update(bytes).digest('hex')).toBe(archive.sha256);
          expect(archive.records).toBe(expected.activityBefore);
          expect(bytes.subarray(0, 2).toString()).toBe('PK');
          written.push({ key: archive.key, at: now });
        }
        // The sweep is in the audit trail with the same counts.
        const audited = await sql<{ record_count: string | number; error: string }>`
          SELECT record_count, error FROM audit_events WHERE tenant_id = ${tenantId} AND action = 'retention.swept' AND target_id = ${sweep.id}`.execute(
          database.db,
        );
        expect(audited.rows).toHaveLength(1);
        const total = Object.values(counts).reduce((s, c) => s + c.deleted + c.anonymized, 0);
        expect(Number(audited.rows[0]!.record_count)).toBe(total);
        if (expected.conversations)
          expect(audited.rows[0]!.error).toContain(`conversations: ${expected.conversations} deleted`);

        // A second sweep the same local day is the same sweep: nothing is done twice.
        const again = await runRetentionSweep(
          { database, store, now: () => new Date(now.getTime() + 3_600_000) },
          tenantId,
          {
            trigger: 'schedule',
            actor: 'system',
          },
        );
        expect(again.id).toBe(sweep.id);

        if (offset === 400 && !erased) {
          // The held customer asks to be erased: the held data stays, the receipt names the hold.
          const subject = await resolveSubject(database, tenantId, { email: heldCustomer.email });
          const requestId = crypto.randomUUID();
          const outcome = await executeErasure(
            { database, store, secretKey: SECRET, now: () => now },
            { tenantId, requestId, subject },
          );
          expect(outcome.holds.map((h) => h.hold_id)).toContain(subjectHoldId);
          expect(
            await n(database, `SELECT count(*) AS n FROM customers WHERE id = '${heldCustomer.id}'`),
          ).toBe(1);
          expect(
            await n(
              database,
              `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND customer_id = '${heldCustomer.id}' AND customer_email IS NOT NULL`,
            ),
          ).toBeGreaterThan(0);
          const kept = outcome.stores.find((s) => s.dataset === 'conversations');
          expect(kept?.retained).toBeGreaterThan(0);
          expect(kept?.retain_reason).toContain('legal hold');
          erased = true;
        }
      }
      expect(erased).toBe(true);

      // The report says what each hold keeps.
      const report = await holdReport(database, tenantId);
      const byHold = Object.fromEntries(
        report.map((r) => [r.hold.id, Object.fromEntries(r.datasets.map((d) => [d.dataset, d.rows]))]),
      );
      expect(byHold[conversationHoldId]!.conversations).toBe(3);
      expect(byHold[conversationHoldId]!.messages).toBe(
        await n(
          database,
          `SELECT count(*) AS n FROM messages WHERE conversation_id IN (${heldConversations.map((c) => `'${c}'`).join(', ')})`,
        ),
      );
      expect(byHold[subjectHoldId]!.customers).toBe(1);

      // Released, the holds no longer keep anything: the next sweep takes what they kept.
      await releaseHold(database, tenantId, conversationHoldId, 'Dispute settled', { actor: 'cli' });
      await releaseHold(database, tenantId, subjectHoldId, 'Litigation closed', { actor: 'cli' });
      const later = new Date(start.getTime() + 801 * DAY);
      const last = await runRetentionSweep({ database, store, now: () => later }, tenantId, {
        trigger: 'manual',
        actor: 'cli',
      });
      expect(last.datasets.conversations!.deleted).toBeGreaterThanOrEqual(3);
      expect(
        await n(
          database,
          `SELECT count(*) AS n FROM conversations WHERE ${tenant} AND start_timestamp < '${cutoff(later, 1)}'`,
        ),
      ).toBe(0);

      // Archives past their own period (one year) are gone, from the store as well.
      const keys: string[] = [];
      for await (const object of store.list(`archives/${tenantId}/`)) keys.push(object.key);
      const remaining = await sql<{ object_key: string; expires_at: Date }>`
        SELECT object_key, expires_at FROM retention_archives WHERE tenant_id = ${tenantId}`.execute(
        database.db,
      );
      expect(keys.sort()).toEqual(remaining.rows.map((r) => r.object_key).sort());
      for (const r of remaining.rows)
        expect(new Date(r.expires_at).getTime()).toBeGreaterThan(later.getTime());
      expect(written.length).toBeGreaterThan(1);
      for (const w of written)
        if (w.at.getTime() + 366 * DAY <= later.getTime()) expect(keys).not.toContain(w.key);

      // The old audit events were cut at the start of the chain; the chain still verifies.
      const chain = await verifyAuditChain(database, tenantId);
      expect(chain.broken).toBeNull();
      expect(chain.first_seq).toBeGreaterThan(5);
      expect(
        await n(
          database,
          `SELECT count(*) AS n FROM audit_events WHERE tenant_id = '${tenantId}' AND occurred_at < '2024-01-01'`,
        ),
      ).toBe(0);
    });

    it('previews without changing anything', async () => {
      const now = new Date(start.getTime() + 2000 * DAY);
      const before = await n(
        database,
        `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${tenantId}'`,
      );
      const preview = await previewRetention({ database, store, now: () => now }, tenantId);
      expect(preview.datasets.find((d) => d.dataset === 'conversations')!.rows).toBe(before);
      expect(
        await n(database, `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${tenantId}'`),
      ).toBe(before);
      expect(preview.time_zone).toBe(ZONE);
    });
  });
}
