import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/database.ts';
import type { EntityReport } from '../src/imports/engine.ts';
import {
  createImport,
  getImport,
  type ImportContext,
  rejectedFile,
  runImportById,
} from '../src/imports/service.ts';
import type { ImportSourceName } from '../src/imports/types.ts';
import { executeErasure } from '../src/privacy/erasure.ts';
import { resolveSubject } from '../src/privacy/subject.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import {
  COMPARED,
  COMPARED_WITH_REPORTS,
  comparePackages,
  emptyTenantLike,
  exportPackageDir,
  idMap,
  tenantFingerprint,
  testImportContext,
} from './support/imports.ts';

const SECRET = 'import-test-secret-key-0123456789abcdef';

async function run(
  ctx: ImportContext,
  tenantId: string,
  file: string,
  options: {
    source?: ImportSourceName;
    dryRun?: boolean;
    conflict?: Record<string, string>;
    allOrNothing?: boolean;
    dataset?: string;
  } = {},
) {
  const row = await createImport(ctx, {
    tenantId,
    source: options.source ?? 'ferry',
    dataset: options.dataset,
    input: { kind: 'path', path: file },
    dryRun: options.dryRun ?? false,
    conflict: { default: 'skip', ...options.conflict } as never,
    allOrNothing: options.allOrNothing ?? false,
    notify: false,
    actor: 'test',
  });
  return runImportById(ctx, row.id);
}

function totals(report: { entities: Partial<Record<string, EntityReport>> }) {
  const out = { created: 0, updated: 0, unchanged: 0, conflicts: 0, rejected: 0 };
  for (const r of Object.values(report.entities)) {
    if (!r) continue;
    out.created += r.created;
    out.updated += r.updated;
    out.unchanged += r.unchanged;
    out.conflicts += r.conflicts;
    out.rejected += r.rejected;
  }
  return out;
}

async function count(database: Database, table: string, tenantId: string): Promise<number> {
  const { rows } = await sql<{
    n: number;
  }>`SELECT count(*)::int AS n FROM ${sql.table(table)} WHERE tenant_id = ${tenantId}`.execute(database.db);
  return rows[0]!.n;
}

for (const dialect of DIALECTS) {
  describe(`import of a Ferry package (${dialect})`, () => {
    let t: TestDatabase;
    let database: Database;
    let ctx: ImportContext;
    let source: string;
    let pkg: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      database = t.database;
      ctx = testImportContext(database, 97);
      const summary = await seed(database, {
        tenants: 1,
        conversations: 40,
        messagesPerConversation: 6,
        seed: 31,
        since: new Date('2025-09-01T00:00:00Z'),
        until: new Date('2026-09-01T00:00:00Z'),
        secretKey: SECRET,
      });
      source = summary.tenants[0]!.id;
      pkg = await exportPackageDir(database, source);
    }, 180_000);

    afterAll(async () => {
      await t?.drop();
    });

    it('plans without writing, applies what it planned, and the tenant exports the same package again', async () => {
      const target = await emptyTenantLike(database, source);
      const before = await tenantFingerprint(database, target);
      const plan = await run(ctx, target, pkg, { dryRun: true });
      expect(plan.status, plan.error ?? '').toBe('completed');
      expect(await tenantFingerprint(database, target)).toEqual(before);
      const planned = totals(plan.report);
      expect(planned.created).toBeGreaterThan(300);
      expect(planned.rejected).toBe(0);
      expect(plan.report.entities.messages!.assigned.length).toBeGreaterThan(0);

      const applied = await run(ctx, target, pkg);
      expect(applied.status, applied.error ?? '').toBe('completed');
      // The plan is the apply's own code in a transaction that was rolled back: the counts agree.
      for (const entity of Object.keys(plan.report.entities) as (keyof typeof plan.report.entities)[]) {
        const p = plan.report.entities[entity]!;
        const a = applied.report.entities[entity]!;
        expect([a.created, a.updated, a.unchanged, a.conflicts, a.rejected], entity).toEqual([
          p.created,
          p.updated,
          p.unchanged,
          p.conflicts,
          p.rejected,
        ]);
      }
      expect(await count(database, 'messages', target)).toBe(await count(database, 'messages', source));
      expect(await count(database, 'conversations', target)).toBe(
        await count(database, 'conversations', source),
      );

      const again = await exportPackageDir(database, target);
      const ids = await idMap(database, target);
      ids.set(source, target);
      const revenue = await count(database, 'revenue_events', source);
      const { differences, compared } = comparePackages(
        pkg,
        again,
        ids,
        revenue === 0 ? COMPARED_WITH_REPORTS : COMPARED,
      );
      expect(differences).toEqual([]);
      expect(compared).toBeGreaterThan(60);

      // The same package again: everything unchanged, nothing written.
      const fingerprint = await tenantFingerprint(database, target);
      const second = await run(ctx, target, pkg);
      expect(second.status).toBe('completed');
      const t2 = totals(second.report);
      expect(t2).toEqual({ created: 0, updated: 0, unchanged: planned.created, conflicts: 0, rejected: 0 });
      expect(await tenantFingerprint(database, target)).toEqual(fingerprint);
    }, 180_000);

    it('imports its own package back into the tenant as unchanged', async () => {
      const before = await tenantFingerprint(database, source);
      const back = await run(ctx, source, pkg);
      expect(back.status, back.error ?? '').toBe('completed');
      const t2 = totals(back.report);
      expect(t2.created).toBe(0);
      expect(t2.conflicts).toBe(0);
      expect(t2.unchanged).toBeGreaterThan(300);
      const after = await tenantFingerprint(database, source);
      // Only the import map gained rows (the links); the data is as it was.
      expect({ ...after, import_map: '' }).toEqual({ ...before, import_map: '' });
    }, 120_000);
  });
}

describe('updates, conflicts and rejections (pglite)', () => {
  let t: TestDatabase;
  let database: Database;
  let ctx: ImportContext;
  let source: string;
  let target: string;

  beforeAll(async () => {
    t = await createTestDatabase('pglite');
    database = t.database;
    ctx = testImportContext(database, 50);
    const summary = await seed(database, {
      tenants: 1,
      conversations: 15,
      messagesPerConversation: 4,
      seed: 32,
      since: new Date('2025-09-01T00:00:00Z'),
      until: new Date('2026-09-01T00:00:00Z'),
      secretKey: SECRET,
    });
    source = summary.tenants[0]!.id;
    target = await emptyTenantLike(database, source);
    const first = await run(ctx, target, await exportPackageDir(database, source));
    expect(first.status, first.error ?? '').toBe('completed');
  }, 120_000);

  afterAll(async () => {
    await t?.drop();
  });

  const mapped = async (sourceId: string) => (await idMap(database, target)).get(sourceId)!;

  it('a newer export updates what changed and leaves the rest', async () => {
    const m = await sql<{
      id: string;
    }>`SELECT id FROM messages WHERE tenant_id = ${source} ORDER BY created_at, id LIMIT 1`.execute(
      database.db,
    );
    const messageId = m.rows[0]!.id;
    await sql`UPDATE messages SET content = 'Changed "at the source"\nline two 😀' WHERE id = ${messageId}`.execute(
      database.db,
    );
    const second = await run(ctx, target, await exportPackageDir(database, source));
    expect(second.status).toBe('completed');
    expect(second.report.entities.messages!.updated).toBe(1);
    expect(second.report.entities.messages!.created).toBe(0);
    expect(totals(second.report).updated).toBe(1);
    const copy = await sql<{
      content: string;
    }>`SELECT content FROM messages WHERE id = ${await mapped(messageId)}`.execute(database.db);
    expect(copy.rows[0]!.content).toBe('Changed "at the source"\nline two 😀');
  }, 60_000);

  it('a row changed on both sides is a conflict resolved by the policy', async () => {
    const c = await sql<{
      id: string;
    }>`SELECT id FROM conversations WHERE tenant_id = ${source} ORDER BY start_timestamp, id LIMIT 1`.execute(
      database.db,
    );
    const conversationId = c.rows[0]!.id;
    const copyId = await mapped(conversationId);
    await sql`UPDATE conversations SET satisfaction_feedback = 'source side', last_updated = now() WHERE id = ${conversationId}`.execute(
      database.db,
    );
    await sql`UPDATE conversations SET satisfaction_feedback = 'tenant side', last_updated = now() - interval '1 day' WHERE id = ${copyId}`.execute(
      database.db,
    );
    const pkg = await exportPackageDir(database, source);
    const feedback = async () =>
      (
        await sql<{
          f: string;
        }>`SELECT satisfaction_feedback AS f FROM conversations WHERE id = ${copyId}`.execute(database.db)
      ).rows[0]!.f;

    const failed = await run(ctx, target, pkg, { conflict: { default: 'fail' } });
    expect(failed.status).toBe('failed');
    expect(failed.error_code).toBe('import_conflict');
    expect(failed.error).toContain('satisfaction_feedback');

    const skipped = await run(ctx, target, pkg, { conflict: { conversations: 'skip' } });
    expect(skipped.report.entities.conversations!.conflicts).toBe(1);
    expect(skipped.report.entities.conversations!.conflict_samples[0]).toMatchObject({
      id: copyId,
      resolution: 'kept',
    });
    expect(skipped.report.entities.conversations!.conflict_samples[0]!.fields).toEqual(
      expect.arrayContaining(['satisfaction_feedback', 'last_updated']),
    );
    expect(await feedback()).toBe('tenant side');

    // The tenant's row is newer than the source's: newest_wins keeps it.
    await sql`UPDATE conversations SET last_updated = now() + interval '1 day' WHERE id = ${copyId}`.execute(
      database.db,
    );
    await sql`UPDATE conversations SET satisfaction_feedback = 'source again' WHERE id = ${conversationId}`.execute(
      database.db,
    );
    const pkg2 = await exportPackageDir(database, source);
    const kept = await run(ctx, target, pkg2, { conflict: { conversations: 'newest_wins' } });
    expect(kept.report.entities.conversations!.conflict_samples[0]!.resolution).toBe('kept');
    expect(await feedback()).toBe('tenant side');
    // Now the source's is newer.
    await sql`UPDATE conversations SET last_updated = now() + interval '2 days' WHERE id = ${conversationId}`.execute(
      database.db,
    );
    const pkg3 = await exportPackageDir(database, source);
    const taken = await run(ctx, target, pkg3, { conflict: { conversations: 'newest_wins' } });
    expect(taken.report.entities.conversations!.conflict_samples[0]!.resolution).toBe('overwritten');
    expect(await feedback()).toBe('source again');

    await sql`UPDATE conversations SET satisfaction_feedback = 'tenant edit' WHERE id = ${copyId}`.execute(
      database.db,
    );
    await sql`UPDATE conversations SET satisfaction_feedback = 'source final' WHERE id = ${conversationId}`.execute(
      database.db,
    );
    const over = await run(ctx, target, await exportPackageDir(database, source), {
      conflict: { default: 'overwrite' },
    });
    expect(over.report.entities.conversations!.conflicts).toBe(1);
    expect(await feedback()).toBe('source final');
  }, 120_000);

  it('a deleted row is not brought back by a later import', async () => {
    const c = await sql<{
      id: string;
    }>`SELECT id FROM customers WHERE tenant_id = ${source} ORDER BY created_at, id LIMIT 1`.execute(
      database.db,
    );
    const copyId = await mapped(c.rows[0]!.id);
    await sql`UPDATE conversations SET customer_id = NULL WHERE customer_id = ${copyId}`.execute(database.db);
    await sql`DELETE FROM consent_records WHERE customer_id = ${copyId}`.execute(database.db);
    await sql`DELETE FROM customers WHERE id = ${copyId}`.execute(database.db);
    await sql`UPDATE customers SET name = 'Renamed at source' WHERE id = ${c.rows[0]!.id}`.execute(
      database.db,
    );
    const again = await run(ctx, target, await exportPackageDir(database, source), {
      conflict: { default: 'overwrite' },
    });
    expect(again.status).toBe('completed');
    expect(again.report.entities.customers!.conflict_samples).toContainEqual(
      expect.objectContaining({ id: copyId, fields: ['(deleted in Ferry)'], resolution: 'kept deleted' }),
    );
    const n = await sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE id = ${copyId}`.execute(
      database.db,
    );
    expect(n.rows[0]!.n).toBe(0);
  }, 60_000);

  it('never brings back a person erased in Ferry, whatever the policy', async () => {
    // A customer with an email and a conversation that carries it, in the imported copy.
    const pick = await sql<{
      customer_id: string;
      email: string;
    }>`SELECT c.customer_id::text, cu.email FROM conversations c
      JOIN customers cu ON cu.id = c.customer_id
      WHERE c.tenant_id = ${source} AND cu.email IS NOT NULL AND lower(c.customer_email) = lower(cu.email)
      ORDER BY c.start_timestamp LIMIT 1`.execute(database.db);
    const { email } = pick.rows[0]!;
    const subject = await resolveSubject(database, target, { email });
    await executeErasure(
      { database, store: ctx.store, secretKey: ctx.secretKey },
      { tenantId: target, requestId: randomUUID(), subject },
    );
    const left = async () =>
      (
        await sql<{ customers: number; conversations: number }>`SELECT
          (SELECT count(*)::int FROM customers WHERE tenant_id = ${target} AND lower(email) = lower(${email})) AS customers,
          (SELECT count(*)::int FROM conversations WHERE tenant_id = ${target} AND lower(customer_email) = lower(${email})) AS conversations`.execute(
          database.db,
        )
      ).rows[0]!;
    expect(await left()).toEqual({ customers: 0, conversations: 0 });
    // A newer export in which the person's conversations changed, imported with overwrite, and
    // a map that no longer knows the person (as after a restore): the person stays erased.
    await sql`UPDATE conversations SET satisfaction_feedback = 'changed after the erasure', last_updated = now()
      WHERE tenant_id = ${source} AND lower(customer_email) = lower(${email})`.execute(database.db);
    await sql`DELETE FROM import_map WHERE tenant_id = ${target} AND entity = 'customers'`.execute(
      database.db,
    );
    const again = await run(ctx, target, await exportPackageDir(database, source), {
      conflict: { default: 'overwrite' },
    });
    expect(again.status, again.error ?? '').toBe('completed');
    expect(await left()).toEqual({ customers: 0, conversations: 0 });
    const refused = Object.values(again.report.entities).flatMap((r) => r!.rejected_samples);
    expect(refused.some((x) => x.errors.some((e) => e.includes('erased in Ferry')))).toBe(true);
    expect(again.report.entities.customers!.rejected).toBeGreaterThan(0);
    expect(again.report.entities.conversations!.rejected).toBeGreaterThan(0);
  }, 60_000);

  it('partial import takes the valid rows and writes the rest to a rejected file; all-or-nothing writes nothing', async () => {
    const convs = await sql<{
      id: string;
    }>`SELECT id FROM conversations WHERE tenant_id = ${source} ORDER BY start_timestamp, id LIMIT 2`.execute(
      database.db,
    );
    const header =
      'message_id,conversation_id,timestamp,sender_type,sender_id,message_content,confidence_score,processing_time_ms,tokens_used,content_sources,source_relevance_scores,message_length,language_detected,sentiment_score,intent_classification,entities_extracted,custom_metadata,edited';
    const good = (id: string, text: string) =>
      `${id},${convs.rows[0]!.id},2026-05-01T10:00:00.123456Z,customer,,"${text}",,,,[],[],${text.length},en,,,[],{},false`;
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-import-csv-')), 'messages.csv');
    writeFileSync(
      file,
      [
        header,
        good('0b6f3c1e-1111-4aaa-8aaa-000000000001', 'Hello ""quoted"", =1+1 and a\nnewline'),
        // A sender type the schema does not allow.
        `0b6f3c1e-1111-4aaa-8aaa-000000000002,${convs.rows[1]!.id},2026-05-01T10:00:00Z,robot,,hi,,,,[],[],2,en,,,[],{},false`,
        // A conversation that was never imported.
        `0b6f3c1e-1111-4aaa-8aaa-000000000003,7b0c0000-0000-4000-8000-000000000000,2026-05-01T10:00:00Z,customer,,hi,,,,[],[],2,en,,,[],{},false`,
        // A time that is not one.
        `0b6f3c1e-1111-4aaa-8aaa-000000000004,${convs.rows[1]!.id},yesterday,customer,,hi,,,,[],[],2,en,,,[],{},false`,
        good('0b6f3c1e-1111-4aaa-8aaa-000000000005', 'Second good one'),
        '',
      ].join('\n'),
    );
    // Into the source tenant: the file's conversation ids are its own rows.
    const before = await tenantFingerprint(database, source);
    const all = await run(ctx, source, file, { source: 'csv', allOrNothing: true });
    expect(all.status).toBe('failed');
    expect(all.error_code).toBe('import_rejected');
    expect(all.rejected_count).toBe(3);
    expect(await tenantFingerprint(database, source)).toEqual(before);

    const partial = await run(ctx, source, file, { source: 'csv' });
    expect(partial.status).toBe('completed');
    expect(partial.report.entities.messages).toMatchObject({ created: 2, rejected: 3 });
    const rejected = await rejectedFile(database.db, (await getImport(database.db, source, partial.id))!);
    let text = '';
    for await (const chunk of rejected.body) text += chunk;
    const lines = text.trim().split('\n');
    expect(lines[0]).toBe(`${header},errors`);
    expect(lines).toHaveLength(4);
    expect(text).toContain('robot');
    expect(text).toMatch(
      /conversation_id: conversations 7b0c0000-0000-4000-8000-000000000000 is not imported/,
    );
    expect(text).toMatch(/created_at: expected an ISO 8601 time, got ""yesterday""/);
    expect(text).not.toMatch(/created_at: required/);
    const newId = (await idMap(database, source)).get('0b6f3c1e-1111-4aaa-8aaa-000000000001')!;
    const stored = await sql<{
      content: string;
      created_at: string;
    }>`SELECT content, created_at::text FROM messages WHERE id = ${newId}`.execute(database.db);
    expect(stored.rows[0]!.content).toBe('Hello "quoted", =1+1 and a\nnewline');
    expect(stored.rows[0]!.created_at).toBe('2026-05-01 10:00:00.123456+00');
  }, 60_000);
});
