import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import type { EntityReport } from '../src/imports/engine.ts';
import { createImport, type ImportContext, runImportById } from '../src/imports/service.ts';
import type { ImportSourceName } from '../src/imports/types.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';
import { emptyTenantLike, tenantFingerprint, testImportContext } from './support/imports.ts';

const FIXTURES = path.join(import.meta.dirname, 'fixtures/imports');
const COMPETITORS: readonly ImportSourceName[] = [
  'zendesk',
  'intercom',
  'chatwoot',
  'freshdesk',
  'helpscout',
];

/**
 * Each competitor's fixture through the whole pipeline into a tenant: the rows that land, the
 * counts derived from the messages, senders and internal notes, and a second run that changes
 * nothing. (test/imports-sources.test.ts checks every mapped field of every item.)
 */
describe('competitor exports into Ferry (pglite)', () => {
  let t: TestDatabase;
  let database: Database;
  let ctx: ImportContext;
  let like: string;

  beforeAll(async () => {
    t = await createTestDatabase('pglite');
    database = t.database;
    ctx = testImportContext(database, 3);
    const summary = await seed(database, {
      tenants: 1,
      conversations: 2,
      messagesPerConversation: 2,
      seed: 51,
      since: new Date('2025-09-01T00:00:00Z'),
      until: new Date('2026-09-01T00:00:00Z'),
      secretKey: 'competitor-test-secret-key-0123456789ab',
    });
    like = summary.tenants[0]!.id;
  }, 60_000);

  afterAll(async () => {
    await t?.drop();
  });

  for (const source of COMPETITORS) {
    it(`imports ${source}: rows, derived counts, senders and notes, and nothing twice`, async () => {
      const tenant = await emptyTenantLike(database, like);
      const run = async () => {
        const row = await createImport(ctx, {
          tenantId: tenant,
          source,
          input: { kind: 'path', path: path.join(FIXTURES, source) },
          dryRun: false,
          conflict: { default: 'skip' },
          allOrNothing: false,
          notify: false,
          actor: 'test',
        });
        return runImportById(ctx, row.id);
      };
      const first = await run();
      expect(first.status, first.error ?? '').toBe('completed');
      const entities = first.report.entities as Record<string, EntityReport>;
      const created = (e: string) => entities[e]?.created ?? 0;
      expect(created('sites')).toBe(1);
      expect(created('conversations')).toBeGreaterThan(1);
      expect(created('messages')).toBeGreaterThan(3);
      // Every fixture holds records that cannot be imported; they are reported, not dropped.
      expect(first.rejected_count).toBeGreaterThan(0);
      for (const r of Object.values(entities))
        for (const x of r.rejected_samples) expect(x.errors.length).toBeGreaterThan(0);

      const counts = await sql<{ created: number; messages: number; ok: boolean }>`
        SELECT count(*)::int AS created, coalesce(sum(c.message_count), 0)::int AS messages,
          bool_and(c.message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
            AND c.ai_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'ai')
            AND c.human_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'human')
            AND c.customer_message_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'customer')) AS ok
        FROM conversations c WHERE c.tenant_id = ${tenant}`.execute(database.db);
      expect(counts.rows[0]).toMatchObject({
        created: created('conversations'),
        messages: created('messages'),
        ok: true,
      });

      const senders = await sql<{
        sender_type: string;
        n: number;
      }>`SELECT sender_type, count(*)::int AS n FROM messages
        WHERE tenant_id = ${tenant} GROUP BY 1 ORDER BY 1`.execute(database.db);
      expect(senders.rows.map((r) => r.sender_type)).toEqual(['ai', 'customer', 'human']);
      const notes = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages
        WHERE tenant_id = ${tenant} AND sender_type = 'human' AND custom_metadata->>'internal_note' = 'true'`.execute(
        database.db,
      );
      expect(notes.rows[0]!.n).toBeGreaterThan(0);
      // A human author who was imported as a team member is named by their Ferry id.
      const linked = await sql<{ n: number }>`SELECT count(*)::int AS n FROM messages m
        JOIN team_members tm ON tm.id::text = m.sender_id WHERE m.tenant_id = ${tenant} AND m.sender_type = 'human'`.execute(
        database.db,
      );
      expect(linked.rows[0]!.n).toBeGreaterThan(0);
      const nobodyCanSignIn = await sql<{ n: number }>`SELECT count(*)::int AS n FROM team_members
        WHERE tenant_id = ${tenant} AND password_hash <> '!imported'`.execute(database.db);
      expect(nobodyCanSignIn.rows[0]!.n).toBe(0);

      const fingerprint = await tenantFingerprint(database, tenant);
      const second = await run();
      expect(second.status).toBe('completed');
      for (const [entity, r] of Object.entries(second.report.entities as Record<string, EntityReport>))
        expect([entity, r.created, r.updated, r.conflicts], entity).toEqual([entity, 0, 0, 0]);
      expect(await tenantFingerprint(database, tenant)).toEqual(fingerprint);
    }, 60_000);
  }
});
