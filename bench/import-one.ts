/**
 * One measured import in its own process, so its peak RSS is its own.
 * Usage: node bench/import-one.ts '<json>' — prints one JSON line.
 */
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { createImport, runImportById } from '../src/imports/service.ts';
import { DEFAULT_IMPORT_LIMITS } from '../src/imports/types.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';

interface Job {
  url: string;
  schema: string;
  tenant: string;
  /** The package (folder, ZIP or tar.gz). */
  input: string;
  store: string;
  batchSize?: number;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const database = postgresDatabase({ connectionString: job.url, schema: job.schema, max: 4 });
const ctx = {
  database,
  store: new LocalObjectStore({ root: job.store }),
  secretKey: 'bench-import-secret-key-0123456789abcdef',
  limits: DEFAULT_IMPORT_LIMITS,
  batchSize: job.batchSize ?? 2000,
};
const started = process.hrtime.bigint();
const created = await createImport(ctx, {
  tenantId: job.tenant,
  source: 'ferry',
  input: { kind: 'path', path: job.input },
  dryRun: false,
  conflict: { default: 'skip' },
  allOrNothing: false,
  notify: false,
  actor: 'bench',
});
const row = await runImportById(ctx, created.id);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await database.close();
if (row.status !== 'completed') throw new Error(`import ${row.status}: ${row.error}`);
const totals = { created: 0, updated: 0, unchanged: 0, rejected: 0 };
for (const r of Object.values(row.report.entities)) {
  if (!r) continue;
  totals.created += r.created;
  totals.updated += r.updated;
  totals.unchanged += r.unchanged;
  totals.rejected += r.rejected;
}
process.stdout.write(
  `${JSON.stringify({ seconds, items: row.items_done, ...totals, maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`,
);
