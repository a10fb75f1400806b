import { type Kysely, sql } from 'kysely';
import { REFERENCE_DATASETS } from './reference-datasets.ts';
import { REFERENCE_TABLES } from './reference-tables.ts';
import { COLUMN_CLASSES, type DataMap, FIELD_TYPES } from './types.ts';

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
    for (const rel of table.relations) {
      if (!declared(rel.references))
        problems.push(`${tableName}.${rel.column}: references missing column ${rel.references}`);
    }
  }
  for (const [name, ds] of Object.entries(map.datasets)) {
    if (!map.tables[ds.source]) problems.push(`dataset ${name}: source table "${ds.source}" is not declared`);
    const seen = new Set<string>();
    for (const field of ds.fields) {
      if (seen.has(field.name)) problems.push(`dataset ${name}: field "${field.name}" appears twice`);
      seen.add(field.name);
      for (const ref of field.reads) {
        if (!declared(ref)) problems.push(`dataset ${name}.${field.name}: reads missing column ${ref}`);
      }
    }
  }
  return problems;
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
  const tables = (await db.introspection.getTables()).filter((t) => t.schema === undefined || t.schema === schema);
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
