import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import type { DatasetField, FieldType, TableDataset } from '../../datamap/types.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { csvRows, isNdjson, jsonRecords, jsonShape } from '../read.ts';
import type { ImportEntity, ImportItem, ImportLimits, ImportRef, RawRecord } from '../types.ts';

/**
 * Ferry's own files, read back through the data map: a table dataset's field that copies a
 * column (`t.content AS message_content`) goes back into that column, a field that copies a
 * parent's natural key (`s.url AS site_url`) becomes a reference to that parent, the id field
 * is the record's source id, and derived fields (a transcript) are left out. Nothing here
 * names a column by hand except the few links the export does not carry as ids (below).
 */

/** The datasets a Ferry file may hold and the table each fills. */
export const IMPORTABLE_DATASETS: Readonly<Record<string, ImportEntity>> = {
  customers: 'customers',
  team_members: 'team_members',
  consent_records: 'consent_records',
  conversations: 'conversations',
  messages: 'messages',
};

export interface DatasetMapping {
  readonly dataset: string;
  readonly entity: ImportEntity;
  /** The field holding the row's id. */
  readonly idField: string;
  /** Field → column of the entity, with the field's type. */
  readonly columns: ReadonlyMap<string, { column: string; type: FieldType }>;
  /** Field → reference column: a parent's id (through the map) or its natural key. */
  readonly refs: ReadonlyMap<string, { column: string; entity: ImportEntity; natural: boolean }>;
  /** Fields the export derives (not imported). */
  readonly derived: ReadonlySet<string>;
  readonly updatedField: string | null;
}

const cache = new Map<string, DatasetMapping>();

export function datasetMapping(name: string): DatasetMapping {
  const hit = cache.get(name);
  if (hit) return hit;
  const entity = IMPORTABLE_DATASETS[name];
  const dataset = REFERENCE_DATAMAP.datasets[name] as TableDataset | undefined;
  if (!entity || !dataset || dataset.kind !== 'table')
    throw new Error(`imports: ${name} is not an importable dataset`);
  const table = REFERENCE_DATAMAP.tables[entity]!;
  const columns = new Map<string, { column: string; type: FieldType }>();
  const refs = new Map<string, { column: string; entity: ImportEntity; natural: boolean }>();
  const derived = new Set<string>();
  let idField = '';
  let updatedField: string | null = null;
  for (const field of dataset.fields) {
    const copied = copiedColumn(field);
    if (!copied) {
      derived.add(field.name);
      continue;
    }
    const [fromTable, column] = copied;
    if (fromTable === entity) {
      if (column === 'id') idField = field.name;
      else if (column === 'tenant_id') derived.add(field.name);
      else {
        const relation = table.relations.find((r) => r.column === column);
        if (relation) {
          refs.set(field.name, {
            column,
            entity: relation.references.split('.')[0] as ImportEntity,
            natural: false,
          });
        } else columns.set(field.name, { column, type: field.type });
        if (column === table.updatedColumn) updatedField = field.name;
      }
      continue;
    }
    // A parent's natural key (`site_url`): the relation column that points at that parent.
    const relation = table.relations.find((r) => r.references === `${fromTable}.id`);
    if (relation && (fromTable === 'sites' || fromTable === 'customers' || fromTable === 'team_members')) {
      refs.set(field.name, { column: relation.column, entity: fromTable as ImportEntity, natural: true });
    } else derived.add(field.name);
  }
  const mapping: DatasetMapping = { dataset: name, entity, idField, columns, refs, derived, updatedField };
  cache.set(name, mapping);
  return mapping;
}

/** `[table, column]` when the field copies one column as it is. */
function copiedColumn(field: DatasetField): [string, string] | null {
  if (field.reads.length !== 1) return null;
  const [table, column] = field.reads[0]!.split('.') as [string, string];
  return new RegExp(`^[a-z]+\\.${column}$`).test(field.sql) ? [table, column] : null;
}

/** The dataset whose fields a header names: the importable dataset holding its id field and most of its columns. */
export function datasetOfHeader(header: readonly string[]): string | null {
  let best: { name: string; score: number } | null = null;
  for (const name of Object.keys(IMPORTABLE_DATASETS)) {
    const m = datasetMapping(name);
    if (!header.includes(m.idField)) continue;
    const known = header.filter(
      (h) => m.columns.has(h) || m.refs.has(h) || m.derived.has(h) || h === m.idField,
    ).length;
    if (!best || known > best.score) best = { name, score: known };
  }
  return best?.name ?? null;
}

/** Turns one record of a dataset file into an item; `cells` are CSV text (guarded) or JSON values. */
export function itemOf(
  mapping: DatasetMapping,
  record: Readonly<Record<string, unknown>>,
  options: { csv: boolean; location: string; raw: RawRecord; system: string },
  unknown: (field: string) => void,
): ImportItem {
  const values: Record<string, unknown> = {};
  const refs: Record<string, ImportRef | null> = {};
  const soft: Record<string, ImportRef> = {};
  const errors: string[] = [];
  for (const [field, given] of Object.entries(record)) {
    if (field === mapping.idField) continue;
    const col = mapping.columns.get(field);
    if (col) {
      const value = options.csv ? fromCsvCell(given as string, col.type, errors, field) : given;
      values[col.column] = value;
      continue;
    }
    const ref = mapping.refs.get(field);
    if (ref) {
      const text = given === null || given === undefined || given === '' ? null : String(given);
      refs[ref.column] =
        text === null
          ? null
          : ref.natural
            ? { entity: ref.entity, natural: options.csv ? unguard(text) : text }
            : { entity: ref.entity, sourceType: ref.entity, sourceId: text };
      continue;
    }
    if (!mapping.derived.has(field)) unknown(field);
  }
  // Links the export carries by value, not by id: a conversation's customer is the tenant's
  // customer with the email the conversation holds (set on creation; an existing link stays).
  let createOnly: string[] | undefined;
  if (mapping.entity === 'conversations' && !('customer_id' in refs)) {
    const email = values.customer_email;
    refs.customer_id =
      typeof email === 'string' && email !== '' ? { entity: 'customers', natural: email } : null;
    createOnly = ['customer_id'];
  }
  if (mapping.entity === 'messages' && typeof values.sender_id === 'string') {
    if (values.sender_type === 'human')
      soft.sender_id = { entity: 'team_members', sourceType: 'team_members', sourceId: values.sender_id };
    if (values.sender_type === 'customer')
      soft.sender_id = { entity: 'customers', sourceType: 'customers', sourceId: values.sender_id };
  }
  const softLists =
    mapping.entity === 'messages'
      ? { content_sources: { entity: 'documents' as const, sourceType: 'documents' } }
      : undefined;
  const id = record[mapping.idField];
  const updated = mapping.updatedField ? record[mapping.updatedField] : null;
  return {
    entity: mapping.entity,
    sourceType: mapping.entity,
    sourceId: id === null || id === undefined ? '' : String(id),
    values,
    refs,
    soft,
    ...(softLists ? { softLists } : {}),
    ...(createOnly ? { createOnly } : {}),
    updatedAt: typeof updated === 'string' && updated !== '' ? updated : null,
    location: options.location,
    raw: options.raw,
    errors,
  };
}

const GUARDED = /^'[=+\-@\t\r\0＝＋－＠]/;

/** Ferry's CSV formula guard, undone: a quote it put before = + - @ tab or CR is taken off. */
export function unguard(text: string): string {
  return GUARDED.test(text) ? text.slice(1) : text;
}

/** A CSV cell as Ferry writes it (docs/formats.md#csv) back to its value: empty is null. */
export function fromCsvCell(cell: string, type: FieldType, errors: string[], field: string): unknown {
  if (cell === '') return null;
  switch (type) {
    case 'string':
      return unguard(cell);
    case 'json':
    case 'string[]':
    case 'uuid[]':
    case 'number[]':
      try {
        return JSON.parse(type === 'json' ? unguard(cell) : cell);
      } catch {
        errors.push(`${field}: not valid JSON`);
        return null;
      }
    default:
      return cell;
  }
}

/** Records of one tabular dataset file (CSV, JSON with `data`, NDJSON) as items. */
export async function* datasetFileItems(
  file: string,
  display: string,
  dataset: string | null,
  limits: ImportLimits,
  system: string,
  warn: (message: string) => void,
): AsyncGenerator<ImportItem> {
  const unknownFields = new Set<string>();
  const unknown = (field: string) => {
    if (unknownFields.has(field)) return;
    unknownFields.add(field);
    warn(
      `${display}: column "${field}" is not a field of the ${dataset ?? 'detected'} dataset and was not imported`,
    );
  };
  if (/\.csv$/i.test(file)) {
    let header: string[] | null = null;
    let mapping: DatasetMapping | null = dataset ? datasetMapping(dataset) : null;
    for await (const { row, line } of csvRows(file, limits, display)) {
      if (!header) {
        header = row.map((h) => h.trim());
        if (!mapping) {
          const detected = datasetOfHeader(header);
          if (!detected) throw headerError(display, header);
          mapping = datasetMapping(detected);
          dataset = detected;
        }
        continue;
      }
      const record: Record<string, string> = {};
      header.forEach((h, i) => {
        record[h] = row[i]!;
      });
      yield itemOf(
        mapping!,
        record,
        {
          csv: true,
          location: `${display} line ${line}`,
          raw: { kind: 'csv', file: display, header, row },
          system,
        },
        unknown,
      );
    }
    return;
  }
  const ndjson = isNdjson(file);
  let mapping: DatasetMapping | null = dataset ? datasetMapping(dataset) : null;
  const paths = ndjson
    ? []
    : (await jsonShape(file)) === 'array'
      ? ['$.*']
      : ['$.export_metadata', '$.data.*'];
  for await (const { value, key, offset } of jsonRecords(file, { paths, limits, name: display })) {
    if (key === 'export_metadata') {
      const named = (value as { dataset?: unknown }).dataset;
      if (!mapping && typeof named === 'string' && IMPORTABLE_DATASETS[named])
        mapping = datasetMapping(named);
      continue;
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) {
      throw new FerryError(
        'import_unreadable',
        `${display}${ndjson ? ` line ${key}` : ''}: a record must be a JSON object`,
      );
    }
    if (!mapping) {
      const detected = datasetOfHeader(Object.keys(value));
      if (!detected) throw headerError(display, Object.keys(value));
      mapping = datasetMapping(detected);
      dataset = detected;
    }
    yield itemOf(
      mapping,
      value as Record<string, unknown>,
      {
        csv: false,
        location: ndjson ? `${display} line ${key}` : `${display} record ${Number(key) + 1} (byte ${offset})`,
        raw: { kind: 'json', value },
        system,
      },
      unknown,
    );
  }
}

function headerError(display: string, header: readonly string[]) {
  const accepted = Object.keys(IMPORTABLE_DATASETS).map((d) => `${d} (${datasetMapping(d).idField})`);
  return new FerryError(
    'import_unreadable',
    `${display}: the columns (${header.slice(0, 8).join(', ')}) are not one of Ferry's datasets; name it with --dataset: ${accepted.join(', ')}`,
  );
}
