import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PassThrough } from 'node:stream';
import { Type } from 'typebox';
import { auditCaller, recordAudit } from '../../auth/audit.ts';
import type { AuthContext } from '../../auth/context.ts';
import { authorize, authorizeExport } from '../../auth/policy.ts';
import { historyStart, limitsFor, quotaExceeded } from '../../auth/quotas.ts';
import type { Database } from '../../db/database.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import type { DatasetDeclaration } from '../../datamap/types.ts';
import { EXPORT_FORMATS } from '../../format/types.ts';
import { FerryError, invalid } from '../../lib/errors.ts';
import { loadOrCreateSecretKey } from '../../lib/secret-box.ts';
import { contentDisposition } from '../../store/content-disposition.ts';
import { PII_LEVELS, type PiiLevel } from '../../transform/anonymize.ts';
import { decodeChangeCursor, encodeChangeCursor, planChanges } from '../../export/changes.ts';
import { isDocumentDataset } from '../../export/documents.ts';
import { PAGE_SIZE, planPage } from '../../export/paging.ts';
import {
  DATASET_OPTIONS,
  DEFAULT_PII_LEVEL,
  type ExportRequest,
  parseExportRequest,
} from '../../export/request.ts';
import { exportDataset } from '../../export/run.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const DATE = /^\d{4}-\d{2}-\d{2}$/;

const Query = Type.Object(
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
    page: Type.Optional(Type.Integer({ minimum: 1, description: '1-based page number (offset paging)' })),
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

type QueryInput = Record<string, unknown> & {
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
const OWN_PARAMETERS = new Set(Object.keys(Query.properties));

const HEADERS = {
  'X-Total-Records': 'Rows matching the filters over all pages (change feed: changes in the current run)',
  'X-Page-Count': 'Pages of page_size rows',
  'X-Export-ID': 'Id of this export request, as recorded in the audit log',
  'X-Next-Cursor': 'Pass back as cursor (or updated_since) for the next page',
  'X-End-Of-Stream': 'true when nothing follows this page (change feed: caught up)',
  Link: 'RFC 8288 link to the next page, rel="next"',
};

const Body = { type: 'string', format: 'binary' } as const;

/** What the document datasets (knowledge_base, account) are sent as, per format. */
const DOCUMENT_TYPES = {
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

function piiLevel(value: string | undefined): PiiLevel {
  if (value === undefined || value === 'false') return DEFAULT_PII_LEVEL;
  if (value === 'true') return 'full';
  return value as PiiLevel;
}

function acceptedFilters(dataset: DatasetDeclaration): string[] {
  const names = dataset.filters.map((f) => f.name).filter((n) => n !== 'from' && n !== 'to');
  return [...names, ...Object.keys(DATASET_OPTIONS[dataset.name] ?? {})];
}

/** Turns the query string into the engine's loosely typed input; unknown parameters are errors naming them. */
function exportInput(tenantId: string, dataset: DatasetDeclaration, q: QueryInput) {
  const start = calendarDate('start_date', q.start_date);
  const end = calendarDate('end_date', q.end_date);
  if (start && end && start > end) throw invalid('end_date', `${end} is before start_date ${start}`);
  const filters: Record<string, string> = {};
  const options: Record<string, string> = {};
  const declared = new Set(dataset.filters.map((f) => f.name));
  const analytics = dataset.name === 'analytics';
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
    if (declared.has(name)) filters[name] = value;
    else if (!(analytics && name === 'site_url')) throw reject(name);
  }
  const analyticsOnly = ['metrics', 'granularity', 'site_urls', 'site_urls[]'] as const;
  for (const name of analyticsOnly) {
    if (q[name] !== undefined && !analytics) throw reject(name);
  }
  if (analytics) {
    const sites = [...(q.site_urls ?? []), ...(q['site_urls[]'] ?? []), ...(q.site_url ? [q.site_url] : [])]
      .flatMap((s) => s.split(','))
      .map((s) => s.trim())
      .filter(Boolean);
    if (sites.length) options.site_urls = [...new Set(sites)].join(',');
    if (q.metrics !== undefined) options.metrics = q.metrics;
    if (q.granularity !== undefined) options.granularity = q.granularity;
  }
  if ((start || end) && !hasDays(dataset))
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

function today(): string {
  return new Date().toISOString().slice(0, 10);
}

/** The URL of the next page: the same query with the cursor (or page) moved on. */
function nextLink(
  request: FastifyRequest,
  publicUrl: string | undefined,
  set: Record<string, string>,
  drop: string[],
): string {
  const url = new URL(request.url, 'http://ferry.invalid');
  for (const name of drop) url.searchParams.delete(name);
  for (const [name, value] of Object.entries(set)) url.searchParams.set(name, value);
  const target = `${url.pathname}${url.search}`;
  const absolute = publicUrl ? new URL(target, publicUrl).toString() : target;
  return `<${absolute}>; rel="next"`;
}

interface AuditContext {
  database: Database;
  auth: AuthContext;
  action: string;
  dataset: string;
  exportId: string;
  dateRange: { from?: string; to?: string } | null;
  request: FastifyRequest;
}

/** Sends the planned body and records the audit entry once it has been written (or failed). */
function sendStream(
  reply: FastifyReply,
  write: (out: PassThrough) => Promise<{ records: number; bytes: number; tombstones?: number }>,
  audit: AuditContext,
): FastifyReply {
  const body = new PassThrough();
  write(body)
    .then(
      (outcome) =>
        recordAudit(audit.database, {
          ...auditCaller(audit.auth),
          action: audit.action,
          dataType: audit.dataset,
          dateRange: audit.dateRange,
          recordCount: outcome.records + (outcome.tombstones ?? 0),
          fileBytes: outcome.bytes,
          success: true,
          targetId: audit.exportId,
        }),
      (err: Error) => {
        body.destroy(err);
        audit.request.log.warn({ err, export_id: audit.exportId }, 'paged export stopped');
        return recordAudit(audit.database, {
          ...auditCaller(audit.auth),
          action: audit.action,
          dataType: audit.dataset,
          dateRange: audit.dateRange,
          success: false,
          error: err instanceof FerryError ? err.message : 'the export stopped before it was complete',
          targetId: audit.exportId,
        });
      },
    )
    .catch((err: unknown) =>
      audit.request.log.error({ err }, 'could not record the audit entry of a paged export'),
    );
  return reply.send(body);
}

/**
 * `GET /api/v1/export/{dataset}`: synchronous exports, one page at a time, streamed.
 * The same endpoint serves the change feed with `updated_since`.
 */
export const exportDatasetRoutes: RoutePlugin = async (app, { database, config, now: clock }) => {
  const now = clock ?? (() => new Date());
  let secret: string | undefined;
  const sessionSecret = () => {
    secret ??= loadOrCreateSecretKey(config);
    return secret;
  };

  app.get(
    '/api/v1/export/:dataset',
    {
      preHandler: app.authenticate,
      schema: {
        tags: ['exports'],
        summary: 'Export one dataset, page by page (streamed), or its changes since a cursor',
        description:
          'Streams one page of a dataset in the requested format. Page with `cursor` (keyset: stable while ' +
          'data changes; pass `X-Next-Cursor` back) or with `page` (offset). With `updated_since` the ' +
          'endpoint is a change feed: rows written since the cursor and tombstones for deleted rows, ' +
          'until `X-End-Of-Stream: true`. knowledge_base and account are single JSON documents and are ' +
          'not paged. See docs/paged-exports.md and docs/incremental.md.',
        security: [{ bearer: [] }],
        params: Type.Object(
          {
            dataset: Type.String({
              description: 'A dataset of the data map',
              examples: ['conversations', 'messages', 'analytics'],
            }),
          },
          { additionalProperties: false },
        ),
        querystring: Query,
        response: {
          200: {
            description: 'The page, streamed',
            headers: Object.fromEntries(
              Object.entries(HEADERS).map(([name, description]) => [
                name,
                { description, schema: { type: 'string' } },
              ]),
            ),
            content: {
              'text/csv': { schema: Body },
              'application/json': { schema: Body },
              'application/x-ndjson': { schema: Body },
              'application/xml': { schema: Body },
              'application/vnd.apache.parquet': { schema: Body },
            },
          },
          ...problemResponses(400, 401, 403, 410, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'exports:create');
      const q = request.query as QueryInput;
      const name = request.params.dataset;
      const dataset = REFERENCE_DATAMAP.datasets[name];
      if (!dataset)
        throw invalid('dataset', `unknown dataset "${name}"`, Object.keys(REFERENCE_DATAMAP.datasets));
      const { input, start, end } = exportInput(auth.tenantId, dataset, q);
      const granted = authorizeExport(auth, { dataset: dataset.name, pii: piiLevel(q.include_pii) });
      const parsed = parseExportRequest({ ...input, pii: granted.pii, scope: granted.scope });
      const from = await historyWindow(database, auth, dataset, start, now());
      // Days go in as the engine's from/to filters (computed datasets read them directly).
      const exportRequest: ExportRequest = {
        ...parsed,
        filters: { ...parsed.filters, ...(from ? { from } : {}), ...(end ? { to: end } : {}) },
      };
      const dateRange =
        start || end ? { ...(start ? { from: start } : {}), ...(end ? { to: end } : {}) } : null;
      const gzip = exportRequest.compression === 'gzip';
      const disposition = (extension: string) =>
        contentDisposition(`${dataset.name}_${today()}.${extension}`);
      reply.header('cache-control', 'no-store');
      if (gzip) reply.header('content-encoding', 'gzip');

      if (isDocumentDataset(dataset.name)) {
        for (const param of ['page', 'cursor', 'updated_since'] as const) {
          if (q[param] !== undefined)
            throw invalid(param, `dataset ${dataset.name} is one JSON document and is not paged`);
        }
        const exportId = randomUUID();
        const type = DOCUMENT_TYPES[exportRequest.format as keyof typeof DOCUMENT_TYPES];
        if (!type)
          throw invalid('format', `dataset ${dataset.name} is a document`, Object.keys(DOCUMENT_TYPES));
        reply
          .type(type.contentType)
          .header('content-disposition', disposition(type.extension))
          .header('x-export-id', exportId)
          .header('x-page-count', '1')
          .header('x-end-of-stream', 'true');
        return sendStream(reply, (out) => exportDataset(database, exportRequest, out, { exportId }), {
          database,
          auth,
          action: 'export.page',
          dataset: dataset.name,
          exportId,
          dateRange,
          request,
        });
      }

      if (q.updated_since !== undefined) {
        for (const param of ['page', 'cursor'] as const) {
          if (q[param] !== undefined)
            throw invalid(
              param,
              'cannot be combined with updated_since; pass X-Next-Cursor as updated_since',
            );
        }
        const since = decodeChangeCursor(q.updated_since, { tenantId: auth.tenantId, dataset: dataset.name });
        const plan = await planChanges(database, exportRequest, since, {
          limit: q.page_size ?? PAGE_SIZE.default,
          secret: sessionSecret(),
        });
        const next = encodeChangeCursor(plan.nextCursor);
        reply
          .type(plan.contentType)
          .header('content-disposition', disposition(plan.extension))
          .header('x-total-records', String(plan.total))
          .header('x-page-count', String(Math.ceil(plan.total / (q.page_size ?? PAGE_SIZE.default))))
          .header('x-export-id', plan.exportId)
          .header('x-next-cursor', next)
          .header('x-end-of-stream', String(plan.endOfStream));
        if (!plan.endOfStream)
          reply.header(
            'link',
            nextLink(request, config.publicUrl, { updated_since: next }, ['cursor', 'page']),
          );
        return sendStream(reply, (out) => plan.write(out), {
          database,
          auth,
          action: 'export.changes',
          dataset: dataset.name,
          exportId: plan.exportId,
          dateRange,
          request,
        });
      }

      const plan = await planPage(database, exportRequest, {
        pageSize: q.page_size,
        page: q.page,
        cursor: q.cursor,
        secret: sessionSecret(),
      });
      reply
        .type(plan.contentType)
        .header('content-disposition', disposition(plan.extension))
        .header('x-total-records', String(plan.total))
        .header('x-page-count', String(plan.pageCount))
        .header('x-export-id', plan.exportId)
        .header('x-end-of-stream', String(plan.endOfStream));
      if (plan.nextCursor) reply.header('x-next-cursor', plan.nextCursor);
      if (!plan.endOfStream) {
        const link =
          q.page !== undefined
            ? nextLink(request, config.publicUrl, { page: String(q.page + 1) }, ['cursor'])
            : nextLink(request, config.publicUrl, { cursor: plan.nextCursor! }, ['page']);
        reply.header('link', link);
      }
      return sendStream(reply, (out) => plan.write(out), {
        database,
        auth,
        action: 'export.page',
        dataset: dataset.name,
        exportId: plan.exportId,
        dateRange,
        request,
      });
    },
  );
};

/**
 * The plan's history window: an explicit start_date before it is refused; without one,
 * datasets with days to filter on start at the window. Returns the start day to use.
 */
async function historyWindow(
  database: Database,
  auth: AuthContext,
  dataset: DatasetDeclaration,
  start: string | undefined,
  at: Date,
): Promise<string | undefined> {
  if (!hasDays(dataset)) return start;
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

/** Whether start_date/end_date apply: tables with a date filter, and the analytics and attribution reports. */
function hasDays(dataset: DatasetDeclaration): boolean {
  if (isDocumentDataset(dataset.name)) return false;
  return dataset.kind === 'computed' || dataset.filters.some((f) => f.name === 'from');
}
