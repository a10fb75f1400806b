import { createWriteStream, mkdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { selectedFields } from '../collect/query.ts';
import type { ExportRequest } from '../collect/request.ts';
import { datasetStream } from '../collect/dataset-source.ts';
import { exportMetadata, loadTenant, zonesFor } from '../collect/tenant.ts';
import { createPartitionedParquet } from '../format/parquet-partitions.ts';
import { getWriter } from '../format/registry.ts';
import { invalid } from '../domain/ferry-error.ts';
import { withDatabase } from './context.ts';

/** `--format parquet --partition-by-date --out DIR`: a Hive-style folder, renamed into place when complete. */
export async function runPartitionedParquet(request: ExportRequest, out: string | undefined): Promise<void> {
  if (request.format !== 'parquet') throw invalid('--partition-by-date', 'works with --format parquet only');
  if (!out || out === '-') throw invalid('--out', 'a partitioned export needs a directory (--out DIR)');
  const dataset = REFERENCE_DATAMAP.datasets[request.dataset]!;
  const fields = selectedFields(dataset, request);
  const dateField = fields.find((f) => f.type === 'timestamp' || f.type === 'date');
  if (!dataset.timeColumn || !dateField)
    throw invalid('--partition-by-date', `dataset ${request.dataset} has no date to partition by`);
  const temp = `${out}.partial-${process.pid}`;
  await withDatabase(async (database) => {
    const tenant = await loadTenant(database, request.tenantId);
    const scoped = { ...request, tenantId: tenant.id };
    const zones = zonesFor(request, tenant);
    const timezone = zones.timezone;
    const writer = getWriter('parquet');
    const metadata = exportMetadata(scoped, tenant, randomUUID(), timezone);
    const parts = createPartitionedParquet(
      { dataset: request.dataset, fields, metadata, bom: false },
      {
        dateField: dateField.name,
        openFile: (relative) => {
          const file = path.join(temp, relative);
          mkdirSync(path.dirname(file), { recursive: true });
          return createWriteStream(file);
        },
      },
    );
    try {
      await pipeline(datasetStream(database, scoped, writer, zones, randomBytes(16).toString('hex')), parts);
      await rm(out, { recursive: true, force: true });
      await rename(temp, out);
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    }
    const rows = parts.files.reduce((n, f) => n + f.rows, 0);
    process.stderr.write(
      `exported ${rows} ${request.dataset} records into ${parts.files.length} partitions under ${out}\n`,
    );
  });
}
