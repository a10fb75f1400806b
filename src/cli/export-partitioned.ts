import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { selectedFields } from '../collect/query.ts';
import type { ExportRequest } from '../collect/request.ts';
import { datasetStream } from '../collect/dataset-source.ts';
import { exportMetadata, loadTenant, zonesFor } from '../collect/tenant.ts';
import { createPartitionedParquet, datasetFolder } from '../format/parquet-partitions.ts';
import { RecordCounter } from '../collect/record-counter.ts';
import { estimateDataset } from '../pipeline/export-dataset.ts';
import { cliExportConfig, recordedExport } from './recorded-export.ts';
import { getWriter } from '../format/registry.ts';
import { invalid } from '../domain/ferry-error.ts';
import { replaceFolderAtomically } from '../lib/atomic-file.ts';
import { withDatabase } from './context.ts';

/**
 * `--format parquet --partition-by-date --out DIR`: Hive-style `dataset=NAME/date=…/`
 * folders in DIR. The dataset's folder is written aside and renamed into place when
 * complete. DIR must be new or empty; with `--overwrite` only its `dataset=NAME` folder
 * is replaced and nothing else in DIR is touched.
 */
export async function runPartitionedParquet(
  request: ExportRequest,
  out: string | undefined,
  options: { overwrite: boolean } = { overwrite: false },
): Promise<void> {
  if (request.format !== 'parquet') throw invalid('--partition-by-date', 'works with --format parquet only');
  if (!out || out === '-') throw invalid('--out', 'a partitioned export needs a directory (--out DIR)');
  const dataset = REFERENCE_DATAMAP.datasets[request.dataset]!;
  const fields = selectedFields(dataset, request);
  const dateField = fields.find((f) => f.type === 'timestamp' || f.type === 'date');
  if (!dataset.timeColumn || !dateField)
    throw invalid('--partition-by-date', `dataset ${request.dataset} has no date to partition by`);
  await withDatabase(async (database) => {
    const tenant = await loadTenant(database, request.tenantId);
    const scoped = { ...request, tenantId: tenant.id };
    const zones = zonesFor(request, tenant);
    const timezone = zones.timezone;
    const writer = getWriter('parquet');
    const config = cliExportConfig({
      datasets: [request.dataset],
      format: 'parquet',
      compression: request.compression,
      from: filterText(request, 'from'),
      to: filterText(request, 'to'),
      columns: request.columns ? [...request.columns] : null,
      pii: request.pii,
      timezone: request.timezone ?? null,
    });
    const folder = datasetFolder(request.dataset);
    await recordedExport(database, tenant, config, async (local) => {
      const estimated = await estimateDataset(database, scoped).catch(() => null);
      local.progress({ estimated });
      const metadata = exportMetadata(scoped, tenant, local.id, timezone);
      const parts = await replaceFolderAtomically(
        out,
        folder,
        { overwrite: options.overwrite, param: '--out' },
        async (staging) => {
          const partitions = createPartitionedParquet(
            { dataset: request.dataset, fields, metadata, bom: false },
            {
              dateField: dateField.name,
              openFile: (relative) => {
                const file = path.join(staging, relative);
                mkdirSync(path.dirname(file), { recursive: true });
                return createWriteStream(file);
              },
            },
          );
          const counter = new RecordCounter(writer.input, {
            headerLines: writer.input === 'csv' ? 1 : 0,
            onCount: (records) => local.progress({ records }),
          });
          await pipeline(
            datasetStream(database, scoped, writer, zones, randomBytes(16).toString('hex')),
            counter,
            partitions,
            { signal: local.signal },
          );
          // Recorded before the folder is put in place: a cancelled export places nothing.
          await local.complete(
            { name: path.join(path.basename(out), folder), contentType: 'inode/directory' },
            { bytes: 0, records: partitions.files.reduce((n, f) => n + f.rows, 0), sha256: '' },
          );
          return partitions;
        },
      );
      const rows = parts.files.reduce((n, f) => n + f.rows, 0);
      process.stderr.write(
        `exported ${rows} ${request.dataset} records into ${parts.files.length} partitions under ${path.join(out, folder)}\n`,
      );
    });
  });
}

/** A date filter of the request as text, for its record. */
function filterText(request: ExportRequest, name: 'from' | 'to'): string | null {
  const value = request.filters[name];
  if (value === undefined || value === null) return null;
  return value instanceof Date ? value.toISOString() : String(value);
}
