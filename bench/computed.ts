/**
 * Computed datasets (`analytics` at every granularity, `revenue_attribution`) against the raw
 * data they are computed from: the sum of psql `\copy (SELECT * FROM <table> WHERE tenant_id = …)`
 * of each table the report reads, in the same run.
 *
 *   npx node bench/computed.ts                                    # 160k and 1M messages, PGlite 160k
 *   BENCH_COMPUTED_MESSAGES=160000 BENCH_PGLITE_MESSAGES=0 npx node bench/computed.ts
 *   BENCH_COMPUTED_CASES='analytics weekly,revenue_attribution last_touch' npx node bench/computed.ts
 *
 * The fixtures are the export benchmark's (bench/export.ts): a schema `ferry_bench_<N>` of one
 * tenant with 8 messages per conversation over a year, and `bench/out/pglite-<N>` for PGlite;
 * both are reused between runs. Ratio = raw dump seconds / Ferry seconds (goal ≥ 0.5, at most
 * twice the time of the dumps); a PGlite row's goal is at most 5 times the PostgreSQL Ferry
 * time of the same case and size. Each export (CSV, full PII) runs in its own process
 * (bench/export-one.ts), so its peak RSS is its own.
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pgFixture, pgliteFixture, runFerry } from './export.ts';
import { PG_URL, rawDumpSeconds } from './raw-dump.ts';

const SIZES = (process.env.BENCH_COMPUTED_MESSAGES ?? '160000,1000000').split(',').map(Number);
const PGLITE_SIZE = Number(process.env.BENCH_PGLITE_MESSAGES ?? '160000');
const OUT = path.resolve('bench/out');
/** The seeded year (see `benchSeed`), as the days a dated export asks for. */
const YEAR = { from: '2025-11-01', to: '2026-10-31' };

interface Case {
  name: string;
  dataset: 'analytics' | 'revenue_attribution';
  parameters: Record<string, string>;
}

const ANALYTICS_TABLES = ['conversations', 'messages', 'revenue_events'];
const ATTRIBUTION_TABLES = ['revenue_events', 'conversations'];

const ALL_CASES: Case[] = [
  ...['hourly', 'daily', 'weekly', 'monthly'].map(
    (granularity): Case => ({
      name: `analytics ${granularity}`,
      dataset: 'analytics',
      parameters: { granularity },
    }),
  ),
  // A dated report, as in a company package: one statement over the year, which also looks back
  // before it (returning visitors).
  {
    name: 'analytics daily over one year',
    dataset: 'analytics',
    parameters: { granularity: 'daily', ...YEAR },
  },
  ...['first_touch', 'last_touch', 'multi_touch'].map(
    (model): Case => ({
      name: `revenue_attribution ${model}`,
      dataset: 'revenue_attribution',
      parameters: { attribution_model: model },
    }),
  ),
  {
    name: 'revenue_attribution last_touch over one year',
    dataset: 'revenue_attribution',
    parameters: { attribution_model: 'last_touch', ...YEAR },
  },
];
const ONLY = process.env.BENCH_COMPUTED_CASES?.split(',').map((c) => c.trim());
const CASES = ALL_CASES.filter((c) => !ONLY || ONLY.includes(c.name));

const tablesOf = (c: Case) => (c.dataset === 'analytics' ? ANALYTICS_TABLES : ATTRIBUTION_TABLES);

/** One report as CSV with full personal data, in its own process (bench/export-one.ts); the file is removed. */
function runCase(database: Record<string, string>, tenant: string, c: Case, out: string) {
  const r = runFerry({
    database,
    tenant,
    dataset: c.dataset,
    format: 'csv',
    pii: 'full',
    parameters: c.parameters,
    out,
  });
  rmSync(out, { force: true });
  return r;
}

interface Row {
  database: 'postgres' | 'pglite';
  messages: number;
  case: string;
  ferrySeconds: number;
  rawSeconds: number;
  records: number;
  maxRssMb: number;
  /** PGlite rows: the PostgreSQL Ferry seconds of the same case and size. */
  postgresSeconds?: number;
}

async function main(): Promise<void> {
  const files = path.join(OUT, 'files-computed');
  rmSync(files, { recursive: true, force: true });
  mkdirSync(files, { recursive: true });
  const rows: Row[] = [];
  const pgSizes = PGLITE_SIZE > 0 && !SIZES.includes(PGLITE_SIZE) ? [PGLITE_SIZE, ...SIZES] : SIZES;
  const rawBySize = new Map<number, Map<string, number>>();
  for (const messages of pgSizes) {
    const { schema, tenant } = await pgFixture(messages);
    const dump = path.join(files, 'raw.csv');
    // Each table once to warm the cache, then timed.
    const raw = new Map<string, number>();
    for (const table of new Set([...ANALYTICS_TABLES, ...ATTRIBUTION_TABLES])) {
      rawDumpSeconds(schema, tenant, table, dump);
      raw.set(table, rawDumpSeconds(schema, tenant, table, dump));
    }
    rmSync(dump, { force: true });
    rawBySize.set(messages, raw);
    if (!SIZES.includes(messages)) continue;
    for (const c of CASES) {
      const out = path.join(files, `${c.dataset}.csv`);
      const r = runCase({ kind: 'postgres', url: PG_URL, schema }, tenant, c, out);
      const rawSeconds = tablesOf(c).reduce((sum, t) => sum + raw.get(t)!, 0);
      rows.push({ database: 'postgres', messages, case: c.name, ferrySeconds: r.seconds, rawSeconds, ...r });
      process.stderr.write(`postgres ${messages} ${c.name}: ${r.seconds.toFixed(2)} s\n`);
    }
  }
  if (PGLITE_SIZE > 0) {
    const { dir, tenant } = await pgliteFixture(PGLITE_SIZE);
    const raw = rawBySize.get(PGLITE_SIZE)!;
    for (const c of CASES) {
      const out = path.join(files, `pglite-${c.dataset}.csv`);
      const r = runCase({ kind: 'pglite', dir }, tenant, c, out);
      const postgres = rows.find(
        (x) => x.database === 'postgres' && x.messages === PGLITE_SIZE && x.case === c.name,
      );
      const rawSeconds = tablesOf(c).reduce((sum, t) => sum + raw.get(t)!, 0);
      rows.push({
        database: 'pglite',
        messages: PGLITE_SIZE,
        case: c.name,
        ferrySeconds: r.seconds,
        rawSeconds,
        ...r,
        ...(postgres ? { postgresSeconds: postgres.ferrySeconds } : {}),
      });
      process.stderr.write(`pglite ${PGLITE_SIZE} ${c.name}: ${r.seconds.toFixed(2)} s\n`);
    }
  }
  const goal = (r: Row) => {
    if (r.database === 'postgres')
      return `≥ 0.5x: ${r.rawSeconds / r.ferrySeconds >= 0.5 ? 'met' : 'missed'}`;
    if (r.postgresSeconds === undefined) return '≤ 5x PostgreSQL: -';
    const times = r.ferrySeconds / r.postgresSeconds;
    return `≤ 5x PostgreSQL: ${times.toFixed(1)}x, ${times <= 5 ? 'met' : 'missed'}`;
  };
  const table = [
    '| database | messages | report | rows | Ferry s | sum of raw dumps s | ratio (raw/Ferry) | goal | peak RSS MB |',
    '|---|---:|---|---:|---:|---:|---:|---|---:|',
    ...rows.map(
      (r) =>
        `| ${r.database} | ${r.messages.toLocaleString('en')} | ${r.case} | ${r.records.toLocaleString('en')} | ${r.ferrySeconds.toFixed(2)} | ${r.rawSeconds.toFixed(2)} | ${(r.rawSeconds / r.ferrySeconds).toFixed(2)}x | ${goal(r)} | ${r.maxRssMb} |`,
    ),
  ].join('\n');
  process.stdout.write(`${table}\n`);
}

await main();
