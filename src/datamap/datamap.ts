import { type Kysely, sql } from 'kysely';
import { retryCatalogRace } from '../db/catalog-race.ts';
import { REFERENCE_DATASETS } from './reference-datasets.ts';
import { REFERENCE_TABLES } from './reference-tables.ts';
import {
  COLUMN_CLASSES,
  COMPUTED_REPORTS,
  type DataMap,
  type DatasetDeclaration,
  DOCUMENT_WRITERS,
  FIELD_TYPES,
  PACKAGE_BUILDERS,
} from './types.ts';

/** The built-in data map of Ferry's reference schema. */
export const REFERENCE_DATAMAP: DataMap = Object.freeze({
  version: '1.0.0',
  tables: REFERENCE_TABLES,
  datasets: REFERENCE_DATASETS,
});

export class DataMapError extends Error {
  override name = 'DataMapError';
}

/** Checks the map's own consistency: classes, types, and that every field reads declared columns. */
export function checkDataMap(map: DataMap): string[] {
  const problems: string[] = [];
  const declared = (ref: string) => {
    const [table, column] = ref.split('.') as [string, string];
    return map.tables[table]?.columns[column];
  };
  for (const [tableName, table] of Object.entries(map.tables)) {
    for (const [name, col] of Object.entries(table.columns)) {
      if (!COLUMN_CLASSES.includes(col.class))
        problems.push(`${tableName}.${name}: unknown class "${col.class}"`);
      if (!FIELD_TYPES.includes(col.type)) problems.push(`${tableName}.${name}: unknown type "${col.type}"`);
    }
    for (const ref of [table.tenantKey, table.timeColumn, table.updatedColumn, ...table.primaryKey]) {
      if (ref && !table.columns[ref]) problems.push(`${tableName}: names missing column "${ref}"`);
    }
    for (const link of [...table.subjectLinks, ...table.relations]) {
      if (!table.columns[link.column])
        problems.push(`${tableName}: link names missing column "${link.column}"`);
    }
    for (const link of table.subjectLinks) {
      if (link.by === 'parent' && !(link.parent && map.tables[link.parent]?.subjectLinks.length))
        problems.push(
          `${tableName}.${link.column}: parent link names no table with subject links ("${link.parent}")`,
        );
      if (link.by !== 'parent' && link.parent)
        problems.push(`${tableName}.${link.column}: only a parent link names a parent`);
    }
    for (const column of table.erasure.scrub ?? []) {
      if (!table.columns[column]) problems.push(`${tableName}: erasure scrubs missing column "${column}"`);
    }
    if (table.subjectLinks.length && !table.tenantKey)
      problems.push(`${tableName}: a table with subject links needs a tenant key`);
    for (const rel of table.relations) {
      if (!declared(rel.references))
        problems.push(`${tableName}.${rel.column}: references missing column ${rel.references}`);
    }
  }
  const packagePositions = new Map<number, string>();
  const packagePaths = new Set<string>();
  for (const [name, ds] of Object.entries(map.datasets)) {
    if (ds.name !== name) problems.push(`dataset ${name}: declared under another name ("${ds.name}")`);
    if (!map.tables[ds.source]) problems.push(`dataset ${name}: source table "${ds.source}" is not declared`);
    const seen = new Set<string>();
    for (const field of ds.fields) {
      if (seen.has(field.name)) problems.push(`dataset ${name}: field "${field.name}" appears twice`);
      seen.add(field.name);
      for (const ref of field.reads) {
        if (!declared(ref)) problems.push(`dataset ${name}.${field.name}: reads missing column ${ref}`);
      }
    }
    if (ds.kind === 'computed' && !COMPUTED_REPORTS.includes(ds.report))
      problems.push(`dataset ${name}: unknown report "${ds.report}"`);
    if (ds.kind === 'document' && !DOCUMENT_WRITERS.includes(ds.document))
      problems.push(`dataset ${name}: unknown document "${ds.document}"`);
    if (ds.kind === 'table' && ds.changeFeed) {
      const idColumn = ds.changeFeed.idColumn;
      const source = map.tables[ds.source];
      if (source && !source.columns[idColumn])
        problems.push(`dataset ${name}: change feed id column "${idColumn}" is not a column of ${ds.source}`);
      if (source && source.tenantKey === null)
        problems.push(`dataset ${name}: a change feed needs a source table with a tenant key`);
      if (!ds.fields.some((f) => f.sql === `t.${idColumn}`))
        problems.push(`dataset ${name}: a change feed needs a field that exports t.${idColumn}`);
    }
    const placement = ds.package;
    if (!placement) continue;
    const other = packagePositions.get(placement.order);
    if (other) problems.push(`dataset ${name}: package order ${placement.order} is taken by ${other}`);
    packagePositions.set(placement.order, name);
    if ('builder' in placement) {
      if (!PACKAGE_BUILDERS.includes(placement.builder))
        problems.push(`dataset ${name}: unknown package builder "${placement.builder}"`);
      continue;
    }
    if (placement.files.length === 0) problems.push(`dataset ${name}: a package entry needs a file`);
    for (const file of placement.files) {
      if (packagePaths.has(file.path)) problems.push(`dataset ${name}: package path "${file.path}" is taken`);
      packagePaths.add(file.path);
      for (const parameter of Object.keys(file.parameters ?? {}))
        if (!ds.parameters.some((p) => p.name === parameter))
          problems.push(
            `dataset ${name}: package file ${file.path} sets undeclared parameter "${parameter}"`,
          );
    }
  }
  return problems;
}

/** The datasets a company package can hold, in the order the package writes them. */
export function packageDatasets(map: DataMap): string[] {
  return Object.values(map.datasets)
    .filter((d) => d.package)
    .sort((a, b) => a.package!.order - b.package!.order)
    .map((d) => d.name);
}

/**
 * Whether a dataset is dated: `from`/`to` narrow it, so date filters, schedule windows and
 * the plan's history window apply (a table's time column, or a report's days).
 */
export function isDated(dataset: DatasetDeclaration): boolean {
  return dataset.filters.some((f) => f.name === 'from');
}

/** A table whose deletes leave tombstones for a change feed. */
export interface TrackedTable {
  readonly table: string;
  readonly idColumn: string;
  readonly tenantKey: string;
}

/** The tables the map's change feeds read: the sources of the datasets that declare one. */
export function trackedTables(map: DataMap): TrackedTable[] {
  const tracked = new Map<string, TrackedTable>();
  for (const dataset of Object.values(map.datasets)) {
    if (dataset.kind !== 'table' || !dataset.changeFeed) continue;
    const tenantKey = map.tables[dataset.source]?.tenantKey;
    if (!tenantKey) continue;
    tracked.set(dataset.source, { table: dataset.source, idColumn: dataset.changeFeed.idColumn, tenantKey });
  }
  return [...tracked.values()];
}

/**
 * Compares the map with the live database: every declared table and column must
 * exist, and every column of a declared table must be declared (so a new column
 * cannot reach an export without a class).
 */
export async function checkDataMapAgainstDatabase<T>(map: DataMap, db: Kysely<T>): Promise<string[]> {
  const problems: string[] = [];
  // Only the schema Ferry runs in: other schemas of the same database may hold look-alike tables.
  const current = await sql<{ schema: string }>`SELECT current_schema() AS schema`.execute(db);
  const schema = current.rows[0]?.schema;
  const tables = (await retryCatalogRace(() => db.introspection.getTables(), schema)).filter(
    (t) => t.schema === undefined || t.schema === schema,
  );
  const live = new Map(tables.map((t) => [t.name, new Set(t.columns.map((c) => c.name))]));
  for (const [tableName, table] of Object.entries(map.tables)) {
    const columns = live.get(tableName);
    if (!columns) {
      problems.push(`data map names table "${tableName}", which does not exist in the database`);
      continue;
    }
    for (const name of Object.keys(table.columns)) {
      if (!columns.has(name))
        problems.push(`data map names column "${tableName}.${name}", which does not exist in the database`);
    }
    for (const name of columns) {
      if (!table.columns[name])
        problems.push(
          `column "${tableName}.${name}" exists in the database but has no class in the data map`,
        );
    }
  }
  return problems;
}

/** Validates the map at start; throws one message listing every problem. */
export async function validateDataMap<T>(map: DataMap, db: Kysely<T>): Promise<void> {
  const problems = [...checkDataMap(map), ...(await checkDataMapAgainstDatabase(map, db))];
  if (problems.length) throw new DataMapError(`invalid data map: ${problems.join('; ')}`);
}
