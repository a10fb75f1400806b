import { Type } from 'typebox';
import { EXPORT_STATUSES } from '../../domain/export-state.ts';
import { ExportBodySchema, SHAPING_SCHEMAS, ScopeSchema } from '../../export-requests/export-body.ts';
import {
  createExport,
  deleteExport,
  estimateExport,
  type ExportServiceDeps,
  getExport,
  issueDownload,
  listExports,
  registerExportUsage,
  repeatExport,
} from '../../export-requests/service.ts';
import { linkBase } from '../../export-requests/links.ts';
import type { FerryApp } from '../types.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, responseHeaders } from '../responses.ts';
import type { RouteDeps, RoutePlugin } from '../types.ts';

const Uuid = Type.String({ format: 'uuid', description: 'Export id' });
const Instant = Type.String({ format: 'date-time' });
const NullableInstant = Type.Union([Instant, Type.Null()]);
const closed = { additionalProperties: false } as const;

const FileView = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    bytes: Type.Integer(),
    records: Type.Integer(),
    sha256: Type.String({ description: 'Hex SHA-256 of the bytes a download returns' }),
    content_type: Type.String(),
    encrypted: Type.Boolean({ description: 'Encrypted with age for the request recipients' }),
  },
  closed,
);

const RequestView = Type.Object(
  {
    datasets: Type.Array(Type.String()),
    scope: ScopeSchema,
    format: Type.Union([Type.String(), Type.Null()]),
    compression: Type.Union([Type.String(), Type.Null()]),
    package: Type.String(),
    from: Type.Union([Type.String(), Type.Null()]),
    to: Type.Union([Type.String(), Type.Null()]),
    filters: Type.Record(Type.String(), Type.String()),
    columns: Type.Union([Type.Array(Type.String()), Type.Null()]),
    pii: Type.String(),
    timezone: Type.Union([Type.String(), Type.Null()]),
    options: Type.Record(Type.String(), Type.String()),
    bom: Type.Boolean(),
    csv_guard: Type.Boolean(),
    encryption: Type.Union([Type.Object({ recipients: Type.Array(Type.String()) }, closed), Type.Null()]),
    split_size: Type.Optional(
      Type.Union([Type.Integer(), Type.Null()], { description: 'Largest part in bytes; null: one file' }),
    ),
    // Output shaping, present when asked for; CSV shows the delimiter and decimal separator it chose.
    rename: Type.Optional(Type.Union([SHAPING_SCHEMAS.rename, Type.Null()])),
    convert: Type.Optional(Type.Union([SHAPING_SCHEMAS.convert, Type.Null()])),
    calculated: Type.Optional(Type.Union([SHAPING_SCHEMAS.calculated, Type.Null()])),
    locale: Type.Optional(Type.Union([SHAPING_SCHEMAS.locale, Type.Null()])),
    currency: Type.Optional(Type.Union([SHAPING_SCHEMAS.currency, Type.Null()])),
    delimiter: Type.Optional(
      Type.Union([Type.String({ description: 'CSV: the delimiter written' }), Type.Null()]),
    ),
    decimal_separator: Type.Optional(
      Type.Union([Type.String({ description: 'CSV: the decimal separator written' }), Type.Null()]),
    ),
    organisation: Type.Optional(
      Type.Object(
        {
          id: Type.String({ format: 'uuid' }),
          name: Type.String(),
          tenants: Type.Array(
            Type.Object(
              {
                id: Type.String({ format: 'uuid' }),
                slug: Type.String(),
                name: Type.String(),
                folder: Type.String({
                  description: 'The folder of the archive that holds this tenant’s export',
                }),
              },
              closed,
            ),
          ),
        },
        {
          ...closed,
          description:
            "An organisation's export across its tenants (docs/organisations.md): one folder per tenant",
        },
      ),
    ),
  },
  { ...closed, description: 'The export configuration as it runs (after defaults and authorization)' },
);

const SplitFileView = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    bytes: Type.Integer(),
    sha256: Type.String({ description: 'Hex SHA-256 of the bytes a download returns' }),
    download: Type.Optional(
      Type.String({ description: 'The API link that issues a download link for this file' }),
    ),
  },
  closed,
);

const SplitView = Type.Union(
  [
    Type.Object(
      {
        size: Type.Integer({ description: 'The largest part, in bytes, as requested' }),
        parts: Type.Array(
          Type.Object(
            {
              part: Type.Integer({ minimum: 1 }),
              ...SplitFileView.properties,
              records: Type.Integer({ description: 'Records in the files the part holds' }),
            },
            closed,
          ),
          { description: 'The parts in order, each a complete archive of whole files' },
        ),
        manifest: Type.Union([SplitFileView, Type.Null()], {
          description:
            '`<name>.parts.json`: which files each part holds; its SHA-256 is the checksum of the whole export',
        }),
        checksums: Type.Union([SplitFileView, Type.Null()], {
          description: '`<name>.parts.sha256`: `sha256sum -c` lines for the parts and the manifest',
        }),
      },
      closed,
    ),
    Type.Null(),
  ],
  { description: 'A package split into parts (`split_size`); null for an export of one file' },
);

export const ExportViewSchema = Type.Object(
  {
    id: Type.String(),
    status: Type.Enum(EXPORT_STATUSES),
    kind: Type.Enum(['dataset', 'package']),
    datasets: Type.Array(Type.String()),
    request: RequestView,
    progress: Type.Object(
      {
        records: Type.Integer({ description: 'Records written so far' }),
        records_estimated: Type.Union([Type.Integer(), Type.Null()], {
          description: 'Records expected (single-dataset exports)',
        }),
        bytes: Type.Integer({ description: 'Bytes written so far' }),
        percentage: Type.Union([Type.Number(), Type.Null()]),
        eta_seconds: Type.Union([Type.Integer(), Type.Null()], { description: 'Estimated seconds left' }),
        updated_at: NullableInstant,
      },
      closed,
    ),
    files: Type.Array(FileView),
    split: Type.Optional(SplitView),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }, closed), Type.Null()], {
      description: 'Why the export failed (or why its last attempt failed, while it is retried)',
    }),
    attempts: Type.Integer(),
    download_count: Type.Integer(),
    repeat_of: Type.Union([Type.String(), Type.Null()]),
    created_at: Instant,
    started_at: NullableInstant,
    finished_at: NullableInstant,
    expires_at: NullableInstant,
    files_deleted_at: NullableInstant,
    links: Type.Object(
      { self: Type.String(), download: Type.Optional(Type.String()), repeat: Type.String() },
      closed,
    ),
  },
  closed,
);

const DownloadLinkSchema = Type.Object(
  {
    url: Type.String({ description: 'Short-lived link that downloads the file (Range requests resume)' }),
    expires_at: Instant,
    method: Type.Enum(['signed', 'presigned'], {
      description: "`signed`: Ferry's own download route; `presigned`: a presigned S3 URL",
    }),
    file: FileView,
  },
  closed,
);

const Figure = (description: string) =>
  Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description });

const ExportEstimateSchema = Type.Object(
  {
    datasets: Type.Array(Type.String()),
    rows: Figure('Rows the export would write; null for document datasets (knowledge_base, account)'),
    bytes: Figure('Expected file size in bytes; null when rows is'),
    seconds: Figure('Expected running time in whole seconds (at least 1); null when rows is'),
    basis: Type.Enum(['history', 'default'], {
      description:
        "`history`: bytes per row and speed of this tenant's own completed exports of the same dataset, " +
        'format and compression; `default`: fixed figures per format',
    }),
  },
  closed,
);

const IdParams = Type.Object({ id: Uuid });
const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      maxLength: 255,
      description: 'Makes retries safe: the same key with the same body returns the first answer (kept 48 h)',
    }),
  ),
});
const DownloadQuery = Type.Object(
  {
    file: Type.Optional(
      Type.String({
        maxLength: 255,
        description: 'File name, e.g. a part of a split package (default: the first file, by name)',
      }),
    ),
    redirect: Type.Optional(Type.Boolean({ description: 'Answer 302 to the link instead of JSON' })),
    bind_ip_allowlist: Type.Optional(
      Type.Boolean({
        description:
          "Bind the link to the account's IP allow-list, checked when it is used (default `true`; applies " +
          'when the account has an allow-list). `false` gives a link that works from anywhere, e.g. for a partner.',
      }),
    ),
  },
  closed,
);

/** An export accepted (or its first answer replayed for the same Idempotency-Key). */
const Accepted = jsonResponse(ExportViewSchema, {
  description: 'Accepted: the export is queued; `Location` is its URL',
  headers: ['Location', 'Idempotent-Replayed'],
});

/** The service's adapters for this app. */
export function serviceDeps(app: FerryApp, deps: RouteDeps): ExportServiceDeps {
  return {
    database: deps.database,
    config: deps.config,
    queue: deps.queue,
    store: deps.store,
    signer: deps.signer,
    secrets: deps.secrets,
    now: deps.now ?? (() => new Date()),
    logger: app.log as ExportServiceDeps['logger'],
  };
}

export interface ExportEndpointPaths {
  create: string;
  get: string;
  remove: string;
  download: string;
}

/**
 * Registers the four core export endpoints at the given paths: under /api/v1 here,
 * and under the compliance checklist's paths in compliance.ts (same handlers).
 */
export function registerExportEndpoints(
  app: FerryApp,
  deps: RouteDeps,
  service: ExportServiceDeps,
  paths: ExportEndpointPaths,
  tag: string,
): void {
  app.post(
    paths.create,
    {
      onRequest: app.authenticate,
      schema: {
        tags: [tag],
        summary: 'Request an export',
        description:
          'Stores the export and queues its job; answers 202 at once. Poll the `self` link until `status` is ' +
          '`completed`, then ask for a download link. With an `Idempotency-Key`, a retry returns the first answer.',
        headers: IdempotencyHeaders,
        body: ExportBodySchema,
        response: { 202: Accepted, ...problemResponses(400, 401, 403, 409, 422, 429, 503) },
      },
    },
    async (request, reply) => {
      const result = await createExport(
        service,
        request.auth!,
        request.body,
        request.headers['idempotency-key'],
        request.limits,
      );
      if (result.replayed) reply.header('idempotent-replayed', 'true');
      return reply
        .code(result.statusCode as 202)
        .header('location', result.body.links.self)
        .send(result.body);
    },
  );

  app.get(
    paths.get,
    {
      onRequest: app.authenticate,
      schema: {
        tags: [tag],
        summary: 'Status, progress and files of an export',
        params: IdParams,
        response: { 200: ExportViewSchema, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => getExport(service, request.auth!, request.params.id),
  );

  app.delete(
    paths.remove,
    {
      onRequest: app.authenticate,
      schema: {
        tags: [tag],
        summary: 'Cancel an export, or delete its files',
        description:
          'A queued or running export is cancelled (the worker stops within about a second and keeps nothing); ' +
          'a completed export has its files deleted (status `expired`). Answers with the export.',
        params: IdParams,
        response: { 200: ExportViewSchema, ...problemResponses(400, 401, 403, 404, 429, 503) },
      },
    },
    async (request) => deleteExport(service, request.auth!, request.params.id),
  );

  app.get(
    paths.download,
    {
      onRequest: app.authenticate,
      schema: {
        tags: [tag],
        summary: 'A short-lived download link for a completed export',
        description:
          'Answers `{url, expires_at}` (or 302 to the URL with `redirect=true`). The link works without the API ' +
          'key, expires after FERRY_DOWNLOAD_LINK_SECONDS (15 minutes by default), supports HTTP Range requests ' +
          'for resuming, and is bound to this file of this export. 410 once the files were removed.',
        params: IdParams,
        querystring: DownloadQuery,
        response: {
          200: jsonResponse(DownloadLinkSchema, { description: 'The link', headers: ['Cache-Control'] }),
          302: {
            description: 'Redirect to the download link (`redirect=true`)',
            type: 'null',
            headers: responseHeaders('Location', 'Cache-Control'),
          },
          ...problemResponses(400, 401, 403, 404, 409, 410, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const link = await issueDownload(service, request.auth!, request.params.id, {
        fileName: request.query.file,
        baseUrl: linkBase(deps.config),
        bindIpAllowlist: request.query.bind_ip_allowlist,
      });
      reply.header('cache-control', 'no-store');
      if (request.query.redirect) return reply.redirect(link.url, 302);
      return link;
    },
  );
}

/** Exports: request, status and progress, history, cancel/delete, repeat, download links. */
export const exportRoutes: RoutePlugin = async (app, deps) => {
  registerExportUsage();
  const service = serviceDeps(app, deps);

  app.post(
    '/api/v1/exports/estimate',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['exports'],
        summary: 'Estimate an export before requesting it',
        description:
          'The rows, size and running time of the export this body would request, checked against the role ' +
          'like a request, but nothing is stored, counted against a quota or queued.',
        body: ExportBodySchema,
        response: { 200: ExportEstimateSchema, ...problemResponses(400, 401, 403, 422, 429) },
      },
    },
    async (request) => estimateExport(service, request.auth!, request.body),
  );

  registerExportEndpoints(
    app,
    deps,
    service,
    {
      create: '/api/v1/exports',
      get: '/api/v1/exports/:id',
      remove: '/api/v1/exports/:id',
      download: '/api/v1/exports/:id/download',
    },
    'exports',
  );

  app.get(
    '/api/v1/exports',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['exports'],
        summary: 'Export history',
        description:
          'Newest first. Admins and managers see every export of the tenant; other roles the exports they asked for.',
        querystring: Type.Object(
          {
            status: Type.Optional(
              Type.Array(Type.Enum(EXPORT_STATUSES), { description: 'Repeat for several' }),
            ),
            dataset: Type.Optional(Type.String({ maxLength: 64 })),
            from: Type.Optional(
              Type.String({ maxLength: 40, description: 'Created on or after (date or timestamp)' }),
            ),
            to: Type.Optional(
              Type.String({ maxLength: 40, description: 'Created on or before (date or timestamp)' }),
            ),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
            cursor: Type.Optional(
              Type.String({ maxLength: 200, description: '`next_cursor` of the previous page' }),
            ),
          },
          closed,
        ),
        response: {
          200: Type.Object(
            {
              data: Type.Array(ExportViewSchema),
              next_cursor: Type.Union([Type.String(), Type.Null()]),
            },
            closed,
          ),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => listExports(service, request.auth!, request.query),
  );

  app.post(
    '/api/v1/exports/:id/repeat',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['exports'],
        summary: 'Run a past export again',
        description:
          'A new export with the configuration of the given one (checked again against role and quota).',
        params: IdParams,
        headers: IdempotencyHeaders,
        response: { 202: Accepted, ...problemResponses(400, 401, 403, 404, 409, 422, 429, 503) },
      },
    },
    async (request, reply) => {
      const result = await repeatExport(
        service,
        request.auth!,
        request.params.id,
        request.headers['idempotency-key'],
        request.limits,
      );
      if (result.replayed) reply.header('idempotent-replayed', 'true');
      return reply
        .code(result.statusCode as 202)
        .header('location', result.body.links.self)
        .send(result.body);
    },
  );
};
