import path from 'node:path';
import { Option, type Command } from 'commander';
import { compressionCodec } from '../packaging/compression.ts';
import { type ExportRequest, parseExportRequest } from '../collect/request.ts';
import { datasetXsd } from '../pipeline/dataset-xsd.ts';
import { xsdFileName } from '../format/xml-schema.ts';
import { type Compression, COMPRESSIONS } from '../domain/compression.ts';
import { checkSiteUrls, loadTenant, requestedSites } from '../collect/tenant.ts';
import { stamp } from '../lib/stamp.ts';
import { datasetFileType, estimateDataset } from '../pipeline/export-dataset.ts';
import { datasetProducer } from '../pipeline/producers.ts';
import { cliExportConfig, recordedExport, runToOutput } from './recorded-export.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import { writeFileAtomically } from '../lib/atomic-file.ts';
import { invalid } from '../domain/ferry-error.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { shapingFromPairs } from '../collect/shaping.ts';
import { ARCHIVE_KINDS } from '../domain/package-kind.ts';
import { PII_LEVELS } from '../domain/pii-level.ts';
import { withDatabase } from './context.ts';
import { createProgress, formatBytes } from './progress.ts';

interface ExportFlags {
  tenant: string;
  dataset?: string;
  format?: string;
  compression?: string;
  from?: string;
  to?: string;
  filter: string[];
  columns?: string;
  pii?: string;
  timezone?: string;
  bom?: boolean;
  csvGuard: boolean;
  partitionByDate?: boolean;
  overwrite?: boolean;
  out?: string;
  package?: 'zip' | 'tar.gz' | 'directory';
  datasets?: string;
  splitSize?: string;
  rename: string[];
  convert: string[];
  calculated: string[];
  locale?: string;
  currency?: string;
  delimiter?: string;
  decimalSeparator?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `--filter key=value` pairs into an object; a malformed pair names itself. */
export function parseFilterPairs(pairs: readonly string[]): Record<string, string> {
  const filters: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalid('--filter', `"${pair}" is not key=value`);
    filters[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return filters;
}

/** The output shaping flags as the request's fields (docs/output-shaping.md). */
export function shapingFlags(flags: {
  rename: readonly string[];
  convert: readonly string[];
  calculated: readonly string[];
  locale?: string | undefined;
  currency?: string | undefined;
  delimiter?: string | undefined;
  decimalSeparator?: string | undefined;
}): Partial<ExportConfig> {
  return shapingFromPairs(
    {
      ...flags,
      delimiter: flags.delimiter === 'tab' ? '\t' : flags.delimiter,
      decimal_separator: flags.decimalSeparator,
    },
    (name) => `--${name.replace('_', '-')}`,
  );
}

/** `--out` of a compressed export gains the compression's suffix (`m.csv` → `m.csv.gz`) unless it has it. */
export function withCompressionSuffix(out: string, compression: Compression): string {
  const suffix = compressionCodec(compression).suffix;
  return suffix && !out.endsWith(suffix) ? `${out}${suffix}` : out;
}

/**
 * Writes `<dataset>.xsd` in the folder of an XML export, where the XML's `xsi:schemaLocation`
 * points (a schema of another export of the same dataset there is replaced). Returns its path,
 * or null for a dataset without one.
 */
async function writeXsdBeside(file: string, request: ExportRequest): Promise<string | null> {
  const xsd = datasetXsd(request);
  if (xsd === null) return null;
  const target = path.join(path.dirname(file), xsdFileName(request.dataset));
  await writeFileAtomically(target, async (out) => {
    out.end(xsd);
  });
  return target;
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('export one dataset, or the whole company package, of a tenant')
    .requiredOption('--tenant <id>', 'tenant id or slug')
    .option('--dataset <name>', 'dataset to export (see `ferry datamap`)')
    .addOption(
      new Option(
        '--format <format>',
        'output format (with --package: of the tabular files, default csv)',
      ).choices([...EXPORT_FORMATS, 'markdown']),
    )
    .addOption(new Option('--compression <kind>', 'compression').choices(COMPRESSIONS).default('none'))
    .option('--from <date>', 'start date (YYYY-MM-DD, in the tenant time zone) or ISO 8601 timestamp')
    .option('--to <date>', 'end date, inclusive (YYYY-MM-DD) or ISO 8601 timestamp')
    .option(
      '--filter <key=value>',
      'dataset filter, repeatable (see `ferry datamap --dataset NAME`)',
      collect,
      [],
    )
    .option('--columns <a,b,c>', 'columns to include, in this order')
    .addOption(
      new Option(
        '--pii <level>',
        'personal data: full, or an anonymization level (default enhanced)',
      ).choices(PII_LEVELS),
    )
    .option(
      '--timezone <zone>',
      'IANA time zone for timestamps and dates (default: timestamps in UTC, dates in the tenant time zone)',
    )
    .option('--bom', 'CSV: start with a UTF-8 byte-order mark (for Excel)')
    .option('--no-csv-guard', 'CSV: do not neutralise spreadsheet formulas (for machine use)')
    .option(
      '--partition-by-date',
      'Parquet: Hive-style dataset=NAME/date=YYYY-MM-DD/ folders (needs --out DIR)',
    )
    .option(
      '--overwrite',
      "with --partition-by-date: write into a non-empty --out DIR, replacing only the dataset's partitions; " +
        'with --package: replace the package already at --out',
    )
    .option(
      '--rename <column=name>',
      'output name of a column, repeatable (see docs/output-shaping.md)',
      collect,
      [],
    )
    .option(
      '--convert <column=conversion>',
      'yes_no, one_zero, true_false, fixed:N, date, epoch_seconds or epoch_millis for a column, repeatable',
      collect,
      [],
    )
    .option(
      '--calculated <name=expression>',
      "a calculated field, repeatable: name=expression or name:type=expression (e.g. 'share=round(a / b * 100, 1)')",
      collect,
      [],
    )
    .option('--locale <tag>', 'CSV: BCP 47 locale of dates, timestamps and numbers (e.g. de-DE)')
    .option('--currency <code>', "CSV with --locale: ISO 4217 currency of the dataset's money columns")
    .addOption(new Option('--delimiter <char>', 'CSV: delimiter').choices([',', ';', 'tab', '|']))
    .addOption(
      new Option('--decimal-separator <char>', 'CSV: decimal separator of numbers').choices(['.', ',']),
    )
    .option('--out <path>', 'output file (gains .gz/.zst when compressed), or - for stdout')
    .addOption(
      new Option('--package <kind>', 'write the company package instead of one dataset').choices(
        ARCHIVE_KINDS,
      ),
    )
    .option('--datasets <a,b>', 'with --package: datasets to include (default: all)')
    .option(
      '--split-size <size>',
      'with --package zip|tar.gz: parts of at most 1GB, 2GB, 4GB, 10GB, 50GB or a byte count, ' +
        'written beside --out with a manifest (<name>.parts.json) and checksums (<name>.parts.sha256)',
    )
    .action(async (flags: ExportFlags) => {
      const shaping = shapingFlags(flags);
      if (flags.package && Object.keys(shaping).length)
        throw invalid(
          `--${Object.keys(shaping)[0]!.replace('_', '-')}`,
          'shapes one dataset; it does not apply to --package',
        );
      if (flags.package) {
        const { runPackageCommand } = await import('./export-package.ts');
        await runPackageCommand(flags);
        return;
      }
      if (!flags.dataset) throw invalid('--dataset', 'is required unless --package is given');
      if (flags.splitSize !== undefined)
        throw invalid('--split-size', 'splits a company package: use it with --package zip or tar.gz', [
          'zip',
          'tar.gz',
        ]);
      const request = parseExportRequest({
        tenantId: flags.tenant,
        dataset: flags.dataset,
        format: flags.format,
        compression: flags.compression,
        from: flags.from,
        to: flags.to,
        filters: parseFilterPairs(flags.filter),
        columns: flags.columns,
        pii: flags.pii,
        timezone: flags.timezone,
        bom: flags.bom ?? false,
        csvGuard: flags.csvGuard,
        partitionByDate: flags.partitionByDate ?? false,
        shaping,
      });
      if (request.partitionByDate) {
        const { runPartitionedParquet } = await import('./export-partitioned.ts');
        await runPartitionedParquet(request, flags.out, { overwrite: flags.overwrite ?? false });
        return;
      }
      if (flags.overwrite) throw invalid('--overwrite', 'works with --partition-by-date or --package only');
      const toStdout = !flags.out || flags.out === '-';
      const target = toStdout ? '-' : withCompressionSuffix(flags.out!, request.compression);
      await withDatabase(async (database) => {
        const tenant = await loadTenant(database, request.tenantId);
        await checkSiteUrls(database, tenant.id, requestedSites(request.filters, request.options));
        const scoped = { ...request, tenantId: tenant.id };
        const config = cliExportConfig({
          datasets: [request.dataset],
          format: request.format,
          compression: request.compression,
          from: flags.from ?? null,
          to: flags.to ?? null,
          filters: parseFilterPairs(flags.filter),
          columns: request.columns ? [...request.columns] : null,
          pii: request.pii,
          timezone: flags.timezone ?? null,
          bom: request.bom,
          csv_guard: request.csvGuard,
          ...shaping,
          ...(request.shaping?.locale ? { locale: request.shaping.locale } : {}),
          ...(request.shaping?.delimiter ? { delimiter: request.shaping.delimiter } : {}),
          ...(request.shaping?.decimalSeparator
            ? { decimal_separator: request.shaping.decimalSeparator }
            : {}),
        });
        const type = datasetFileType(request.format, request.compression);
        const progress = toStdout ? createProgress('', 'rows') : createProgress(`${request.dataset}`, 'rows');
        const shown = { records: 0, bytes: 0, estimated: null as number | null };
        try {
          const { file } = await recordedExport(database, tenant, config, (local) =>
            runToOutput(
              local,
              {
                estimate: () => estimateDataset(database, scoped),
                produce: datasetProducer(database, scoped, { exportId: local.id }),
              },
              target,
              {
                defaultName: `${request.dataset}-${stamp(new Date())}.${type.extension}`,
                contentType: type.contentType,
              },
              (p) => {
                Object.assign(shown, p);
                progress.update(shown.records, shown.estimated, { bytes: formatBytes(shown.bytes) });
              },
            ),
          );
          progress.stop();
          if (!toStdout) {
            const schema = request.format === 'xml' ? await writeXsdBeside(target, request) : null;
            if (schema) process.stderr.write(`wrote its XML Schema to ${schema}\n`);
            process.stderr.write(
              `exported ${file.records} ${request.dataset} records to ${target} (${formatBytes(file.bytes)}, sha256 ${file.sha256})\n`,
            );
          }
        } finally {
          progress.stop();
        }
      });
    });
}
