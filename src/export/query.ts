import { type CopyQuery, literal } from '../db/database.ts';
import type { DatasetDeclaration, DatasetField, DatasetFilter } from '../datamap/types.ts';
import { FerryError } from '../lib/errors.ts';
import { anonymizeSql } from '../transform/anonymize.ts';
import { analyticsColumns, analyticsSource } from './computed/analytics.ts';
import { revenueAttributionSource } from './computed/revenue-attribution.ts';
import { COPY_OPTIONS, csvCellSql, jsonObjectSql, jsonValueSql } from './render-sql.ts';
import type { ExportRequest, FilterValue } from './request.ts';
import type { WriterInput } from '../format/types.ts';

export interface QueryContext {
  /** The zone for timestamps and date filters (request zone, else the tenant's). */
  readonly timezone: string;
  /** Per-export key for keyed-hash pseudonyms. */
  readonly anonymizeKey: string;
  readonly input: WriterInput;
}

/** The dataset's output fields, in the requested column order. */
export function selectedFields(dataset: DatasetDeclaration, request: ExportRequest): DatasetField[] {
  let fields = [...dataset.fields];
  if (dataset.name === 'analytics') {
    const metrics = (request.options.metrics ?? 'all').split(',') as ('performance' | 'attribution' | 'revenue' | 'all')[];
    const names = analyticsColumns(metrics);
    fields = fields.filter((f) => names.includes(f.name));
  }
  if (!request.columns) return fields;
  return request.columns.map((name) => {
    const field = fields.find((f) => f.name === name);
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

/** The FROM clause with tenant scope and filters, plus the ordering key. */
function source(dataset: DatasetDeclaration, request: ExportRequest, ctx: QueryContext): { from: string; key: string[] } {
  const f = request.filters;
  if (dataset.name === 'analytics') {
    const metrics = (request.options.metrics ?? 'all').split(',') as ('performance' | 'attribution' | 'revenue' | 'all')[];
    return analyticsSource({
      tenantId: request.tenantId,
      timezone: ctx.timezone,
      granularity: (request.options.granularity ?? 'daily') as 'daily',
      metrics,
      ...(typeof f.from === 'string' ? { from: f.from.slice(0, 10) } : {}),
      ...(typeof f.to === 'string' ? { to: f.to.slice(0, 10) } : {}),
      ...(request.options.site_urls ? { siteUrls: request.options.site_urls.split(',') } : {}),
    });
  }
  if (dataset.name === 'revenue_attribution') {
    return revenueAttributionSource({
      tenantId: request.tenantId,
      timezone: ctx.timezone,
      model: (request.options.attribution_model ?? 'last_touch') as 'last_touch',
      ...(typeof f.from === 'string' ? { from: f.from.slice(0, 10) } : {}),
      ...(typeof f.to === 'string' ? { to: f.to.slice(0, 10) } : {}),
      ...(request.options.customer_segment ? { customerSegment: request.options.customer_segment } : {}),
    });
  }
  if (dataset.kind !== 'table') throw new FerryError('unsupported_format', `dataset ${dataset.name} is not tabular`);
  const conditions = [`t.tenant_id = ${literal(request.tenantId)}`];
  for (const [name, value] of Object.entries(f)) {
    const filter = dataset.filters.find((x) => x.name === name);
    if (!filter) throw new FerryError('invalid_parameter', `filter: unknown filter "${name}"`);
    conditions.push(`(${filter.sql.replaceAll('$value', filterValueSql(filter, value, ctx.timezone))})`);
  }
  return { from: `${dataset.from} WHERE ${conditions.join(' AND ')}{{KEY_RANGE}}`, key: [...dataset.key] };
}

/** The field's SQL expression after the anonymization level. */
function valueSql(dataset: DatasetDeclaration, field: DatasetField, request: ExportRequest, ctx: QueryContext): string {
  const raw = dataset.kind === 'computed' ? `t.${field.name}` : field.sql;
  if (request.pii === 'full') return raw;
  return anonymizeSql(field, raw, { level: request.pii, key: ctx.anonymizeKey });
}

/** Builds the one streamed COPY that produces a dataset export's rows. */
export function buildExportQuery(dataset: DatasetDeclaration, request: ExportRequest, ctx: QueryContext): CopyQuery {
  const fields = selectedFields(dataset, request);
  const { from, key } = source(dataset, request, ctx);
  if (ctx.input === 'csv') {
    const projection = fields
      .map((field) => {
        const guard = request.csvGuard && request.format === 'csv';
        return `${csvCellSql(valueSql(dataset, field, request, ctx), field.type, ctx.timezone, guard)} AS "${field.name}"`;
      })
      .join(', ');
    return { projection, from, key, options: COPY_OPTIONS.csv, header: true };
  }
  const projection = jsonObjectSql(
    fields.map((field) => ({ name: field.name, sql: jsonValueSql(valueSql(dataset, field, request, ctx), field.type, ctx.timezone) })),
  );
  return { projection, from, key, options: COPY_OPTIONS.ndjson, header: false };
}
