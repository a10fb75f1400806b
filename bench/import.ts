/**
 * Imports against the real ceiling: a Ferry company package of one tenant of N messages,
 * imported into an empty tenant on PostgreSQL, compared in the same run with what an
 * operator would do instead, `psql \copy … FROM` of the same rows (the package's
 * messages.csv and the conversations as CSV, into typed tables with no index or constraint:
 * no validation, no ids mapped, nothing idempotent).
 *
 * - first import (everything created) vs the `\copy` loads;
 * - the same package again (everything unchanged) vs the first import;
 * - peak RSS of each import in its own process.
 *
 *   npx node bench/import.ts
 *   BENCH_IMPORT_CONVERSATIONS=12500 npx node bench/import.ts     # 100k messages
 *
 * Prints a Markdown table.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CONVERSATIONS = Number(process.env.BENCH_IMPORT_CONVERSATIONS ?? '125000');
const SECRET = randomBytes(32).toString('base64url');
const work = mkdtempSync(path.join(tmpdir(), 'ferry-bench-import-'));
const schema = `ferry_bench_imp_${randomBytes(4).toString('hex')}`;

const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
await admin.exec(`CREATE SCHEMA ${schema}`);
const database = postgresDatabase({ connectionString: PG_URL, schema });
const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

function ferry(job: Record<string, unknown>): Record<string, number> {
  const r = spawnSync(process.execPath, ['bench/import-one.ts', JSON.stringify(job)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/import-one.ts failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

function psql(command: string): number {
  const t0 = process.hrtime.bigint();
  execFileSync(
    'psql',
    [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qc', `SET search_path TO ${schema}`, '-c', command],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  return seconds(t0);
}

try {
  await migrateToLatest(database.db);
  const now = new Date();
  const summary = await seed(database, {
    tenants: 1,
    conversations: CONVERSATIONS,
    messagesPerConversation: 8,
    seed: 12,
    since: new Date(now.getTime() - 365 * 86_400_000),
    until: now,
    secretKey: SECRET,
  });
  const tenant = summary.tenants[0]!.id;
  const messages = Number(
    (await sql<{ n: string }>`SELECT count(*) AS n FROM messages`.execute(database.db)).rows[0]!.n,
  );
  const pkgDir = path.join(work, 'package');
  const outcome = await exportCompanyPackage(
    database,
    {
      tenantId: tenant,
      kind: 'directory',
      pii: 'full',
      datasets: ['account', 'team_members', 'customers', 'conversations', 'messages'],
    },
    { dir: pkgDir },
  );
  const pkg = path.join(pkgDir, outcome.root);
  const conversationsCsv = path.join(work, 'conversations.csv');
  const out = createWriteStream(conversationsCsv);
  await exportDataset(
    database,
    parseExportRequest({
      tenantId: tenant,
      dataset: 'conversations',
      format: 'csv',
      pii: 'full',
      csvGuard: true,
    }),
    out,
  );
  if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
  await database.exec('VACUUM ANALYZE');

  // The reference: typed tables shaped like the CSV files, loaded with \copy.
  await database.exec(`
    CREATE TABLE ref_messages (message_id uuid, conversation_id uuid, "timestamp" timestamptz, sender_type text, sender_id text,
      message_content text, confidence_score float8, processing_time_ms int, tokens_used int, content_sources jsonb,
      source_relevance_scores jsonb, message_length int, language_detected text, sentiment_score float8,
      intent_classification text, entities_extracted jsonb, custom_metadata jsonb, edited boolean);
    CREATE TABLE ref_conversations (conversation_id uuid, tenant_id uuid, session_id text, start_timestamp timestamptz,
      end_timestamp timestamptz, site_url text, page_url text, referrer text, customer_email text, customer_name text,
      ip_address text, country text, language text, user_agent text, conversation_status text, escalated boolean,
      escalation_reason text, resolution_time_minutes int, satisfaction_score int, satisfaction_feedback text,
      ai_confidence_avg float8, message_count int, customer_message_count int, ai_message_count int, human_message_count int,
      topics_detected jsonb, full_transcript text, internal_notes text, tags jsonb, custom_fields jsonb, last_updated timestamptz,
      customer_id uuid, assigned_agent_id uuid);`);
  // Warm both sides alike, then measure.
  psql(`\\copy ref_messages FROM '${path.join(pkg, 'messages.csv')}' csv header`);
  await database.exec('TRUNCATE ref_messages');
  const copyMessages = psql(`\\copy ref_messages FROM '${path.join(pkg, 'messages.csv')}' csv header`);
  const copyConversations = psql(`\\copy ref_conversations FROM '${conversationsCsv}' csv header`);
  const reference = copyMessages + copyConversations;

  const target = randomUUID();
  await sql`INSERT INTO tenants (id, name, slug, plan, timezone, home_country)
    SELECT ${target}, name, 'bench-import', plan, timezone, home_country FROM tenants WHERE id = ${tenant}`.execute(
    database.db,
  );
  const job = { url: PG_URL, schema, tenant: target, input: pkg, store: path.join(work, 'store') };
  const first = ferry(job);
  const second = ferry(job);

  const lines = [
    `${messages.toLocaleString('en-US')} messages in ${CONVERSATIONS.toLocaleString('en-US')} conversations, one tenant, PostgreSQL; seconds of one run each.`,
    '',
    '| what | Ferry s | reference | reference s | ratio | goal | peak RSS MB |',
    '|---|---:|---|---:|---:|---:|---:|',
    `| import of the package into an empty tenant (${first.created!.toLocaleString('en-US')} rows created) | ${first.seconds!.toFixed(1)} | \`psql \\copy … FROM\` of messages.csv and the conversations CSV | ${reference.toFixed(1)} | ${(reference / first.seconds!).toFixed(2)}x | ≥ 0.5x | ${first.maxRssMb} |`,
    `| the same package again (${second.unchanged!.toLocaleString('en-US')} unchanged, ${second.created! + second.updated!} written) | ${second.seconds!.toFixed(1)} | the first import | ${first.seconds!.toFixed(1)} | ${((100 * second.seconds!) / first.seconds!).toFixed(0)} % | < 33 % | ${second.maxRssMb} |`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await database.close();
  await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
  await admin.close();
  rmSync(work, { recursive: true, force: true });
}
