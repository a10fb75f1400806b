import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { type CopyQuery, literal } from '../db/database.ts';
import type { DatasetDeclaration, DatasetField, DatasetFilter, TableDataset } from '../datamap/types.ts';
import { type ExportScope, scopeTarget } from '../domain/export-scope.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { anonymizeSql } from '../transform/anonymize.ts';
import { REPORTS, type ReportBuilder, type SelectRows } from './computed/reports.ts';
import { COPY_OPTIONS, csvCellSql, jsonObjectSql, jsonTextSql } from './render-sql.ts';
import type { ExportRequest, FilterValue, RelatedSelection, SubjectRows } from './request.ts';
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

/** The dataset's output fields, in the requested column order. */
export function selectedFields(dataset: DatasetDeclaration, request: ExportRequest): DatasetField[] {
  let fields = [...dataset.fields];
  const narrowed =
    dataset.kind === 'computed' ? (REPORTS[dataset.report] as ReportBuilder).fields : undefined;
  if (narrowed) {
    const names = narrowed(request);
    fields = fields.filter((f) => names.includes(f.name));
  }
  if (!request.columns) return fields;
  const related = dataset.relatedFields ?? [];
  return request.columns.map((name) => {
    const field = fields.find((f) => f.name === name) ?? related.find((f) => f.name === name);
    if (!field) throw new FerryError('invalid_parameter', `columns: "${name}" is not part of this export`);
    return field;
  });
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
  /** FROM and JOINs (without the ones the selected fields add). */
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
    const computed = computedSource(
      REPORTS[dataset.report].source(request, ctx.dayZone, rowSelector(request, ctx)),
    );
    const conditions: string[] = [];
    // A report's rows carry the subject link's columns (e.g. revenue attribution's customer_id).
    if (request.subject) conditions.push(`(${request.subject.condition})`);
    if (request.related) conditions.push(relatedCondition(dataset, request.related, request, ctx));
    return conditions.length
      ? { ...computed, where: `${conditions.join(' AND ')} AND ${computed.where}` }
      : computed;
  }
  if (dataset.kind !== 'table')
    throw new FerryError('unsupported_format', `dataset ${dataset.name} is not tabular`);
  const { conditions, joins } = tableConditions(dataset, request.filters, request, ctx);
  if (request.subject) conditions.push(`(${request.subject.condition})`);
  if (request.related) conditions.push(relatedCondition(dataset, request.related, request, ctx));
  return {
    tables: [dataset.from, ...joins].join(' '),
    where: `${conditions.join(' AND ')}{{KEY_RANGE}}`,
    key: [...dataset.key],
  };
}

function mapDataset(name: string): DatasetDeclaration {
  const dataset = REFERENCE_DATAMAP.datasets[name];
  if (!dataset) throw new FerryError('internal', `the data map has no dataset ${name}`);
  return dataset;
}

/** A FROM fragment with the tenant id in place of `$tenant`. */
const tenantJoin = (join: string, tenantId: string) => join.split('$tenant').join(literal(tenantId));

/** The tenant condition, scope and filters of a table dataset, and the joins its filters need. */
function tableConditions(
  dataset: TableDataset,
  filters: Readonly<Record<string, FilterValue>>,
  request: ExportRequest,
  ctx: Pick<QueryContext, 'dayZone'>,
): { conditions: string[]; joins: string[] } {
  const conditions = [`t.tenant_id = ${literal(request.tenantId)}`];
  const joins: string[] = [];
  const scoped = scopeCondition(dataset, request.scope);
  if (scoped) conditions.push(scoped);
  for (const [name, value] of Object.entries(filters)) {
    const filter = dataset.filters.find((x) => x.name === name);
    if (!filter) throw new FerryError('invalid_parameter', `filter: unknown filter "${name}"`);
    if (filter.join) joins.push(tenantJoin(filter.join, request.tenantId));
    conditions.push(`(${withValue(filter.sql, filterValueSql(filter, value, ctx.dayZone))})`);
  }
  return { conditions, joins };
}

/**
 * The condition that keeps the rows related to a selection of another dataset: the
 * dataset's declared `related` condition with `$rows`, the subquery of the selected ids
 * (tenant, scope and the selection's filters). The subquery's own alias `t` shadows the
 * outer one, so it is self-contained.
 */
function relatedCondition(
  dataset: DatasetDeclaration,
  related: RelatedSelection,
  request: ExportRequest,
  ctx: QueryContext,
): string {
  const condition = dataset.related?.[related.dataset];
  const other = mapDataset(related.dataset);
  if (condition === undefined || other.kind !== 'table')
    throw new FerryError(
      'invalid_parameter',
      `related: ${dataset.name} cannot be narrowed to ${related.dataset}`,
    );
  return `(${condition.split('$rows').join(selectionSql(other, related.filters, request, ctx))})`;
}

/** The ids of a table dataset's rows that filters choose, with the request's tenant and scope. */
function selectionSql(
  dataset: TableDataset,
  filters: Readonly<Record<string, FilterValue>>,
  request: ExportRequest,
  ctx: Pick<QueryContext, 'dayZone'>,
): string {
  const { conditions, joins } = tableConditions(dataset, filters, request, ctx);
  const id = `t.${dataset.changeFeed?.idColumn ?? 'id'}`;
  return `SELECT ${id} ${[dataset.from, ...joins].join(' ')} WHERE ${conditions.join(' AND ')}`;
}

/** What a report uses to read the rows of a table dataset that filters choose. */
export function rowSelector(request: ExportRequest, ctx: Pick<QueryContext, 'dayZone'>): SelectRows {
  return (name, filters) => {
    const dataset = mapDataset(name);
    if (dataset.kind !== 'table') throw new FerryError('internal', `${name} is not a table dataset`);
    return selectionSql(dataset, filters, request, ctx);
  };
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
  const raw = field.nested
    ? nestedSql(field.nested, request, ctx)
    : dataset.kind === 'computed'
      ? `t.${field.name}`
      : field.sql;
  if (field.nested) return raw;
  if (request.subject && field.class === 'free_text') return othersScrubbed(field, raw, request.subject);
  if (request.pii === 'full') return raw;
  const subject = dataset.kind === 'table' ? dataset.subject : undefined;
  return anonymizeSql(field, raw, {
    level: request.pii,
    key: ctx.anonymizeKey,
    ...(subject ? { subject } : {}),
  });
}

/** The outer row's id as the nested rows see it (their own alias `t` shadows the outer one). */
const PARENT_JOIN = 'CROSS JOIN LATERAL (SELECT t.id) ferry_parent(id)';

/**
 * Another dataset's rows as a JSON array of objects, in that dataset's key order, each of its
 * fields anonymized by its own rule (the request's level).
 */
function nestedSql(
  nested: NonNullable<DatasetField['nested']>,
  request: ExportRequest,
  ctx: QueryContext,
): string {
  const inner = mapDataset(nested.dataset);
  if (inner.kind !== 'table')
    throw new FerryError('internal', `nested dataset ${nested.dataset} is not a table`);
  const link = nested.link.split('$parent').join('ferry_parent.id');
  const members = inner.fields
    .filter((f) => !link.includes(f.sql))
    .map((f) => ({
      name: f.name,
      text: jsonTextSql(valueSql(inner, f, request, ctx), f.type, ctx.timezone),
    }));
  const rows = `SELECT string_agg(${jsonObjectSql(members)}, ',' ORDER BY ${inner.key.join(', ')}) FROM ${inner.from} WHERE t.tenant_id = ${literal(request.tenantId)} AND ${link}`;
  return `('[' || coalesce((${rows}), '') || ']')::json`;
}

/** The FROM fragments the selected fields need, once each, after the source's own. */
function fieldJoins(fields: readonly DatasetField[], tenantId: string): string[] {
  const joins = new Set<string>();
  for (const field of fields) {
    if (field.nested) joins.add(PARENT_JOIN);
    if (field.join) joins.add(tenantJoin(field.join, tenantId));
  }
  return [...joins];
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
  const fields = selectedFields(dataset, request);
  const { tables: base, where, key } = source(dataset, request, ctx);
  const tables = [base, ...fieldJoins(fields, request.tenantId).filter((join) => !base.includes(join))].join(
    ' ',
  );
  if (ctx.input === 'csv') {
    const guard = request.csvGuard && request.format === 'csv';
    const projection = fields
      .map(
        (field) =>
          `${csvCellSql(valueSql(dataset, field, request, ctx), field.type, ctx.timezone, guard)} AS "${field.name}"`,
      )
      .join(', ');
    return { projection, from: `${tables} WHERE ${where}`, key, options: COPY_OPTIONS.csv, header: true };
  }
  const members = fields.map((field) => ({
    name: field.name,
    text: jsonTextSql(valueSql(dataset, field, request, ctx), field.type, ctx.timezone),
  }));
  return {
    projection: jsonObjectSql(members),
    from: `${tables} WHERE ${where}`,
    key,
    options: COPY_OPTIONS.ndjson,
    header: false,
  };
}
