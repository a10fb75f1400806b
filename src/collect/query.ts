import { type CopyQuery, literal } from '../db/database.ts';
import type { DatasetDeclaration, DatasetField, DatasetFilter, TableDataset } from '../datamap/types.ts';
import { type ExportScope, scopeTarget } from '../domain/export-scope.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { anonymizeSql } from '../transform/anonymize.ts';
import { REPORTS, type ReportBuilder } from './computed/reports.ts';
import { COPY_OPTIONS, jsonObjectSql } from './render-sql.ts';
import {
  columnAlias,
  csvColumnSql,
  csvCopyOptions,
  jsonColumnSql,
  type OutputColumn,
  shapeColumns,
} from './shaping.ts';
import type { ExportRequest, FilterValue, SubjectRows } from './request.ts';
import type { WriterInput } from '../format/types.ts';

export interface QueryContext {
  /** The zone timestamps are written in: the requested zone, else UTC. */
  readonly timezone: string;
  /** The zone that days belong to (date filters, analytics periods): the requested zone, else the tenant's. */
  readonly dayZone: string;
  /** Per-export key for keyed-hash pseudonyms. */
  readonly anonymizeKey: string;
  readonly input: WriterInput;
}

/** The dataset's fields this request can yield: all of them, or those its report narrows them to. */
function availableFields(dataset: DatasetDeclaration, request: ExportRequest): DatasetField[] {
  const fields = [...dataset.fields];
  const narrowed =
    dataset.kind === 'computed' ? (REPORTS[dataset.report] as ReportBuilder).fields : undefined;
  if (!narrowed) return fields;
  const names = narrowed(request);
  return fields.filter((f) => names.includes(f.name));
}

/** The output columns in the requested order, renamed, converted and calculated (src/collect/shaping.ts). */
export function outputColumns(dataset: DatasetDeclaration, request: ExportRequest): OutputColumn[] {
  return shapeColumns(availableFields(dataset, request), request.columns, request.shaping);
}

/** The dataset's output fields, in the requested column order, under their output names and types. */
export function selectedFields(dataset: DatasetDeclaration, request: ExportRequest): DatasetField[] {
  return outputColumns(dataset, request).map((c) => c.spec);
}

function filterValueSql(filter: DatasetFilter, value: FilterValue, timezone: string): string {
  if (Array.isArray(value)) return `ARRAY[${value.map((v) => literal(v)).join(', ')}]::text[]`;
  if (filter.name === 'from' || filter.name === 'to') {
    const text = String(value);
    if (/^\d{4}-\d{2}-\d{2}$/.test(text)) {
      // Dates are days in the report zone; `to` includes its whole day.
      const day = filter.name === 'to' ? `(${literal(text)}::date + 1)` : `${literal(text)}::date`;
      return `(${day}::timestamp AT TIME ZONE ${literal(timezone)})`;
    }
    return `${literal(text)}::timestamptz`;
  }
  return literal(value as string | number | boolean);
}

/** A declared SQL condition with its `$value` placeholders replaced by a SQL expression. */
function withValue(condition: string, value: string): string {
  return condition.split('$value').join(value);
}

interface Source {
  /** FROM and JOINs. */
  tables: string;
  /** WHERE conditions, joined with AND, followed by the key-range marker. */
  where: string;
  key: string[];
}

const COMPUTED_TAIL = ' WHERE true{{KEY_RANGE}}';

/** Splits a computed dataset's `FROM (...) t WHERE true{{KEY_RANGE}}` into its parts. */
function computedSource(built: { from: string; key: string[] }): Source {
  if (!built.from.endsWith(COMPUTED_TAIL))
    throw new FerryError('internal', 'computed dataset source has an unexpected shape');
  return { tables: built.from.slice(0, -COMPUTED_TAIL.length), where: 'true{{KEY_RANGE}}', key: built.key };
}

function scopeCondition(dataset: TableDataset, scope: ExportScope | undefined): string | null {
  if (!scope || scope.kind === 'tenant') return null;
  const condition = dataset.scopes[scope.kind];
  if (!condition)
    throw new FerryError(
      'invalid_parameter',
      `scope: dataset ${dataset.name} cannot be narrowed to one ${scope.kind.replace('_', ' ')}`,
    );
  return withValue(condition, literal(scopeTarget(scope)));
}

/** The FROM clause with tenant scope and filters, plus the ordering key. */
function source(dataset: DatasetDeclaration, request: ExportRequest, ctx: QueryContext): Source {
  if (dataset.kind === 'computed') {
    const computed = computedSource(REPORTS[dataset.report].source(request, ctx.dayZone));
    // A report's rows carry the subject link's columns (e.g. revenue attribution's customer_id).
    return request.subject
      ? { ...computed, where: `(${request.subject.condition}) AND ${computed.where}` }
      : computed;
  }
  if (dataset.kind !== 'table')
    throw new FerryError('unsupported_format', `dataset ${dataset.name} is not tabular`);
  const conditions = [`t.tenant_id = ${literal(request.tenantId)}`];
  const scoped = scopeCondition(dataset, request.scope);
  if (scoped) conditions.push(scoped);
  if (request.subject) conditions.push(`(${request.subject.condition})`);
  for (const [name, value] of Object.entries(request.filters)) {
    const filter = dataset.filters.find((x) => x.name === name);
    if (!filter) throw new FerryError('invalid_parameter', `filter: unknown filter "${name}"`);
    conditions.push(`(${withValue(filter.sql, filterValueSql(filter, value, ctx.dayZone))})`);
  }
  return { tables: dataset.from, where: `${conditions.join(' AND ')}{{KEY_RANGE}}`, key: [...dataset.key] };
}

const textArray = (values: readonly string[]) =>
  values.length ? `ARRAY[${values.map((v) => literal(v)).join(', ')}]::text[]` : `'{}'::text[]`;

/** Free text in a subject's package: their own email addresses and phone numbers stay, everyone else's go. */
function othersScrubbed(field: DatasetField, expr: string, subject: SubjectRows): string {
  const args = `${textArray(subject.keepEmails.map((e) => e.toLowerCase()))}, ${textArray(subject.keepPhones)}`;
  if (field.type === 'string') return `ferry_scrub_others(${expr}, ${args})`;
  if (field.type === 'json') return `ferry_scrub_others((${expr})::text, ${args})::jsonb`;
  return expr;
}

/** The field's SQL expression after the anonymization level. */
function valueSql(
  dataset: DatasetDeclaration,
  field: DatasetField,
  request: ExportRequest,
  ctx: QueryContext,
): string {
  const raw = dataset.kind === 'computed' ? `t.${field.name}` : field.sql;
  if (request.subject && field.class === 'free_text') return othersScrubbed(field, raw, request.subject);
  if (request.pii === 'full') return raw;
  const subject = dataset.kind === 'table' ? dataset.subject : undefined;
  return anonymizeSql(field, raw, {
    level: request.pii,
    key: ctx.anonymizeKey,
    ...(subject ? { subject } : {}),
  });
}

/**
 * Builds the one streamed COPY that produces a dataset export's rows. CSV cells are
 * rendered by PostgreSQL's CSV mode; NDJSON rows are one JSON object per row built from
 * each field's JSON text (`jsonTextSql`), in field order, compact.
 */
export function buildExportQuery(
  dataset: DatasetDeclaration,
  request: ExportRequest,
  ctx: QueryContext,
): CopyQuery {
  const columns = outputColumns(dataset, request);
  const { tables, where, key } = source(dataset, request, ctx);
  const render = {
    timezone: ctx.timezone,
    valueOf: (field: DatasetField) => valueSql(dataset, field, request, ctx),
  };
  if (ctx.input === 'csv') {
    const guard = request.csvGuard && request.format === 'csv';
    const projection = columns
      .map((column) => `${csvColumnSql(column, request.shaping, render, guard)} AS ${columnAlias(column)}`)
      .join(', ');
    return {
      projection,
      from: `${tables} WHERE ${where}`,
      key,
      options: csvCopyOptions(COPY_OPTIONS.csv, request.shaping),
      header: true,
    };
  }
  const members = columns.map((column) => ({ name: column.spec.name, text: jsonColumnSql(column, render) }));
  return {
    projection: jsonObjectSql(members),
    from: `${tables} WHERE ${where}`,
    key,
    options: COPY_OPTIONS.ndjson,
    header: false,
  };
}
