import { Option, type Command } from 'commander';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { dataDictionaryMarkdown } from '../datamap/dictionary.ts';
import type { DataMap } from '../datamap/types.ts';
import { printTable } from './tenants.ts';

export function registerDatamap(program: Command): void {
  program
    .command('datamap')
    .description('print the data map: every table, column, class and dataset')
    .addOption(
      new Option('--format <format>', 'output format').choices(['text', 'json', 'markdown']).default('text'),
    )
    .option('--dataset <name>', 'show one dataset only')
    .action((options: { format: 'text' | 'json' | 'markdown'; dataset?: string }) => {
      const map = REFERENCE_DATAMAP;
      if (options.dataset && !map.datasets[options.dataset]) {
        throw new Error(
          `--dataset: unknown dataset "${options.dataset}" (accepted: ${Object.keys(map.datasets).join(', ')})`,
        );
      }
      if (options.format === 'markdown') {
        process.stdout.write(
          dataDictionaryMarkdown(map, options.dataset ? { datasets: [options.dataset] } : {}),
        );
        return;
      }
      if (options.format === 'json') {
        process.stdout.write(`${JSON.stringify(toJson(map, options.dataset), null, 2)}\n`);
        return;
      }
      printText(map, options.dataset);
    });
}

function toJson(map: DataMap, dataset?: string) {
  const datasets = Object.values(map.datasets)
    .filter((d) => !dataset || d.name === dataset)
    .map((d) => ({
      name: d.name,
      description: d.description,
      kind: d.kind,
      source: d.source,
      time_column: d.timeColumn,
      formats: d.formats,
      filters: d.filters.map((f) => ({
        name: f.name,
        type: f.type,
        values: f.values,
        description: f.description,
      })),
      fields: d.fields.map((f) => ({
        name: f.name,
        type: f.type,
        class: f.class,
        pii: f.pii ?? null,
        description: f.description,
        reads: f.reads,
      })),
    }));
  if (dataset) return { version: map.version, datasets };
  const tables = Object.entries(map.tables).map(([name, t]) => ({
    name,
    description: t.description,
    tenant_key: t.tenantKey,
    time_column: t.timeColumn,
    updated_column: t.updatedColumn,
    primary_key: t.primaryKey,
    subject_links: t.subjectLinks,
    relations: t.relations,
    retention: t.retention,
    columns: Object.entries(t.columns).map(([col, c]) => ({
      name: col,
      type: c.type,
      class: c.class,
      pii: c.pii ?? null,
      description: c.description,
    })),
  }));
  return { version: map.version, tables, datasets };
}

function printText(map: DataMap, dataset?: string): void {
  if (!dataset) {
    process.stdout.write(`Ferry data map ${map.version}\n\nTABLES\n`);
    for (const [name, t] of Object.entries(map.tables)) {
      const retention = `${t.retention.action} ${t.retention.keep} after ${t.retention.after}`;
      process.stdout.write(
        `\n${name}: ${t.description}\n  tenant key: ${t.tenantKey ?? '-'}  time: ${t.timeColumn ?? '-'}  retention: ${retention}\n`,
      );
      const links = t.subjectLinks.map((l) => `${l.column} -> ${l.subject} (by ${l.by})`).join(', ');
      if (links) process.stdout.write(`  data subjects: ${links}\n`);
      printTable(
        ['  COLUMN', 'TYPE', 'CLASS', 'DESCRIPTION'],
        Object.entries(t.columns).map(([col, c]) => [
          `  ${col}`,
          c.type,
          c.pii ? `${c.class}/${c.pii}` : c.class,
          c.description,
        ]),
      );
    }
    process.stdout.write('\nDATASETS\n');
  }
  for (const d of Object.values(map.datasets)) {
    if (dataset && d.name !== dataset) continue;
    process.stdout.write(`\n${d.name}: ${d.description}\n  formats: ${d.formats.join(', ')}\n`);
    if (d.filters.length) process.stdout.write(`  filters: ${d.filters.map((f) => f.name).join(', ')}\n`);
    printTable(
      ['  FIELD', 'TYPE', 'CLASS', 'DESCRIPTION'],
      d.fields.map((f) => [`  ${f.name}`, f.type, f.class, f.description]),
    );
  }
}
