import { Type } from 'typebox';
import type { AuthContext } from '../../auth/context.ts';
import { historyStart, limitsFor, quotaExceeded } from '../../auth/quotas.ts';
import type { Database } from '../../db/database.ts';
import type { DatasetDeclaration } from '../../datamap/types.ts';
import { isDated } from '../../datamap/datamap.ts';
import { MAX_PAGE, PAGE_SIZE } from '../../collect/paging.ts';
import type { ExportInput } from '../../collect/request.ts';
import { EXPORT_FORMATS } from '../../format/types.ts';
import { invalid } from '../../domain/ferry-error.ts';
import { DEFAULT_PII_LEVEL, PII_LEVELS, type PiiLevel } from '../../domain/pii-level.ts';

/**
 * The query string of `GET /api/v1/export/{dataset}` and its translation into the export
 * engine's input: dates, the personal-data switch, the dataset's own filters by name,
 * analytics options, and the plan's history window.
 */

const DATE = /^\d{4}-\d{2}-\d{2}$/;

export const ExportQuery = Type.Object(
  {
    start_date: Type.Optional(
      Type.String({
        description: 'First day (inclusive), YYYY-MM-DD, in the tenant time zone',
        examples: ['2025-01-01'],
      }),
    ),
    end_date: Type.Optional(
      Type.String({ description: 'Last day (inclusive), YYYY-MM-DD', examples: ['2025-01-31'] }),
    ),
    format: Type.Optional(
      Type.Enum([...EXPORT_FORMATS, 'markdown'], {
        description: 'csv (default for tables), json, ndjson, xml, parquet; knowledge_base also markdown',
      }),
    ),
    include_pii: Type.Optional(
      Type.Enum(['false', 'true', ...PII_LEVELS], {
        description: `false (default): ${DEFAULT_PII_LEVEL} anonymization; true: full data; or a level name`,
      }),
    ),
    site_url: Type.Optional(Type.String({ minLength: 1, description: 'Only this site' })),
    status: Type.Optional(Type.String({ minLength: 1, description: 'Conversation status filter' })),
    columns: Type.Optional(
      Type.String({ minLength: 1, description: 'Comma-separated output columns, in order' }),
    ),
    page_size: Type.Optional(
      Type.Integer({
        minimum: PAGE_SIZE.min,
        maximum: PAGE_SIZE.max,
        description: 'Rows per page (default 1000)',
      }),
    ),
    page: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_PAGE, description: '1-based page number (offset paging)' }),
    ),
    cursor: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 8192,
        description: 'X-Next-Cursor of the previous page (keyset paging)',
      }),
    ),
    updated_since: Type.Optional(
      Type.String({
        maxLength: 8192,
        description:
          'Change feed: X-Next-Cursor of the previous call, or 0 (or empty) to start from the beginning',
      }),
    ),
    compression: Type.Optional(
      Type.Enum(['gzip', 'none'], {
        description: 'gzip: the body is sent with Content-Encoding: gzip',
      }),
    ),
    metrics: Type.Optional(
      Type.String({ description: 'analytics: performance, attribution, revenue or all' }),
    ),
    granularity: Type.Optional(
      Type.Enum(['hourly', 'daily', 'weekly', 'monthly'], {
        description: 'analytics: period length',
      }),
    ),
    site_urls: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'analytics: sites' })),
    'site_urls[]': Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), { description: 'analytics: sites' }),
    ),
    timezone: Type.Optional(
      Type.String({ description: 'IANA zone for timestamps and days, e.g. Europe/Berlin' }),
    ),
  },
  {
    additionalProperties: Type.String({
      description: 'Any filter the dataset declares in the data map, by name',
    }),
  },
);

export type ExportQueryInput = Record<string, unknown> & {
  start_date?: string;
  end_date?: string;
  format?: string;
  include_pii?: string;
  site_url?: string;
  status?: string;
  columns?: string;
  page_size?: number;
  page?: number;
  cursor?: string;
  updated_since?: string;
  compression?: 'gzip' | 'none';
  metrics?: string;
  granularity?: string;
  site_urls?: string[];
  'site_urls[]'?: string[];
  timezone?: string;
};

/** Parameters of the endpoint itself; every other query parameter must be a filter of the dataset. */
const OWN_PARAMETERS = new Set(Object.keys(ExportQuery.properties));

export const Body = { type: 'string', format: 'binary' } as const;

/** What the document datasets (knowledge_base, account) are sent as, per format. */
export const DOCUMENT_TYPES = {
  json: { contentType: 'application/json', extension: 'json' },
  xml: { contentType: 'application/xml', extension: 'xml' },
  markdown: { contentType: 'application/zip', extension: 'md.zip' },
} as const;

function calendarDate(param: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const parsed = DATE.test(value) ? new Date(`${value}T00:00:00Z`) : null;
  if (!parsed || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== value)
    throw invalid(param, `"${value}" is not a calendar date (YYYY-MM-DD)`);
  return value;
}

export function piiLevel(value: string | undefined): PiiLevel {
  if (value === undefined || value === 'false') return DEFAULT_PII_LEVEL;
  if (value === 'true') return 'full';
  return value as PiiLevel;
}

function acceptedFilters(dataset: DatasetDeclaration): string[] {
  const names = dataset.filters.map((f) => f.name).filter((n) => n !== 'from' && n !== 'to');
  return [...names, ...dataset.parameters.map((p) => p.name)];
}

/** Turns the query string into the engine's loosely typed input; unknown parameters are errors naming them. */
export function exportInput(
  tenantId: string,
  dataset: DatasetDeclaration,
  q: ExportQueryInput,
): { input: ExportInput; start: string | undefined; end: string | undefined } {
  const start = calendarDate('start_date', q.start_date);
  const end = calendarDate('end_date', q.end_date);
  if (start && end && start > end) throw invalid('end_date', `${end} is before start_date ${start}`);
  const filters: Record<string, string> = {};
  const options: Record<string, string> = {};
  const declared = new Set(dataset.filters.map((f) => f.name));
  // Report parameters this endpoint names in its query string; the dataset must declare them.
  const takes = (parameter: string) => dataset.parameters.some((p) => p.name === parameter);
  const reject = (name: string) =>
    invalid(
      name,
      `is not a filter of dataset ${dataset.name}`,
      acceptedFilters(dataset).length ? acceptedFilters(dataset) : ['(none)'],
    );

  for (const [name, value] of Object.entries(q)) {
    if (value === undefined || OWN_PARAMETERS.has(name)) continue;
    if (!declared.has(name) || name === 'from' || name === 'to') {
      if (name === 'from' || name === 'to')
        throw invalid(name, `use ${name === 'from' ? 'start_date' : 'end_date'}`);
      throw reject(name);
    }
    filters[name] = String(value);
  }
  for (const name of ['site_url', 'status'] as const) {
    const value = q[name];
    if (value === undefined) continue;
    // A dataset with a site list and no site filter takes `site_url` as a list of one.
    if (declared.has(name)) filters[name] = value;
    else if (!(name === 'site_url' && takes('site_urls'))) throw reject(name);
  }
  for (const name of ['metrics', 'granularity', 'site_urls', 'site_urls[]'] as const) {
    if (q[name] !== undefined && !takes(name.replace('[]', ''))) throw reject(name);
  }
  if (takes('site_urls')) {
    const sites = [...(q.site_urls ?? []), ...(q['site_urls[]'] ?? []), ...(q.site_url ? [q.site_url] : [])]
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter(Boolean);
    if (sites.length) options.site_urls = [...new Set(sites)].join(',');
  }
  for (const name of ['metrics', 'granularity'] as const) {
    if (q[name] !== undefined) options[name] = q[name];
  }
  if ((start || end) && !isDated(dataset))
    throw invalid(start ? 'start_date' : 'end_date', `dataset ${dataset.name} has no date to filter on`);
  return {
    input: {
      tenantId,
      dataset: dataset.name,
      format: q.format,
      compression: q.compression ?? 'none',
      filters,
      columns: q.columns,
      timezone: q.timezone,
      options,
    },
    start,
    end,
  };
}

/**
 * The plan's history window: an explicit start_date before it is refused; without one,
 * datasets with days to filter on start at the window. Returns the start day to use.
 */
export async function historyWindow(
  database: Database,
  auth: AuthContext,
  dataset: DatasetDeclaration,
  start: string | undefined,
  at: Date,
): Promise<string | undefined> {
  if (!isDated(dataset)) return start;
  const earliest = historyStart(await limitsFor(database, auth), at);
  if (!earliest) return start;
  const first = earliest.toISOString().slice(0, 10);
  if (start === undefined) return first;
  if (start < first)
    throw quotaExceeded(
      'history_window',
      `start_date: the ${auth.plan} plan exports history from ${first} on; ask for start_date ${first} or later, or upgrade the plan`,
      null,
    );
  return start;
}
