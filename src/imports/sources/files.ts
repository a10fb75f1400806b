import path from 'node:path';
import { FerryError } from '../../domain/ferry-error.ts';
import { csvRows, isNdjson, jsonRecords, jsonShape } from '../read.ts';
import type { ImportEntity, ImportInput, ImportItem, ImportSource, SourceOptions } from '../types.ts';
import { datasetFileItems, datasetOfHeader, IMPORTABLE_DATASETS } from './dataset-records.ts';

/**
 * Single-dataset files in Ferry's layouts (docs/formats.md): CSV with the data dictionary's
 * column names, a JSON export (`export_metadata` and `data`), or NDJSON, one record per line.
 * A folder or archive may hold several; each file's dataset comes from `--dataset`, the JSON
 * file's `export_metadata.dataset`, or the columns it has.
 */
export async function fileSource(
  kind: 'csv' | 'json' | 'ndjson',
  input: ImportInput,
  options: SourceOptions,
): Promise<ImportSource> {
  const accepts = (f: string) =>
    kind === 'csv' ? /\.csv$/i.test(f) : kind === 'ndjson' ? isNdjson(f) : /\.json$/i.test(f);
  const files = input.files.filter(accepts);
  if (files.length === 0)
    throw new FerryError(
      'import_unreadable',
      `no ${kind} file in the input (expected ${kind === 'ndjson' ? '.ndjson or .jsonl' : `.${kind}`})`,
    );
  if (options.dataset && !IMPORTABLE_DATASETS[options.dataset])
    throw new FerryError(
      'invalid_parameter',
      `dataset: "${options.dataset}" cannot be imported from a file (accepted: ${Object.keys(IMPORTABLE_DATASETS).join(', ')})`,
      { parameter: 'dataset', accepted: Object.keys(IMPORTABLE_DATASETS) },
    );
  const datasets = new Map<string, string>();
  for (const file of files)
    datasets.set(file, options.dataset ?? (await sniff(path.join(input.root, file), file, kind, options)));
  const warnings: string[] = [];
  const others = input.files.filter((f) => !accepts(f));
  if (others.length > 0) warnings.push(`not ${kind} files, not imported: ${others.slice(0, 10).join(', ')}`);
  async function* items(entity: ImportEntity): AsyncGenerator<ImportItem> {
    for (const file of files) {
      const dataset = datasets.get(file)!;
      if (IMPORTABLE_DATASETS[dataset] !== entity) continue;
      yield* datasetFileItems(path.join(input.root, file), file, dataset, options.limits, 'ferry', (m) => {
        if (!warnings.includes(m)) warnings.push(m);
      });
    }
  }
  // Files in Ferry's layouts carry Ferry ids: they share the import map with Ferry packages.
  return { system: 'ferry', items, warnings };
}

async function sniff(
  file: string,
  display: string,
  kind: 'csv' | 'json' | 'ndjson',
  options: SourceOptions,
): Promise<string> {
  let keys: string[] = [];
  if (kind === 'csv') {
    for await (const { row } of csvRows(file, options.limits, display)) {
      keys = row.map((h) => h.trim());
      break;
    }
  } else {
    const paths =
      kind === 'ndjson'
        ? []
        : (await jsonShape(file)) === 'array'
          ? ['$.*']
          : ['$.export_metadata', '$.data.*'];
    for await (const { value, key } of jsonRecords(file, { paths, limits: options.limits, name: display })) {
      if (key === 'export_metadata') {
        const named = (value as { dataset?: unknown }).dataset;
        if (typeof named === 'string' && IMPORTABLE_DATASETS[named]) return named;
        continue;
      }
      if (value && typeof value === 'object' && !Array.isArray(value)) {
        keys = Object.keys(value);
        break;
      }
    }
  }
  const detected = datasetOfHeader(keys);
  if (!detected)
    throw new FerryError(
      'import_unreadable',
      `${display}: its columns (${keys.slice(0, 8).join(', ') || 'none'}) are not one of Ferry's datasets; name the dataset (--dataset, "dataset")`,
    );
  return detected;
}
