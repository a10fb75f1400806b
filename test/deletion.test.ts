import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseExportRequest } from '../src/collect/request.ts';
import { createApiKey } from '../src/auth/keys.ts';
import type { Config } from '../src/config/config.ts';
import type { Database } from '../src/db/database.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import {
  createDeletion,
  type Deletion,
  redeleteInTransaction,
  runDeletion,
} from '../src/privacy/deletion.ts';
import { createHold } from '../src/privacy/holds.ts';
import { receiptJwks } from '../src/privacy/receipt-keys.ts';
import { getReceipt, verifyReceipt } from '../src/privacy/receipts.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { testAdapters } from './support/keyring.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { runFerry } from './support/cli.ts';
import { sink } from './support/fixtures/streams.ts';

const SECRET = 'deletion-test-secret-key-0123456789abcdef';

async function n(database: Database, statement: string): Promise<number> {
  const r = await sql<{ n: number | string }>`${sql.raw(statement)}`.execute(database.db);
  return Number(r.rows[0]?.n ?? 0);
}

async function ids(database: Database, statement: string): Promise<string[]> {
  const r = await sql<{ id: string }>`${sql.raw(statement)}`.execute(database.db);
  return r.rows.map((x) => x.id).sort();
}

for (const dialect of DIALECTS) {
  describe(`selective deletion (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;
    let config: Config;
    let store: ObjectStore;
    let secrets: SecretBox;
    let app: FerryApp;
    let tenantId: string;
    let otherTenantId: string;
    let admin: string;
    let heldId: string;
    let slug: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
      config = authTestConfig({ FERRY_SECRET_KEY: SECRET, ...t.env });
      ({ store, secrets } = await testAdapters(database, config));
      const summary = await seed(database, {
        tenants: 2,
        conversations: 60,
        messagesPerConversation: 3,
        seed: 25,
        since: new Date('2025-01-01T00:00:00Z'),
        until: new Date('2026-01-01T00:00:00Z'),
        secretKey: SECRET,
      });
      tenantId = summary.tenants[0]!.id;
      otherTenantId = summary.tenants[1]!.id;
      slug = summary.tenants[0]!.slug;
      admin = (await createApiKey(database, { tenantId, role: 'admin', name: 'admin "key" 😀' })).key;
      app = await buildApp({ database, config, store });
      heldId = (
        await ids(
          database,
          `SELECT id::text AS id FROM conversations WHERE tenant_id = '${tenantId}' AND status = 'resolved' AND start_timestamp >= '2025-04-01' ORDER BY start_timestamp LIMIT 1`,
        )
      )[0]!;
      await createHold(
        database,
        tenantId,
        {
          scope: 'conversation_ids',
          conversation_ids: [heldId],
          reason: 'Dispute "A-17"\nkept 😀',
          matter: 'M-1',
        },
        { actor: 'cli' },
      );
    }, 120_000);
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('deletes one conversation with its messages, keeps held data, signs a receipt, and deletes it again after a restore', async () => {
      // A conversation a revenue event names (bookkeeping keeps the event, without the link).
      const [target] = await ids(
        database,
        `SELECT c.id::text AS id FROM conversations c WHERE c.tenant_id = '${tenantId}' AND c.id <> '${heldId}'
         AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)
         ORDER BY (SELECT count(*) FROM revenue_events r WHERE c.id = ANY (r.conversation_ids)) DESC, c.id LIMIT 1`,
      );
      const where = `tenant_id = '${tenantId}'`;
      const messages = await n(
        database,
        `SELECT count(*) AS n FROM messages WHERE conversation_id = '${target}'`,
      );
      const events = await n(
        database,
        `SELECT count(*) AS n FROM revenue_events WHERE '${target}' = ANY (conversation_ids)`,
      );
      const before = {
        conversations: await n(database, `SELECT count(*) AS n FROM conversations WHERE ${where}`),
        messages: await n(database, `SELECT count(*) AS n FROM messages WHERE ${where}`),
        revenue: await n(database, `SELECT count(*) AS n FROM revenue_events WHERE ${where}`),
      };
      const email = (
        await sql<{
          e: string | null;
        }>`SELECT customer_email AS e FROM conversations WHERE id = ${target}`.execute(database.db)
      ).rows[0]?.e;

      // The dry run states the counts and changes nothing.
      const dry = await app.inject({
        method: 'POST',
        url: '/api/v1/deletions',
        headers: bearer(admin),
        payload: { target: 'conversation', id: target, dry_run: true },
      });
      expect(dry.statusCode, dry.body).toBe(200);
      const plan = dry.json() as { stores: { dataset: string; deleted: number; scrubbed: number }[] };
      const of = (d: string) => plan.stores.find((s) => s.dataset === d);
      expect(of('conversations')?.deleted).toBe(1);
      expect(of('messages')?.deleted).toBe(messages);
      expect(of('revenue_events')?.scrubbed ?? 0).toBe(events);
      expect(await n(database, `SELECT count(*) AS n FROM messages WHERE ${where}`)).toBe(before.messages);

      // The rows as an older backup holds them.
      await sql`${sql.raw(`CREATE TABLE keep_c AS SELECT * FROM conversations WHERE id = '${target}'`)}`.execute(
        database.db,
      );
      await sql`${sql.raw(`CREATE TABLE keep_m AS SELECT * FROM messages WHERE conversation_id = '${target}'`)}`.execute(
        database.db,
      );

      // The live stream's outbox holds the conversation's events (a new message's among them).
      await sql`UPDATE conversations SET satisfaction_score = 5 WHERE id = ${target}`.execute(database.db);
      expect(
        await n(database, `SELECT count(*) AS n FROM stream_events WHERE conversation_id = '${target}'`),
      ).toBeGreaterThan(0);

      const res = await app.inject({
        method: 'DELETE',
        url: `/api/v1/conversations/${target}`,
        headers: bearer(admin),
      });
      expect(res.statusCode, res.body).toBe(200);
      const deletion = res.json() as Deletion;
      expect(deletion.status).toBe('completed');
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE id = '${target}'`)).toBe(0);
      expect(
        await n(database, `SELECT count(*) AS n FROM messages WHERE conversation_id = '${target}'`),
      ).toBe(0);
      expect(
        await n(database, `SELECT count(*) AS n FROM stream_events WHERE conversation_id = '${target}'`),
      ).toBe(0);
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE ${where}`)).toBe(
        before.conversations - 1,
      );
      expect(await n(database, `SELECT count(*) AS n FROM messages WHERE ${where}`)).toBe(
        before.messages - messages,
      );
      // Revenue events stay (bookkeeping), without the deleted conversation.
      expect(await n(database, `SELECT count(*) AS n FROM revenue_events WHERE ${where}`)).toBe(
        before.revenue,
      );
      expect(
        await n(
          database,
          `SELECT count(*) AS n FROM revenue_events WHERE '${target}' = ANY (conversation_ids)`,
        ),
      ).toBe(0);

      // One audit event, an erasure ledger entry, and a receipt that verifies and names no one.
      expect(
        await n(
          database,
          `SELECT count(*) AS n FROM audit_events WHERE action = 'data.deleted' AND target_id = '${deletion.id}'`,
        ),
      ).toBe(1);
      expect(
        await n(database, `SELECT count(*) AS n FROM erasure_ledger WHERE request_id = '${deletion.id}'`),
      ).toBe(1);
      const receipt = await getReceipt(database, tenantId, { receiptId: deletion.receipt_id! });
      const verdict = verifyReceipt(
        JSON.parse(JSON.stringify(receipt.document)),
        await receiptJwks(database),
      );
      expect(verdict.valid).toBe(true);
      expect(receipt.document.receipt.type).toBe('deletion');
      expect(receipt.document.receipt.stores.find((s) => s.dataset === 'messages')?.deleted).toBe(messages);
      if (email) expect(JSON.stringify(receipt.document)).not.toContain(email);

      // A held conversation stays, with its messages, and the answer says so.
      const heldMessages = await n(
        database,
        `SELECT count(*) AS n FROM messages WHERE conversation_id = '${heldId}'`,
      );
      const kept = await app.inject({
        method: 'DELETE',
        url: `/api/v1/conversations/${heldId}`,
        headers: bearer(admin),
      });
      expect(kept.statusCode, kept.body).toBe(200);
      expect((kept.json() as Deletion).progress.held).toBe(1);
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE id = '${heldId}'`)).toBe(1);
      expect(
        await n(database, `SELECT count(*) AS n FROM messages WHERE conversation_id = '${heldId}'`),
      ).toBe(heldMessages);

      // Another tenant's conversation is not found.
      const [foreign] = await ids(
        database,
        `SELECT id::text AS id FROM conversations WHERE tenant_id = '${otherTenantId}' LIMIT 1`,
      );
      const other = await app.inject({
        method: 'DELETE',
        url: `/api/v1/conversations/${foreign}`,
        headers: bearer(admin),
      });
      expect(other.statusCode).toBe(404);
      expect(other.headers['content-type']).toContain('application/problem+json');
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE id = '${foreign}'`)).toBe(1);

      // The older rows come back (a restore); the ledger replay deletes them again.
      await sql`${sql.raw('INSERT INTO conversations SELECT * FROM keep_c')}`.execute(database.db);
      await sql`${sql.raw('INSERT INTO messages SELECT * FROM keep_m')}`.execute(database.db);
      const replayed = await database.db
        .transaction()
        .execute((trx) => redeleteInTransaction(trx, tenantId, tenantId, (c) => c));
      expect(replayed.find((r) => r.deletion_id === deletion.id)?.tables).toMatchObject({
        conversations: 1,
        messages,
      });
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE id = '${target}'`)).toBe(0);
      expect(
        await n(database, `SELECT count(*) AS n FROM messages WHERE conversation_id = '${target}'`),
      ).toBe(0);
      expect(await n(database, `SELECT count(*) AS n FROM conversations WHERE id = '${heldId}'`)).toBe(1);
    }, 120_000);

    it('deletes one message: the conversation stays with its counts recomputed, a held message stays, the ledger deletes it again', async () => {
      // A conversation with an AI message and at least one more, so counts and the AI average move.
      const [conversation] = await ids(
        database,
        `SELECT c.id::text AS id FROM conversations c WHERE c.tenant_id = '${tenantId}' AND c.id <> '${heldId}'
         AND (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.sender_type = 'ai' AND m.confidence_score IS NOT NULL) >= 2
         ORDER BY c.id LIMIT 1`,
      );
      expect(conversation).toBeDefined();
      const [message] = await ids(
        database,
        `SELECT id::text AS id FROM messages WHERE conversation_id = '${conversation}' AND sender_type = 'ai' ORDER BY id LIMIT 1`,
      );
      const remaining = (
        await sql<{
          sender_type: string;
          confidence_score: number | null;
        }>`SELECT sender_type, confidence_score FROM messages WHERE conversation_id = ${conversation} AND id <> ${message!}`.execute(
          database.db,
        )
      ).rows;
      await sql`${sql.raw(`CREATE TABLE keep_msg AS SELECT * FROM messages WHERE id = '${message}'`)}`.execute(
        database.db,
      );

      const outboxBefore = await n(
        database,
        `SELECT count(*) AS n FROM stream_events WHERE event = 'message_created' AND data->>'message_id' = '${message}'`,
      );
      expect(outboxBefore).toBe(1);
      const dry = await app.inject({
        method: 'POST',
        url: '/api/v1/deletions',
        headers: bearer(admin),
        payload: { target: 'message', id: message, dry_run: true },
      });
      expect(dry.statusCode, dry.body).toBe(200);
      const plan = dry.json() as {
        stores: { dataset: string; deleted: number }[];
        derived: { dataset: string; effect: string }[];
      };
      expect(plan.stores.filter((s) => s.deleted)).toEqual([
        expect.objectContaining({ dataset: 'messages', deleted: 1 }),
      ]);
      expect(plan.derived).toContainEqual(
        expect.objectContaining({ dataset: 'conversations', effect: 'recomputed' }),
      );

      const created = await createDeletion(database, tenantId, { target: 'message', id: message }, 'test');
      const done = await runDeletion({ database, store, secretKey: SECRET, secrets }, tenantId, created.id);
      expect(done.status).toBe('completed');
      expect(await n(database, `SELECT count(*) AS n FROM messages WHERE id = '${message}'`)).toBe(0);
      expect(
        await n(
          database,
          `SELECT count(*) AS n FROM stream_events WHERE event = 'message_created' AND data->>'message_id' = '${message}'`,
        ),
      ).toBe(0);
      const after = (
        await sql<{
          message_count: number;
          customer_message_count: number;
          ai_message_count: number;
          human_message_count: number;
          ai_confidence_avg: number | null;
        }>`SELECT message_count, customer_message_count, ai_message_count, human_message_count, ai_confidence_avg
           FROM conversations WHERE id = ${conversation}`.execute(database.db)
      ).rows[0]!;
      const of = (type: string) => remaining.filter((m) => m.sender_type === type);
      const scores = of('ai')
        .map((m) => m.confidence_score)
        .filter((x): x is number => x !== null);
      expect(after).toMatchObject({
        message_count: remaining.length,
        customer_message_count: of('customer').length,
        ai_message_count: of('ai').length,
        human_message_count: of('human').length,
      });
      expect(after.ai_confidence_avg).toBeCloseTo(scores.reduce((a, b) => a + b, 0) / scores.length, 9);
      const receipt = await getReceipt(database, tenantId, { receiptId: done.receipt_id! });
      expect(
        verifyReceipt(JSON.parse(JSON.stringify(receipt.document)), await receiptJwks(database)).valid,
      ).toBe(true);
      expect(receipt.document.receipt.stores.find((s) => s.dataset === 'messages')?.deleted).toBe(1);

      // A message of a held conversation stays.
      const [heldMessage] = await ids(
        database,
        `SELECT id::text AS id FROM messages WHERE conversation_id = '${heldId}' ORDER BY id LIMIT 1`,
      );
      const kept = await runDeletion(
        { database, store, secretKey: SECRET, secrets },
        tenantId,
        (await createDeletion(database, tenantId, { target: 'message', id: heldMessage }, 'test')).id,
      );
      expect(kept.progress.held).toBe(1);
      expect(await n(database, `SELECT count(*) AS n FROM messages WHERE id = '${heldMessage}'`)).toBe(1);

      // Another tenant's message is not found; nothing changes.
      const [foreign] = await ids(
        database,
        `SELECT id::text AS id FROM messages WHERE tenant_id = '${otherTenantId}' LIMIT 1`,
      );
      const other = await app.inject({
        method: 'POST',
        url: '/api/v1/deletions',
        headers: bearer(admin),
        payload: { target: 'message', id: foreign, dry_run: true },
      });
      expect(other.statusCode).toBe(404);
      expect(other.headers['content-type']).toContain('application/problem+json');

      // A restore brings the message back; the ledger replay deletes it again.
      await sql`${sql.raw('INSERT INTO messages SELECT * FROM keep_msg')}`.execute(database.db);
      const replayed = await database.db
        .transaction()
        .execute((trx) => redeleteInTransaction(trx, tenantId, tenantId, (c) => c));
      expect(replayed.find((r) => r.deletion_id === created.id)?.tables).toMatchObject({ messages: 1 });
      expect(await n(database, `SELECT count(*) AS n FROM messages WHERE id = '${message}'`)).toBe(0);
    }, 120_000);

    it('deletes by filter exactly what an export with the same filters holds, in batches that resume after a crash', async () => {
      const filters = { status: 'resolved', from: '2025-02-01', to: '2025-11-30' };
      const { out, bytes } = sink();
      await exportDataset(
        database,
        parseExportRequest({ tenantId, dataset: 'conversations', format: 'ndjson', pii: 'full', filters }),
        out,
      );
      const exported = bytes()
        .toString('utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => (JSON.parse(line) as { conversation_id: string }).conversation_id);
      expect(exported).toContain(heldId);
      const expected = exported.filter((id) => id !== heldId).sort();
      expect(expected.length).toBeGreaterThan(12);
      const total = await n(
        database,
        `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${tenantId}'`,
      );

      const deletion = await createDeletion(database, tenantId, { target: 'conversations', filters }, 'cli');
      expect(deletion.plan.stores.find((s) => s.dataset === 'conversations')).toMatchObject({
        deleted: expected.length,
        retained: 1,
      });
      expect(
        await n(database, `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${tenantId}'`),
      ).toBe(total);

      const deps = { database, store, secretKey: SECRET, secrets, batchRows: 5 };
      let batches = 0;
      await expect(
        runDeletion(
          {
            ...deps,
            afterBatch: async () => {
              batches++;
              if (batches === 2) throw new Error('worker lost');
            },
          },
          tenantId,
          deletion.id,
        ),
      ).rejects.toThrow('worker lost');
      const gone = (
        await ids(
          database,
          `SELECT row_id::text AS id FROM deletion_rows WHERE deletion_id = '${deletion.id}' AND state <> 'pending'`,
        )
      ).length;
      expect(gone).toBe(10);
      const left = await n(
        database,
        `SELECT count(*) AS n FROM conversations WHERE id IN (${exported.map((i) => `'${i}'`).join(', ')})`,
      );
      expect(left).toBe(
        exported.length - 10 + (exported.slice(0).sort().slice(0, 10).includes(heldId) ? 1 : 0),
      );

      const done = await runDeletion(deps, tenantId, deletion.id);
      expect(done.status).toBe('completed');
      expect(done.selected).toBe(exported.length);
      expect(done.progress.held).toBe(1);
      expect(done.progress.stores.find((s) => s.dataset === 'conversations')).toMatchObject({
        deleted: expected.length,
        retained: 1,
      });
      const remaining = await ids(
        database,
        `SELECT id::text AS id FROM conversations WHERE id IN (${exported.map((i) => `'${i}'`).join(', ')})`,
      );
      expect(remaining).toEqual([heldId]);
      expect(
        await n(database, `SELECT count(*) AS n FROM conversations WHERE tenant_id = '${tenantId}'`),
      ).toBe(total - expected.length);
      const receipt = await getReceipt(database, tenantId, { receiptId: done.receipt_id! });
      expect(verifyReceipt(receipt.document, await receiptJwks(database)).valid).toBe(true);
      expect(receipt.document.receipt.holds.map((h) => h.datasets)).toEqual([['conversations', 'messages']]);
      // Run again: nothing changes, the same receipt.
      expect((await runDeletion(deps, tenantId, deletion.id)).receipt_id).toBe(done.receipt_id);
    }, 120_000);

    // The CLI runs as a separate process: PostgreSQL only (an embedded database is one process's).
    it.runIf(dialect === 'postgres')(
      'ferry delete document plans, deletes the chunks with it, and refuses bad input in one line',
      async () => {
        const env = {
          ...process.env,
          ...t.env,
          FERRY_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'ferry-delete-cli-')),
          FERRY_SECRET_KEY: SECRET,
          FERRY_DEMO: 'off',
          LOG_LEVEL: 'silent',
        };
        const [doc] = await ids(
          database,
          `SELECT d.id::text AS id FROM documents d WHERE d.tenant_id = '${tenantId}' AND EXISTS (SELECT 1 FROM document_chunks c WHERE c.document_id = d.id) ORDER BY d.id LIMIT 1`,
        );
        const chunks = await n(
          database,
          `SELECT count(*) AS n FROM document_chunks WHERE document_id = '${doc}'`,
        );
        const dry = await runFerry(['delete', 'document', doc!, '--tenant', slug, '--dry-run', '--json'], {
          env,
        });
        expect(dry.code, dry.stderr).toBe(0);
        const plan = JSON.parse(dry.stdout) as { stores: { dataset: string; deleted: number }[] };
        expect(plan.stores.find((s) => s.dataset === 'document_chunks')?.deleted).toBe(chunks);
        expect(await n(database, `SELECT count(*) AS n FROM documents WHERE id = '${doc}'`)).toBe(1);

        const run = await runFerry(['delete', 'document', doc!, '--tenant', slug, '--json'], { env });
        expect(run.code, run.stderr).toBe(0);
        expect((JSON.parse(run.stdout) as Deletion).status).toBe('completed');
        expect(await n(database, `SELECT count(*) AS n FROM documents WHERE id = '${doc}'`)).toBe(0);
        expect(
          await n(database, `SELECT count(*) AS n FROM document_chunks WHERE document_id = '${doc}'`),
        ).toBe(0);

        const bad = await runFerry(
          ['delete', 'conversations', '--tenant', slug, '--filter', 'status=bogus'],
          { env },
        );
        expect(bad.code).not.toBe(0);
        expect(bad.stderr.trim().split('\n')).toHaveLength(1);
        expect(bad.stderr).toContain('status');
      },
      120_000,
    );
  });
}
