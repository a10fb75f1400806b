/**
 * One measured export in its own process, so peak RSS belongs to this export alone.
 * Usage: tsx bench/export-one.ts '<json>' — prints one JSON line {seconds, records, bytes, maxRssMb}.
 */
import { createWriteStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import type { Database } from '../src/db/database.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { createPackageWriter } from '../src/packaging/archive.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';

interface Job {
  database: { kind: 'postgres'; url: string; schema: string } | { kind: 'pglite'; dir: string };
  tenant: string;
  dataset: string;
  format: string;
  compression?: string;
  pii?: string;
  package?: 'zip';
  /** The whole company package of the tenant instead of one dataset. */
  companyPackage?: 'zip';
  /** Dataset parameters and filters by name (analytics granularity, attribution model, from, to). */
  parameters?: Record<string, string>;
  out: string;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const database: Database =
  job.database.kind === 'postgres'
    ? postgresDatabase({ connectionString: job.database.url, schema: job.database.schema, max: 2 })
    : await pgliteDatabase({ dataDir: job.database.dir });

const request = parseExportRequest({
  tenantId: job.tenant,
  dataset: job.dataset,
  format: job.format,
  compression: job.compression,
  pii: job.pii ?? 'full',
  csvGuard: true,
  ...(job.parameters ? { options: job.parameters } : {}),
});
const started = process.hrtime.bigint();
let records = 0;
let bytes = 0;
if (job.companyPackage) {
  const out = createWriteStream(job.out);
  const outcome = await exportCompanyPackage(
    database,
    { tenantId: job.tenant, kind: job.companyPackage, pii: 'full' },
    out,
  );
  if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
  records = outcome.records;
  bytes = outcome.bytes;
} else if (job.package) {
  const out = createWriteStream(job.out);
  const pkg = createPackageWriter('zip', out, { root: 'company-export-bench', mtime: new Date() });
  const pass = new PassThrough();
  const [outcome] = await Promise.all([
    exportDataset(database, request, pass),
    pkg.add(`${job.dataset}.${job.format}`, pass),
  ]);
  const done = await pkg.finish();
  if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
  records = outcome.records;
  bytes = done.bytes;
} else {
  const out = createWriteStream(job.out);
  const outcome = await exportDataset(database, request, out);
  records = outcome.records;
  bytes = outcome.bytes;
  if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await database.close();
process.stdout.write(
  `${JSON.stringify({ seconds, records, bytes, maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`,
);
