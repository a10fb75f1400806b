import { Type } from 'typebox';
import {
  createExportConfig,
  deleteExportConfig,
  getExportConfig,
  listExportConfigs,
  runExportConfig,
  updateExportConfig,
} from '../../export-configs/service.ts';
import { registerExportUsage } from '../../export-requests/service.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';
import { ExportViewSchema, serviceDeps } from './exports.ts';

const closed = { additionalProperties: false } as const;
const Instant = Type.String({ format: 'date-time' });
const NullableString = Type.Union([Type.String(), Type.Null()]);
const Names = (description: string) => Type.Array(Type.String({ maxLength: 200 }), { description });

const Range = Type.Object(
  { min: Type.Optional(Type.Number()), max: Type.Optional(Type.Number()) },
  { additionalProperties: true, description: 'A range of a declared range filter' },
);

const VIP_EXAMPLE = {
  export_name: 'VIP Customer Conversations',
  filters: {
    customer_segments: ['enterprise', 'vip'],
    satisfaction_score: { min: 4 },
    conversation_value: { min: 1000 },
  },
  columns: [
    'conversation_id',
    'customer_name',
    'start_timestamp',
    'satisfaction_score',
    'attributed_revenue',
    'escalated',
  ],
  format: 'csv',
  schedule: 'weekly',
};

/** The definition's documented fields; the service checks it as a whole and names the field at fault. */
const definitionFields = {
  export_name: Type.String({ maxLength: 200, description: 'The name, unique in the tenant (without case)' }),
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  data_types: Type.Optional(
    Names('The first chooses the rows (default conversations); each further one is a file narrowed to them'),
  ),
  filters: Type.Optional(
    Type.Record(
      Type.String(),
      Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Array(Type.String()), Range]),
      { description: 'Filters of the first data type: a value, a list, or a range {min, max}' },
    ),
  ),
  columns: Type.Optional(Names('Columns of the first data type, related columns included, in order')),
  format: Type.Optional(
    Type.String({ maxLength: 20, description: 'csv (default), json, ndjson, xml, parquet' }),
  ),
  compression: Type.Optional(Type.String({ maxLength: 20 })),
  package: Type.Optional(
    Type.String({ maxLength: 10, description: 'zip (default for several files) or tar.gz' }),
  ),
  pii: Type.Optional(Type.String({ maxLength: 20 })),
  timezone: Type.Optional(Type.String({ maxLength: 64 })),
  from: Type.Optional(Type.String({ maxLength: 64 })),
  to: Type.Optional(Type.String({ maxLength: 64 })),
  include_messages: Type.Optional(
    Type.Boolean({ description: 'CSV: a messages file in the package; JSON and XML: nested' }),
  ),
  annotations: Type.Optional(
    Type.Record(Type.String(), Type.Boolean(), {
      description: 'resolution_notes, follow_up_required: columns added to the conversations',
    }),
  ),
  join_with: Type.Optional(Type.String({ maxLength: 64, description: 'marketing_campaigns' })),
  aggregations: Type.Optional(Names('daily_totals, channel_performance')),
  schedule: Type.Optional(
    Type.String({ maxLength: 120, description: 'daily, weekly, monthly or a cron expression' }),
  ),
};

const DefinitionBody = Type.Object(definitionFields, {
  additionalProperties: true,
  description:
    'The export configuration as the product documentation writes it (docs/export-configs.md); ' +
    'output shaping options (rename, convert, locale, ...) pass through to the export',
  examples: [VIP_EXAMPLE],
});

const PatchBody = Type.Object(
  {},
  {
    additionalProperties: true,
    description:
      'Top-level fields of the definition to replace; `null` removes a field. The result is checked as a whole',
    examples: [{ schedule: 'daily' }],
  },
);

const ExportConfigView = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    export_name: Type.String(),
    definition: Type.Object({}, { additionalProperties: true, description: 'The definition as saved' }),
    compiles_to: Type.Union(
      [
        Type.Object(
          {
            datasets: Type.Array(Type.String()),
            format: NullableString,
            package: Type.String({ description: '`none`: one file; `zip` or `tar.gz`: a package of files' }),
            files: Type.Array(Type.String(), {
              description: 'The file written, or the entries of the package, with extensions',
            }),
            columns: Type.Union([Type.Array(Type.String()), Type.Null()], {
              description: "The first data type's columns; null for all",
            }),
          },
          closed,
        ),
        Type.Null(),
      ],
      { description: 'The export the definition runs; null when it no longer compiles (see `error`)' },
    ),
    error: NullableString,
    schedule: Type.Union([Type.String(), Type.Null()], {
      description: 'daily, weekly, monthly or a cron expression',
    }),
    schedule_id: Type.Union([Type.String(), Type.Null()], {
      description: 'The schedule Ferry keeps for the configuration',
    }),
    last_run: Type.Union([Type.Object({ at: Instant, export_id: Type.String() }, closed), Type.Null()]),
    created_by: Type.String(),
    created_at: Instant,
    updated_at: Instant,
    links: Type.Object(
      {
        self: Type.String(),
        run: Type.String(),
        schedule: Type.Optional(Type.String()),
        last_export: Type.Optional(Type.String()),
      },
      closed,
    ),
  },
  closed,
);

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, closed);
const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      maxLength: 255,
      description:
        'Makes retries safe: the same key for the same configuration returns the first answer (kept 48 h)',
    }),
  ),
});

/**
 * Saved export configurations: create, list, show, change, delete and run. See
 * docs/export-configs.md.
 */
export const exportConfigRoutes: RoutePlugin = async (app, deps) => {
  registerExportUsage();
  const service = serviceDeps(app, deps);
  const tags = ['export-configs'];
  const security = [{ bearer: [] }];

  app.post(
    '/api/v1/export-configs',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Save an export configuration',
        description:
          'The body is the definition as the product documentation writes it. It is checked against the data map ' +
          'before it is stored: an unknown field, filter, column, join or aggregation is a 400 naming it with the ' +
          'accepted values. With `schedule`, Ferry also creates a schedule that runs it.',
        security,
        body: DefinitionBody,
        response: {
          201: jsonResponse(ExportConfigView, {
            description: 'Saved; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 409, 429),
        },
      },
    },
    async (request, reply) => {
      const created = await createExportConfig(service, request.auth!, request.body);
      return reply.code(201).header('location', created.links.self).send(created);
    },
  );

  app.get(
    '/api/v1/export-configs',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "The tenant's saved export configurations",
        security,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
            cursor: Type.Optional(
              Type.String({ maxLength: 200, description: '`next_cursor` of the previous page' }),
            ),
          },
          closed,
        ),
        response: {
          200: listResponse(ExportConfigView, { next_cursor: NullableString }),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => {
      const { items, ...page } = await listExportConfigs(service, request.auth!, request.query);
      return listBody(items, page);
    },
  );

  app.get(
    '/api/v1/export-configs/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'One saved export configuration, with what it compiles to',
        security,
        params: IdParams,
        response: { 200: ExportConfigView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => getExportConfig(service, request.auth!, request.params.id),
  );

  app.patch(
    '/api/v1/export-configs/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Change a saved export configuration',
        description:
          'The top-level fields given replace the saved ones (`null` removes one); the result is checked as on ' +
          'creation. Its schedule is created, changed or deleted to match `schedule`.',
        security,
        params: IdParams,
        body: PatchBody,
        response: { 200: ExportConfigView, ...problemResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request) => updateExportConfig(service, request.auth!, request.params.id, request.body),
  );

  app.delete(
    '/api/v1/export-configs/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Delete a saved export configuration',
        description:
          'Answers the configuration as it was. The schedule Ferry made for it goes with it; exports it ran stay.',
        security,
        params: IdParams,
        response: { 200: ExportConfigView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => deleteExportConfig(service, request.auth!, request.params.id),
  );

  app.post(
    '/api/v1/export-configs/:id/run',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Run a saved export configuration now',
        description:
          'Compiles the configuration against the data map as it is now and requests it as an export, answering ' +
          'as `POST /api/v1/exports` does (202; poll the `self` link, then download). With an `Idempotency-Key`, ' +
          'a retry returns the first answer.',
        security,
        params: IdParams,
        headers: IdempotencyHeaders,
        response: {
          202: jsonResponse(ExportViewSchema, {
            description: 'Accepted: the export is queued; `Location` is its URL',
            headers: ['Location', 'Idempotent-Replayed'],
          }),
          ...problemResponses(400, 401, 403, 404, 409, 422, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const result = await runExportConfig(service, request.auth!, request.params.id, {
        idempotencyKey: request.headers['idempotency-key'],
        limits: request.limits,
      });
      if (result.replayed) reply.header('idempotent-replayed', 'true');
      return reply
        .code(result.statusCode as 202)
        .header('location', result.body.links.self)
        .send(result.body);
    },
  );
};
