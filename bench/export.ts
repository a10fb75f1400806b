/**
 * Export benchmark: Ferry against the raw dump of the same rows, side by side in one run.
 *
 *   npm run bench                                  # 1M messages on PostgreSQL, 100k on PGlite
 *   BENCH_MESSAGES=1000000,10000000 npm run bench  # the sizes in docs/benchmarks.md
 *
 * Two references per case, each measured just before the Ferry run:
 * - the raw dump (bench/raw-dump.ts): `\copy (select * from messages where tenant_id = …) to
 *   file csv header`, what a database administrator would run instead. The ratio to it is the
 *   goal's ratio.
 * - psql `\copy` of exactly the statement Ferry streams for the case (same projection, rows and
 *   order), which isolates the Node side: a ratio near 1.0 to it means the time is in the SQL.
 * The company package is compared with the sum of the raw dumps of every tenant table.
 *
 * Ratios are reference seconds / Ferry seconds (1.0 = as fast as the reference; higher is faster).
 * Each Ferry run is its own process, so its peak RSS is reported alone.
 *
 * The fixtures are migrated to this checkout's migrations. A branch with a migration main does
 * not have yet benchmarks on fixtures of its own (`BENCH_SCHEMA_PREFIX=ferry_bench_mine` gives
 * `ferry_bench_mine_<N>`): main's migrator refuses a schema that holds a migration it lacks.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { copySql } from '../src/db/database.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { buildExportQuery } from '../src/collect/query.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { getWriter } from '../src/format/registry.ts';
import { seed } from '../src/seed/seed.ts';
import { PG_URL, psqlSeconds, rawDumpSeconds, rawDumpsSeconds, TENANT_TABLES } from './raw-dump.ts';
const SIZES = (process.env.BENCH_MESSAGES ?? '1000000').split(',').map(Number);
const PGLITE_SIZE = Number(process.env.BENCH_PGLITE_MESSAGES ?? '100000');
const OUT = path.resolve('bench/out');
const MESSAGES_PER_CONVERSATION = 8;

interface Case {
  name: string;
  format: string;
  compression?: string;
  pii?: string;
  package?: 'zip';
  /** The whole company package (every dataset), compared with the raw dumps of every tenant table. */
  companyPackage?: 'zip';
  goal: number | null;
}

/** `BENCH_CASES=CSV,Parquet` runs only the cases whose names are listed. */
const ONLY = process.env.BENCH_CASES?.split(',').map((c) => c.trim());

const ALL_CASES: Case[] = [
  { name: 'CSV', format: 'csv', goal: 0.8 },
  { name: 'NDJSON', format: 'ndjson', goal: 0.6 },
  { name: 'CSV + zstd', format: 'csv', compression: 'zstd', goal: 0.7 },
  { name: 'CSV + gzip', format: 'csv', compression: 'gzip', goal: 0.4 },
  { name: 'ZIP package (messages.csv)', format: 'csv', package: 'zip', goal: 0.5 },
  { name: 'Parquet', format: 'parquet', goal: 0.5 },
  { name: 'CSV anonymized (complete)', format: 'csv', pii: 'complete', goal: 0.35 },
  { name: 'JSON', format: 'json', goal: null },
  { name: 'XML', format: 'xml', goal: null },
  { name: 'company package (ZIP)', format: 'csv', companyPackage: 'zip', goal: 0.3 },
];
const CASES = ALL_CASES.filter((c) => !ONLY || ONLY.includes(c.name));

/** A PostgreSQL schema holding exactly `messages` seeded messages (reused between runs). */
export async function pgFixture(messages: number): Promise<{ schema: string; tenant: string }> {
  const schema = `${process.env.BENCH_SCHEMA_PREFIX ?? 'ferry_bench'}_${messages}`;
  const admin = postgresDatabase({ connectionString: PG_URL, max: 1 });
  await admin.exec(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await admin.close();
  const database = postgresDatabase({ connectionString: PG_URL, schema, max: 4 });
  try {
    await migrateToLatest(database.db);
    const existing = await database.db.selectFrom('tenants').select('id').executeTakeFirst();
    if (existing) return { schema, tenant: existing.id };
    process.stderr.write(`seeding ${messages} messages into PostgreSQL schema ${schema}...\n`);
    const summary = await seed(database, benchSeed(messages));
    await database.exec('ANALYZE');
    return { schema, tenant: summary.tenants[0]!.id };
  } finally {
    await database.close();
  }
}

function benchSeed(messages: number) {
  const until = new Date('2026-11-01T00:00:00Z');
  return {
    tenants: 1,
    conversations: Math.round(messages / MESSAGES_PER_CONVERSATION),
    messagesPerConversation: MESSAGES_PER_CONVERSATION,
    seed: 1,
    since: new Date(until.getTime() - 365 * 86_400_000),
    until,
  };
}

export async function pgliteFixture(messages: number): Promise<{ dir: string; tenant: string }> {
  const dir = path.join(OUT, `pglite-${messages}`);
  mkdirSync(dir, { recursive: true });
  const database = await pgliteDatabase({ dataDir: dir });
  try {
    await migrateToLatest(database.db);
    const existing = await database.db.selectFrom('tenants').select('id').executeTakeFirst();
    if (existing) return { dir, tenant: existing.id };
    process.stderr.write(`seeding ${messages} messages into PGlite...\n`);
    const summary = await seed(database, benchSeed(messages));
    await sql`ANALYZE`.execute(database.db);
    return { dir, tenant: summary.tenants[0]!.id };
  } finally {
    await database.close();
  }
}

/** psql \copy of exactly the statement Ferry streams for the case (its projection, rows and order). */
function statementSeconds(schema: string, tenant: string, c: Case, file: string): number {
  const request = parseExportRequest({
    tenantId: tenant,
    dataset: 'messages',
    format: c.format,
    pii: c.pii ?? 'full',
    csvGuard: true,
  });
  const query = buildExportQuery(REFERENCE_DATAMAP.datasets.messages!, request, {
    timezone: 'UTC',
    dayZone: 'UTC',
    anonymizeKey: '0'.repeat(32),
    input: getWriter(request.format).input,
  });
  const statement = copySql(query)
    .replace(/^COPY /, '\\copy ')
    .replace(' TO STDOUT ', ` TO '${file}' `);
  return psqlSeconds(schema, statement.replace(/\s+/g, ' '));
}

/** The case's references: the raw dump of the rows it reads, and (for one dataset) its own statement. */
function references(
  schema: string,
  tenant: string,
  c: Case,
  file: string,
): { raw: number; statement: number | null } {
  if (c.companyPackage) return { raw: rawDumpsSeconds(schema, tenant, TENANT_TABLES, file), statement: null };
  const statement = statementSeconds(schema, tenant, c, file);
  return { raw: rawDumpSeconds(schema, tenant, 'messages', file), statement };
}

export function runFerry(job: Record<string, unknown>): {
  seconds: number;
  records: number;
  bytes: number;
  maxRssMb: number;
} {
  const result = spawnSync(process.execPath, ['bench/export-one.ts', JSON.stringify(job)], {
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`export failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split('\n').pop()!);
}

interface Row {
  database: string;
  messages: number;
  case: string;
  ratio: number;
  goal: number | null;
  ferrySeconds: number;
  referenceSeconds: number;
  statementSeconds: number | null;
  rowsPerSecond: number;
  maxRssMb: number;
  bytes: number;
}

const TABLE_HEAD = [
  '| database | messages | export | ratio to raw dump | goal | ratio to same statement | Ferry s | raw dump s | statement s | rows/s | peak RSS MB | output MB |',
  '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
].join('\n');

/** One row of the results table, printed as soon as its case has run (a stopped run keeps what it measured). */
function printRow(r: Row): void {
  const statement =
    r.statementSeconds === null ? '-' : `${(r.statementSeconds / r.ferrySeconds).toFixed(2)}x`;
  process.stdout.write(
    `| ${r.database} | ${r.messages.toLocaleString('en')} | ${r.case} | ${r.ratio.toFixed(2)}x | ${r.goal === null ? '-' : `≥ ${r.goal}x`} | ${statement} | ${r.ferrySeconds.toFixed(2)} | ${r.referenceSeconds.toFixed(2)} | ${r.statementSeconds === null ? '-' : r.statementSeconds.toFixed(2)} | ${Math.round(r.rowsPerSecond).toLocaleString('en')} | ${r.maxRssMb} | ${(r.bytes / 1e6).toFixed(1)} |\n`,
  );
  process.stderr.write(`${r.database} ${r.messages} ${r.case}: ${r.ratio.toFixed(2)}x, ${r.maxRssMb} MB\n`);
}

async function main(): Promise<void> {
  process.stdout.write(`${TABLE_HEAD}\n`);
  rmSync(path.join(OUT, 'files'), { recursive: true, force: true });
  mkdirSync(path.join(OUT, 'files'), { recursive: true });
  const rows: Row[] = [];
  for (const messages of SIZES) {
    const { schema, tenant } = await pgFixture(messages);
    const refFile = path.join(OUT, 'files', 'reference.csv');
    rawDumpSeconds(schema, tenant, 'messages', refFile); // warm the cache
    for (const c of CASES) {
      const reference = references(schema, tenant, c, refFile);
      const file = path.join(OUT, 'files', `ferry-${c.format}`);
      const r = runFerry({
        database: { kind: 'postgres', url: PG_URL, schema },
        tenant,
        dataset: 'messages',
        ...c,
        out: file,
      });
      rows.push({
        database: 'postgres',
        messages,
        case: c.name,
        ratio: reference.raw / r.seconds,
        goal: c.goal,
        ferrySeconds: r.seconds,
        referenceSeconds: reference.raw,
        statementSeconds: reference.statement,
        rowsPerSecond: r.records / r.seconds,
        maxRssMb: r.maxRssMb,
        bytes: r.bytes,
      });
      rmSync(file, { recursive: true, force: true });
      printRow(rows.at(-1)!);
    }
  }
  if (PGLITE_SIZE > 0) {
    const { schema, tenant: pgTenant } = await pgFixture(PGLITE_SIZE);
    const { dir, tenant } = await pgliteFixture(PGLITE_SIZE);
    const refFile = path.join(OUT, 'files', 'reference.csv');
    for (const c of CASES.filter((x) => !x.companyPackage)) {
      const reference = references(schema, pgTenant, c, refFile);
      const file = path.join(OUT, 'files', `ferry-pglite-${c.format}`);
      const r = runFerry({ database: { kind: 'pglite', dir }, tenant, dataset: 'messages', ...c, out: file });
      rows.push({
        database: 'pglite',
        messages: PGLITE_SIZE,
        case: c.name,
        ratio: reference.raw / r.seconds,
        goal: null,
        ferrySeconds: r.seconds,
        referenceSeconds: reference.raw,
        statementSeconds: reference.statement,
        rowsPerSecond: r.records / r.seconds,
        maxRssMb: r.maxRssMb,
        bytes: r.bytes,
      });
      rmSync(file, { recursive: true, force: true });
      printRow(rows.at(-1)!);
    }
  }
}

// Run when started as a script; other benchmarks import its fixtures.
if (import.meta.main) await main();
