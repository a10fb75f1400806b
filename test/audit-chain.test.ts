import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import type { Database } from '../src/db/database.ts';
import { anchorAuditChains, verifyAuditChain } from '../src/privacy/audit-chain.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { createTenant } from './support/fixtures/auth.ts';
import { testSecrets } from './support/keyring.ts';

const SECRET = 'audit-chain-test-secret-key-0123456789abcdef';

/** Every column of an event a byte flip can reach, with a change of one byte (or one unit). */
const FLIPS: Record<string, string> = {
  occurred_at: `occurred_at + interval '1 microsecond'`,
  actor: `overlay(actor placing chr(ascii(substr(actor, 1, 1)) # 1) from 1 for 1)`,
  action: `overlay(action placing chr(ascii(substr(action, 1, 1)) # 1) from 1 for 1)`,
  target_id: `overlay(target_id placing chr(ascii(substr(target_id, 1, 1)) # 1) from 1 for 1)`,
  data_type: `overlay(data_type placing chr(ascii(substr(data_type, 1, 1)) # 1) from 1 for 1)`,
  date_from: `overlay(date_from placing chr(ascii(substr(date_from, 1, 1)) # 1) from 1 for 1)`,
  record_count: 'record_count # 1',
  file_bytes: 'file_bytes # 1',
  download_count: 'download_count # 1',
  ip_address: `overlay(ip_address placing chr(ascii(substr(ip_address, 1, 1)) # 1) from 1 for 1)`,
  user_agent: `overlay(user_agent placing chr(ascii(substr(user_agent, 1, 1)) # 1) from 1 for 1)`,
  success: 'NOT success',
  error: `overlay(error placing chr(ascii(substr(error, 1, 1)) # 1) from 1 for 1)`,
  retention_until: `retention_until + interval '1 microsecond'`,
  hash: `overlay(hash placing chr(ascii(substr(hash, 1, 1)) # 1) from 1 for 1)`,
  prev_hash: `overlay(prev_hash placing chr(ascii(substr(prev_hash, 1, 1)) # 1) from 1 for 1)`,
  text_digest: `overlay(text_digest placing chr(ascii(substr(text_digest, 1, 1)) # 1) from 1 for 1)`,
};

for (const dialect of DIALECTS) {
  describe(`the tamper-evident audit trail (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;
    let tenantId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
    }, 120_000);
    afterAll(async () => t?.drop());

    beforeEach(async () => {
      tenantId = (await createTenant(database)).id;
      for (let i = 0; i < 12; i++)
        await recordAudit(database, {
          tenantId,
          actor: `api_key:${randomUUID()}`,
          action: i % 2 ? 'export.completed' : 'export.downloaded',
          targetId: randomUUID(),
          dataType: 'conversations',
          dateRange: { from: '2026-01-01', to: '2026-02-01' },
          recordCount: 9_007_199_254_740_000 + i,
          fileBytes: 1024 * (i + 1),
          downloadCount: i,
          ip: `203.0.113.${i + 1}`,
          userAgent: `Mozilla/5.0 "quoted" \u0007 😀 ${i}`,
          success: true,
          error: `line one\nline "two" =SUM(A1) ${i}`,
          retentionUntil: new Date(Date.UTC(2027, 0, 1, 0, 0, 0, i)),
          occurredAt: new Date(Date.UTC(2026, 10, 1, 12, 0, i)),
        });
    });

    const event = async (seq: number) =>
      (
        await sql<{
          id: string;
        }>`SELECT id FROM audit_events WHERE tenant_id = ${tenantId} AND seq = ${seq}`.execute(database.db)
      ).rows[0]!.id;

    it('verifies while events are appended: the chain as its head stood when read', async () => {
      let appending = true;
      const appends = (async () => {
        for (let i = 0; i < 60; i++)
          await recordAudit(database, {
            tenantId,
            actor: 'api_key:appender',
            action: 'export.downloaded',
            targetId: randomUUID(),
            success: true,
          });
        appending = false;
      })();
      const results: { valid: boolean; reason: string | undefined }[] = [];
      while (appending) {
        const r = await verifyAuditChain(database, tenantId);
        results.push({ valid: r.valid, reason: r.broken?.reason });
      }
      await appends;
      expect(results.length).toBeGreaterThan(0);
      expect(results.filter((r) => !r.valid)).toEqual([]);
      expect((await verifyAuditChain(database, tenantId)).events).toBe(72);
    });

    it('a whole chain verifies, with links in insertion order', async () => {
      const result = await verifyAuditChain(database, tenantId);
      expect(result).toMatchObject({ valid: true, events: 12, first_seq: 1, last_seq: 12, broken: null });
    });

    for (const [column, change] of Object.entries(FLIPS))
      it(`a change of one byte in ${column} is reported at that event`, async () => {
        const id = await event(7);
        await sql`${sql.raw(`UPDATE audit_events SET ${column} = ${change} WHERE id = '${id}'`)}`.execute(
          database.db,
        );
        const result = await verifyAuditChain(database, tenantId);
        expect(result.valid).toBe(false);
        // A changed link field shows at its event, or (prev_hash of the next one) right after it.
        expect(result.broken!.seq).toBe(7);
        expect(result.broken!.event_id).toBe(id);
      });

    it('a deleted event is reported where it is missing', async () => {
      const id = await event(5);
      await sql`DELETE FROM audit_events WHERE id = ${id}`.execute(database.db);
      const result = await verifyAuditChain(database, tenantId);
      expect(result.broken).toMatchObject({ seq: 5, event_id: null });
      expect(result.broken!.reason).toContain('missing');
    });

    it('a deleted first event is reported although nothing follows it', async () => {
      await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq = 1`.execute(database.db);
      expect((await verifyAuditChain(database, tenantId)).broken!.seq).toBe(1);
    });

    it('events cut off the end are reported, even when the chain head is rewound, by the signed anchor', async () => {
      expect(await anchorAuditChains(database, await testSecrets(database, SECRET))).toBeGreaterThan(0);
      expect(await verifyAuditChain(database, tenantId)).toMatchObject({ valid: true, anchors_checked: 1 });
      await sql`DELETE FROM audit_events WHERE tenant_id = ${tenantId} AND seq > 9`.execute(database.db);
      expect((await verifyAuditChain(database, tenantId)).broken!.seq).toBe(10);
      // Rewinding the head as well hides the cut from the chain, not from the anchor.
      const head = await sql<{
        hash: string;
      }>`SELECT hash FROM audit_events WHERE tenant_id = ${tenantId} AND seq = 9`.execute(database.db);
      await sql`UPDATE audit_chains SET last_seq = 9, last_hash = ${head.rows[0]!.hash} WHERE tenant_id = ${tenantId}`.execute(
        database.db,
      );
      const result = await verifyAuditChain(database, tenantId);
      expect(result.valid).toBe(false);
      expect(result.broken!.seq).toBe(12);
      expect(result.broken!.reason).toContain('anchor');
    });

    it('an erasure that scrubs an event keeps the chain valid and counts it as redacted; the same change without one does not', async () => {
      const id = await event(3);
      const requestId = randomUUID();
      await recordAudit(database, {
        tenantId,
        actor: `dsar:${requestId}`,
        action: 'dsar.erased',
        targetId: requestId,
        success: true,
      });
      await database.db.transaction().execute(async (trx) => {
        await sql`SELECT set_config('ferry.redaction', ${requestId}, true)`.execute(trx);
        await sql`UPDATE audit_events SET error = '[email]' WHERE id = ${id}`.execute(trx);
      });
      expect(await verifyAuditChain(database, tenantId)).toMatchObject({ valid: true, redacted: 1 });
      const other = await event(4);
      await sql`UPDATE audit_events SET error = 'rewritten' WHERE id = ${other}`.execute(database.db);
      expect((await verifyAuditChain(database, tenantId)).broken).toMatchObject({ seq: 4, event_id: other });
    });

    it('concurrent writers get consecutive links', async () => {
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          recordAudit(database, {
            tenantId,
            actor: 'system',
            action: 'export.requested',
            success: i % 3 !== 0,
          }),
        ),
      );
      expect(await verifyAuditChain(database, tenantId)).toMatchObject({
        valid: true,
        events: 32,
        last_seq: 32,
      });
    });
  });
}
