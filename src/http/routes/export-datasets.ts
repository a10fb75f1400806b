import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PassThrough } from 'node:stream';
import { Type } from 'typebox';
import { auditCaller, recordAudit } from '../../auth/audit.ts';
import type { AuthContext } from '../../auth/context.ts';
import { authorize, authorizeExport } from '../../auth/policy.ts';
import type { Database } from '../../db/database.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import type { DocumentDataset } from '../../datamap/types.ts';
import { decodeChangeCursor, encodeChangeCursor, planChanges } from '../../collect/changes.ts';
import { documentRecords } from '../../collect/documents.ts';
import { PAGE_SIZE, planPage } from '../../collect/paging.ts';
import { type ExportRequest, parseExportRequest } from '../../collect/request.ts';
import { checkSiteUrls, requestedSites } from '../../collect/tenant.ts';
import { exportDataset } from '../../pipeline/export-dataset.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../../lib/secret-box.ts';
import { contentDisposition } from '../../store/content-disposition.ts';
import { problemResponses } from '../problem.ts';
import { responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';
import {
  Body,
  DOCUMENT_TYPES,
  ExportQuery,
  type ExportQueryInput,
  exportInput,
  historyWindow,
  piiLevel,
} from './export-datasets-params.ts';

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

export interface AuditContext {
  database: Database;
  auth: AuthContext;
  dataset: string;
  dateRange: { from?: string; to?: string } | null;
  request: FastifyRequest;
}

/** Sends the planned body and records the audit entry once it has been written (or failed). */
export function sendStream(
  reply: FastifyReply,
  write: (out: PassThrough) => Promise<{ records: number; bytes: number; tombstones?: number }>,
  audit: AuditContext & { exportId: string; action: string },
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
      onRequest: app.authenticate,
      // HEAD answers the same headers (counts, cursor) without the rows: documented too.
      config: { swagger: { exposeHeadRoute: true } },
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
        querystring: ExportQuery,
        response: {
          200: {
            description: 'The page, streamed',
            headers: responseHeaders(
              'Content-Disposition',
              'Content-Encoding',
              'Cache-Control',
              'X-Total-Records',
              'X-Page-Count',
              'X-Export-ID',
              'X-Next-Cursor',
              'X-End-Of-Stream',
              'Link',
            ),
            content: {
              'text/csv': { schema: Body },
              'application/json': { schema: Body },
              'application/x-ndjson': { schema: Body },
              'application/xml': { schema: Body },
              'application/vnd.apache.parquet': { schema: Body },
              // knowledge_base as markdown: one file per document, zipped.
              'application/zip': { schema: Body },
            },
          },
          ...problemResponses(400, 401, 403, 410, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'exports:create');
      const q = request.query as ExportQueryInput;
      const name = request.params.dataset;
      const dataset = REFERENCE_DATAMAP.datasets[name];
      if (!dataset)
        throw invalid('dataset', `unknown dataset "${name}"`, Object.keys(REFERENCE_DATAMAP.datasets));
      const { input, start, end } = exportInput(auth.tenantId, dataset, q);
      const dateRange =
        start || end ? { ...(start ? { from: start } : {}), ...(end ? { to: end } : {}) } : null;
      const audit: AuditContext = { database, auth, dataset: dataset.name, dateRange, request };
      const granted = await refusalsAudited(audit, () =>
        authorizeExport(auth, { dataset: dataset.name, pii: piiLevel(q.include_pii) }),
      );
      const parsed = parseExportRequest({ ...input, pii: granted.pii, scope: granted.scope });
      await checkSiteUrls(database, auth.tenantId, requestedSites(parsed.filters, parsed.options));
      const from = await historyWindow(database, auth, dataset, start, now());
      // Days go in as the engine's from/to filters (computed datasets read them directly).
      const exportRequest: ExportRequest = {
        ...parsed,
        filters: { ...parsed.filters, ...(from ? { from } : {}), ...(end ? { to: end } : {}) },
      };
      const ctx: Handling = { request, reply, q, exportRequest, audit, publicUrl: config.publicUrl };
      if (dataset.kind === 'document') return sendDocument(ctx, dataset);
      if (q.updated_since !== undefined) return sendChanges(ctx, sessionSecret());
      return sendPage(ctx, sessionSecret());
    },
  );
};

interface Handling {
  request: FastifyRequest;
  reply: FastifyReply;
  q: ExportQueryInput;
  exportRequest: ExportRequest;
  audit: AuditContext;
  publicUrl: string | undefined;
}

function disposition(dataset: string, extension: string): string {
  return contentDisposition(`${dataset}_${new Date().toISOString().slice(0, 10)}.${extension}`);
}

/** The headers of the body about to be sent (set once nothing can fail before it, so a problem carries none). */
function bodyHeaders(
  reply: FastifyReply,
  request: ExportRequest,
  contentType: string,
  name: string,
): FastifyReply {
  reply.type(contentType).header('content-disposition', name).header('cache-control', 'no-store');
  if (request.compression === 'gzip') reply.header('content-encoding', 'gzip');
  return reply;
}

/** knowledge_base and account: one document, not paged. */
async function sendDocument(
  { reply, q, exportRequest, audit }: Handling,
  declared: DocumentDataset,
): Promise<FastifyReply> {
  const dataset = exportRequest.dataset;
  for (const param of ['page', 'cursor', 'updated_since'] as const) {
    if (q[param] !== undefined) throw invalid(param, `dataset ${dataset} is one document and is not paged`);
  }
  const type = DOCUMENT_TYPES[exportRequest.format as keyof typeof DOCUMENT_TYPES];
  if (!type) throw invalid('format', `dataset ${dataset} is a document`, Object.keys(DOCUMENT_TYPES));
  const exportId = randomUUID();
  const total = await documentRecords(audit.database, declared, exportRequest.tenantId);
  bodyHeaders(reply, exportRequest, type.contentType, disposition(dataset, type.extension))
    .header('x-total-records', String(total))
    .header('x-page-count', '1')
    .header('x-export-id', exportId)
    .header('x-end-of-stream', 'true');
  return sendStream(reply, (out) => exportDataset(audit.database, exportRequest, out, { exportId }), {
    ...audit,
    exportId,
    action: 'export.page',
  });
}

/** The change feed: `updated_since` = a cursor, or 0 / empty for everything. */
async function sendChanges(ctx: Handling, secret: string): Promise<FastifyReply> {
  const { request, reply, q, exportRequest, audit } = ctx;
  for (const param of ['page', 'cursor'] as const) {
    if (q[param] !== undefined)
      throw invalid(param, 'cannot be combined with updated_since; pass X-Next-Cursor as updated_since');
  }
  const since = decodeChangeCursor(q.updated_since ?? '', {
    tenantId: audit.auth.tenantId,
    dataset: exportRequest.dataset,
  });
  const pageSize = q.page_size ?? PAGE_SIZE.default;
  const plan = await planChanges(audit.database, exportRequest, since, { limit: pageSize, secret });
  const next = encodeChangeCursor(plan.nextCursor);
  bodyHeaders(reply, exportRequest, plan.contentType, disposition(plan.dataset, plan.extension))
    .header('x-total-records', String(plan.total))
    .header('x-page-count', String(Math.ceil(plan.total / pageSize)))
    .header('x-export-id', plan.exportId)
    .header('x-next-cursor', next)
    .header('x-end-of-stream', String(plan.endOfStream));
  if (!plan.endOfStream)
    reply.header('link', nextLink(request, ctx.publicUrl, { updated_since: next }, ['cursor', 'page']));
  if (request.method === 'HEAD') return reply.send();
  return sendStream(reply, (out) => plan.write(out), {
    ...audit,
    exportId: plan.exportId,
    action: 'export.changes',
  });
}

/** One page of a tabular dataset, by cursor or by number. */
async function sendPage(ctx: Handling, secret: string): Promise<FastifyReply> {
  const { request, reply, q, exportRequest, audit } = ctx;
  const plan = await planPage(audit.database, exportRequest, {
    pageSize: q.page_size,
    page: q.page,
    cursor: q.cursor,
    secret,
  });
  bodyHeaders(reply, exportRequest, plan.contentType, disposition(plan.dataset, plan.extension))
    .header('x-total-records', String(plan.total))
    .header('x-page-count', String(plan.pageCount))
    .header('x-export-id', plan.exportId)
    .header('x-end-of-stream', String(plan.endOfStream));
  if (plan.nextCursor) reply.header('x-next-cursor', plan.nextCursor);
  if (!plan.endOfStream) {
    const link =
      q.page !== undefined
        ? nextLink(request, ctx.publicUrl, { page: String(q.page + 1) }, ['cursor'])
        : nextLink(request, ctx.publicUrl, { cursor: plan.nextCursor! }, ['page']);
    reply.header('link', link);
  }
  if (request.method === 'HEAD') return reply.send();
  return sendStream(reply, (out) => plan.write(out), {
    ...audit,
    exportId: plan.exportId,
    action: 'export.page',
  });
}

/** A refused export (role, personal data, scope) is audited before the 403 goes out. */
export async function refusalsAudited<T>(audit: AuditContext, check: () => T): Promise<T> {
  try {
    return check();
  } catch (err) {
    if (err instanceof FerryError && err.code === 'forbidden') {
      await recordAudit(audit.database, {
        ...auditCaller(audit.auth),
        action: 'export.page',
        dataType: audit.dataset,
        dateRange: audit.dateRange,
        success: false,
        error: err.message,
      });
    }
    throw err;
  }
}
