/**
 * Tenant backups against the real ceiling: one tenant of N messages on PostgreSQL.
 *
 * - full backup vs `pg_dump --data-only -Fc` of the same tables (which dumps every tenant of
 *   those tables: it cannot select one; here the database holds only this tenant, its best case);
 * - incremental backup after a 1 % change (new conversations and messages, edits of the most
 *   recent ones) vs the full: time and bytes written;
 * - restore into a freshly migrated schema vs `pg_restore --data-only --disable-triggers` of
 *   that dump into one, both timed without the migration;
 * - peak RSS of each Ferry run in its own process.
 *
 *   npx node bench/backup.ts
 *   BENCH_BACKUP_CONVERSATIONS=12500 npx node bench/backup.ts     # 100k messages
 *
 * Prints a Markdown table.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { backupTables } from '../src/backup/tables.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { seed } from '../src/seed/seed.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CONVERSATIONS = Number(process.env.BENCH_BACKUP_CONVERSATIONS ?? '125000');
const SECRET = randomBytes(32).toString('base64url');
const work = mkdtempSync(path.join(tmpdir(), 'ferry-bench-backup-'));
const schema = `ferry_bench_bak_${randomBytes(4).toString('hex')}`;
const targets: string[] = [];

const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
const database = postgresDatabase({ connectionString: PG_URL, schema });
const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

function ferry(job: Record<string, unknown>): Record<string, number> {
  const r = spawnSync(process.execPath, ['bench/backup-one.ts', JSON.stringify(job)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/backup-one.ts failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

async function migratedSchema(): Promise<string> {
  const name = `${schema}_r${targets.length}`;
  targets.push(name);
  await admin.exec(`CREATE SCHEMA ${name}`);
  const db = postgresDatabase({ connectionString: PG_URL, schema: name, max: 1 });
  await migrateToLatest(db.db);
  await db.close();
  return name;
}

try {
  await migrateToLatest(database.db);
  const now = new Date();
  const summary = await seed(database, {
    tenants: 1,
    conversations: CONVERSATIONS,
    messagesPerConversation: 8,
    seed: 11,
    since: new Date(now.getTime() - 365 * 86_400_000),
    until: now,
    secretKey: SECRET,
  });
  const tenant = summary.tenants[0]!.id;
  const messages = Number(
    (await sql<{ n: string }>`SELECT count(*) AS n FROM messages`.execute(database.db)).rows[0]!.n,
  );
  await database.exec('VACUUM ANALYZE');
  const tables = backupTables().map((t) => t.name);
  const dump = path.join(work, 'tenant.dump');
  const tableArgs = tables.flatMap((t) => ['-t', `${schema}.${t}`]);
  // Warm the cache for both sides alike.
  execFileSync('pg_dump', [PG_URL, '--data-only', '-Fc', '-Z', '1', ...tableArgs, '-f', dump]);
  let t0 = process.hrtime.bigint();
  execFileSync('pg_dump', [PG_URL, '--data-only', '-Fc', '-Z', '1', ...tableArgs, '-f', dump]);
  const pgDump = seconds(t0);
  const dumpBytes = statSync(dump).size;

  const repository = path.join(work, 'repository');
  const base = { url: PG_URL, schema, tenant, secret: SECRET, repository };
  const full = ferry({ ...base, action: 'backup' });

  // A 1 % change: new conversations with 8 messages each (1 % of the messages), and edits of the latest ones.
  const add = Math.max(1, Math.round(messages / 100 / 8));
  await sql`INSERT INTO conversations (id, tenant_id, site_id, session_id, start_timestamp, language, status, escalated,
      message_count, customer_message_count, ai_message_count, human_message_count, topics_detected, tags, custom_fields,
      created_at, last_updated)
    SELECT gen_random_uuid(), tenant_id, site_id, 'bench-' || g, now(), language, status, false, 8, 4, 4, 0, '{}', '{}', '{}', now(), now()
    FROM (SELECT * FROM conversations WHERE tenant_id = ${tenant} LIMIT 1) c, generate_series(1, ${add}) g`.execute(
    database.db,
  );
  await sql`INSERT INTO messages (id, tenant_id, conversation_id, created_at, sender_type, content, content_sources,
      source_relevance_scores, message_length, entities_extracted, custom_metadata, edited, updated_at)
    SELECT gen_random_uuid(), c.tenant_id, c.id, now() + (m || ' ms')::interval, 'customer', 'Nouveau message « ' || m || ' » 😀', '[]', '[]', 20, '[]', '{}', false, now()
    FROM conversations c, generate_series(1, 8) m WHERE c.tenant_id = ${tenant} AND c.session_id LIKE 'bench-%'`.execute(
    database.db,
  );
  await sql`UPDATE messages SET content = content || ' (edited)', edited = true WHERE id IN (
    SELECT id FROM messages WHERE tenant_id = ${tenant} AND conversation_id IN (
      SELECT id FROM conversations WHERE tenant_id = ${tenant} AND session_id NOT LIKE 'bench-%' ORDER BY created_at DESC LIMIT ${add}))`.execute(
    database.db,
  );
  const incremental = ferry({ ...base, action: 'backup' });

  const pgTarget = await migratedSchema();
  // pg_restore writes into the schema the dump names: rename the target there for the run.
  await admin.exec(
    `ALTER SCHEMA ${schema} RENAME TO ${schema}_live; ALTER SCHEMA ${pgTarget} RENAME TO ${schema}`,
  );
  t0 = process.hrtime.bigint();
  execFileSync('pg_restore', ['-d', PG_URL, '--data-only', '--disable-triggers', '-j', '1', dump]);
  const pgRestore = seconds(t0);
  await admin.exec(
    `ALTER SCHEMA ${schema} RENAME TO ${pgTarget}; ALTER SCHEMA ${schema}_live RENAME TO ${schema}`,
  );
  const restoreTarget = `${schema}_ferry`;
  targets.push(restoreTarget);
  const restore = ferry({ ...base, action: 'restore', target: restoreTarget });

  const mb = (b: number) => (b / 1048576).toFixed(1);
  const lines = [
    `${messages.toLocaleString('en-US')} messages, one tenant, PostgreSQL; ${tables.length} tables; seconds of one run each.`,
    '',
    '| what | Ferry s | reference | reference s | ratio | goal | peak RSS MB |',
    '|---|---:|---|---:|---:|---:|---:|',
    `| full backup (${mb(full.writtenBytes!)} MB written, ${full.chunks} chunks) | ${full.seconds!.toFixed(1)} | \`pg_dump --data-only -Fc -Z1\` (${mb(dumpBytes)} MB) | ${pgDump.toFixed(1)} | ${(pgDump / full.seconds!).toFixed(2)}x | ≥ 1.0x | ${full.maxRssMb} |`,
    `| incremental after a 1 % change: time | ${incremental.seconds!.toFixed(1)} | the full backup | ${full.seconds!.toFixed(1)} | ${((100 * incremental.seconds!) / full.seconds!).toFixed(1)} % | ≤ 5 % | ${incremental.maxRssMb} |`,
    `| incremental: bytes written (${incremental.newChunks} of ${incremental.chunks} chunks new) | ${mb(incremental.writtenBytes!)} MB | the full backup | ${mb(full.writtenBytes!)} MB | ${((100 * incremental.writtenBytes!) / full.writtenBytes!).toFixed(1)} % | ≤ 5 % | |`,
    `| restore into a migrated schema | ${restore.seconds!.toFixed(1)} | \`pg_restore --data-only --disable-triggers\` | ${pgRestore.toFixed(1)} | ${(pgRestore / restore.seconds!).toFixed(2)}x | ≥ 0.8x | ${restore.maxRssMb} |`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await database.close();
  for (const t of targets) await admin.exec(`DROP SCHEMA IF EXISTS ${t} CASCADE`).catch(() => {});
  await admin
    .exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE; DROP SCHEMA IF EXISTS ${schema}_live CASCADE`)
    .catch(() => {});
  await admin.close();
  rmSync(work, { recursive: true, force: true });
}
