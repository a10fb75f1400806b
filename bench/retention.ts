/**
 * Retention sweep against the real ceiling: one tenant on PostgreSQL with conversations of
 * 8 messages over two years, a policy that deletes conversations a year after they started.
 * The reference is what a database administrator would run instead: one
 * `DELETE FROM conversations WHERE tenant_id = … AND start_timestamp < …` (its messages go
 * by cascade), timed inside a transaction that is then rolled back, so the sweep deletes the
 * same rows afterwards. The sweep does the same work in batches of 5,000 rows, each its own
 * transaction, with the legal-hold condition and its counts.
 *
 *   npx node bench/retention.ts
 *   BENCH_RETENTION_CONVERSATIONS=50000 npx node bench/retention.ts
 *
 * Prints a Markdown table: seconds and the ratio raw ÷ sweep (1.00x = as fast as the raw DELETE).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { loadConfig } from '../src/config/config.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { createHold } from '../src/privacy/holds.ts';
import { cutoffOf, previewRetention, runRetentionSweep } from '../src/privacy/retention.ts';
import { effectiveRetention, putRetention } from '../src/privacy/retention-policies.ts';
import { seed } from '../src/seed/seed.ts';
import { openKeyring } from '../src/crypto/open-keyring.ts';
import { createObjectStore } from '../src/store/create-object-store.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CONVERSATIONS = Number(process.env.BENCH_RETENTION_CONVERSATIONS ?? '125000');
const SECRET = randomBytes(32).toString('base64url');

const dataDir = mkdtempSync(path.join(tmpdir(), 'ferry-bench-retention-'));
const schema = `ferry_bench_ret_${randomBytes(4).toString('hex')}`;
const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
const database = postgresDatabase({ connectionString: PG_URL, schema });
const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
try {
  await migrateToLatest(database.db);
  const now = new Date();
  const summary = await seed(database, {
    tenants: 1,
    conversations: CONVERSATIONS,
    messagesPerConversation: 8,
    seed: 3,
    since: new Date(now.getTime() - 730 * 86_400_000),
    until: now,
    secretKey: SECRET,
  });
  const tenantId = summary.tenants[0]!.id;
  await putRetention(
    database,
    tenantId,
    [{ dataset: 'conversations', keep: 'P1Y', after: 'created', action: 'delete' }],
    'bench',
  );
  // One hold on a single conversation, so the sweep pays for the hold condition as it would in use.
  const held = await sql<{
    id: string;
  }>`SELECT id FROM conversations ORDER BY start_timestamp LIMIT 1`.execute(database.db);
  await createHold(
    database,
    tenantId,
    { scope: 'conversation_ids', conversation_ids: [held.rows[0]!.id], reason: 'bench', matter: 'BENCH-1' },
    { actor: 'bench' },
  );
  await sql`ANALYZE`.execute(database.db);
  const tenant = await sql<{ id: string; timezone: string; status: string; closed_at: Date | null }>`
    SELECT id, timezone, status, closed_at FROM tenants WHERE id = ${tenantId}`.execute(database.db);
  const policy = (await effectiveRetention(database, tenantId)).find((p) => p.dataset === 'conversations')!;
  const cutoff = cutoffOf(policy, now, tenant.rows[0]!)!;
  const due = await sql<{ c: string; m: string }>`
    SELECT (SELECT count(*) FROM conversations WHERE start_timestamp < ${cutoff}) AS c,
      (SELECT count(*) FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE start_timestamp < ${cutoff})) AS m`.execute(
    database.db,
  );

  // The raw DELETE, rolled back.
  let raw = 0;
  await database.db
    .transaction()
    .execute(async (trx) => {
      const start = process.hrtime.bigint();
      await sql`DELETE FROM conversations WHERE tenant_id = ${tenantId} AND start_timestamp < ${cutoff}`.execute(
        trx,
      );
      raw = seconds(start);
      throw new Error('rollback');
    })
    .catch((err: Error) => {
      if (err.message !== 'rollback') throw err;
    });

  const storeConfig = loadConfig({ FERRY_DATA_DIR: dataDir, FERRY_DEMO: 'off' });
  const store = await createObjectStore(storeConfig, (await openKeyring(database, storeConfig)).keyring);
  let start = process.hrtime.bigint();
  const preview = await previewRetention({ database, store, now: () => now }, tenantId);
  const previewSeconds = seconds(start);
  start = process.hrtime.bigint();
  const sweep = await runRetentionSweep({ database, store, now: () => now }, tenantId, {
    trigger: 'manual',
    actor: 'bench',
  });
  const sweepSeconds = seconds(start);
  const deleted = sweep.datasets.conversations!.deleted;
  const planned = preview.datasets.find((d) => d.dataset === 'conversations')!.rows;
  if (deleted !== planned)
    throw new Error(`the sweep deleted ${deleted} conversations, the preview said ${planned}`);

  process.stdout.write(
    `${Number(due.rows[0]!.c).toLocaleString('en')} conversations (${Number(due.rows[0]!.m).toLocaleString('en')} messages) past a one-year policy, of ${CONVERSATIONS.toLocaleString('en')}; one held.\n\n`,
  );
  process.stdout.write('| what | seconds | ratio to the raw DELETE |\n|---|---:|---:|\n');
  process.stdout.write(
    `| \`DELETE FROM conversations WHERE tenant_id = … AND start_timestamp < …\` (one transaction) | ${raw.toFixed(2)} | 1.00x |\n`,
  );
  process.stdout.write(
    `| retention sweep (batches of 5,000, hold condition, counts) | ${sweepSeconds.toFixed(2)} | ${(raw / sweepSeconds).toFixed(2)}x |\n`,
  );
  process.stdout.write(
    `| retention preview (counts only) | ${previewSeconds.toFixed(2)} | ${(raw / previewSeconds).toFixed(2)}x |\n`,
  );
} finally {
  await database.close();
  await admin.exec(`DROP SCHEMA ${schema} CASCADE`);
  await admin.close();
  rmSync(dataDir, { recursive: true, force: true });
}
