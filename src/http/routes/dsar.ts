import { Readable } from 'node:stream';
import { stringify } from 'csv-stringify';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { DSAR_SOURCES, DSAR_STATUSES, DSAR_TYPES, REGULATIONS } from '../../domain/dsar-state.ts';
import {
  type DsarView as DsarViewOut,
  approveDsar,
  cancelDsar,
  createDsar,
  type DsarCaller,
  type DsarDeps,
  denyDsar,
  dsarReceipt,
  planDsar,
  dsarSummary,
  extendDsar,
  getDsar,
  listDsars,
  REGISTER_COLUMNS,
  RECTIFIABLE_FIELDS,
  registerRows,
  rerunDsar,
  resendCode,
  verifyDsar,
} from '../../privacy/dsar-service.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse, responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const closed = { additionalProperties: false } as const;
const Instant = Type.String({ format: 'date-time' });
const NullableInstant = Type.Union([Instant, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);

const Subject = Type.Object(
  {
    email: Type.Optional(Type.String({ maxLength: 254, examples: ['ana.souza@example.com'] })),
    phone: Type.Optional(
      Type.String({ maxLength: 40, description: 'International form, e.g. +4915112345678' }),
    ),
    customer_id: Type.Optional(Type.String({ maxLength: 36 })),
    team_member_id: Type.Optional(Type.String({ maxLength: 36 })),
  },
  { ...closed, description: 'Who the request is about: at least one identifier' },
);

const CreateBody = Type.Object(
  {
    type: Type.Enum(DSAR_TYPES),
    regulation: Type.Enum(REGULATIONS),
    subject: Subject,
    changes: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description: `rectification only: the corrected values (${RECTIFIABLE_FIELDS.join(', ')})`,
      }),
    ),
    source: Type.Enum(DSAR_SOURCES),
    note: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  closed,
);

const DsarView = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    type: Type.Enum(DSAR_TYPES),
    regulation: Type.Enum(REGULATIONS),
    source: Type.Enum(DSAR_SOURCES),
    status: Type.Enum(DSAR_STATUSES),
    stage: Type.String({ description: 'Where the request stands (the status under `extended`)' }),
    subject: Type.Union([Subject, Type.Null()], {
      description: 'The normalized identifiers while the request is open; null once it is closed',
    }),
    subject_key: Type.String({ description: 'Keyed hash of the subject: what the register keeps' }),
    changes: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    note: NullableString,
    excessive: Type.Boolean({ description: 'CCPA: more than two access requests in 12 months' }),
    excessive_rule: NullableString,
    duplicate_of: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
    received_at: Instant,
    confirm_by: Type.Union([Instant, Type.Null()], { description: 'CCPA: confirm receipt by then' }),
    due_at: Type.String({ format: 'date-time', description: 'The deadline in force' }),
    original_due_at: Instant,
    days_left: Type.Integer({
      description: 'Whole days until the deadline in the tenant time zone (negative: late)',
    }),
    overdue: Type.Boolean(),
    extended_at: NullableInstant,
    extension_reason: NullableString,
    verified_at: NullableInstant,
    verification_method: NullableString,
    approved_at: NullableInstant,
    completed_at: NullableInstant,
    outcome: NullableString,
    closed_reason: NullableString,
    failed_step: NullableString,
    error: NullableString,
    result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
    receipt_id: Type.Union([Type.String(), Type.Null()]),
    links: Type.Object({ self: Type.String(), receipt: NullableString }, closed),
  },
  closed,
);

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, closed);
const Reason = Type.Object({ reason: Type.String({ minLength: 3, maxLength: 2000 }) }, closed);
const OptionalReason = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 2000 })) }, closed);
const VerifyBody = Type.Object(
  {
    code: Type.Optional(Type.String({ maxLength: 12, description: "The subject's one-time code" })),
    reason: Type.Optional(
      Type.String({ maxLength: 1000, description: 'A team member vouches: how the identity was checked' }),
    ),
  },
  { ...closed, description: 'Either `code` or `reason`' },
);

const ListQuery = Type.Object(
  {
    status: Type.Optional(Type.Enum(DSAR_STATUSES)),
    type: Type.Optional(Type.Enum(DSAR_TYPES)),
    overdue: Type.Optional(Type.Boolean()),
    due_before: Type.Optional(Type.String({ maxLength: 40, description: 'YYYY-MM-DD or ISO 8601' })),
    format: Type.Optional(
      Type.Enum(['json', 'csv'], {
        description: '`csv`: the request register for record-keeping, every row',
      }),
    ),
    cursor: Type.Optional(Type.String({ maxLength: 200 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  },
  closed,
);

const Summary = Type.Object(
  {
    open_by_status: Type.Record(Type.String(), Type.Integer()),
    open: Type.Integer(),
    due_this_week: Type.Integer(),
    overdue: Type.Integer(),
    completed_last_12_months: Type.Integer(),
    median_days_to_complete: Type.Union([Type.Number(), Type.Null()]),
  },
  closed,
);

/** Data subject requests: the register, the lifecycle, receipts. See docs/dsar.md. */
export const dsarRoutes: RoutePlugin = async (app, deps) => {
  const service: DsarDeps = {
    database: deps.database,
    config: deps.config,
    queue: deps.queue,
    now: deps.now ?? (() => new Date()),
    logger: app.log as DsarDeps['logger'],
  };
  const tags = ['dsar'];
  const security = [{ bearer: [] }];
  const team = (request: FastifyRequest): DsarCaller => ({ kind: 'team', auth: request.auth! });
  const one = jsonResponse(DsarView, { description: 'The request' });

  app.post(
    '/api/v1/dsar',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Record a data subject request',
        description:
          'Starts the legal clock. With an email and a mail server configured, the subject gets a one-time code ' +
          '(status `identity_pending`); otherwise a team member verifies with `/verify` and a reason. A request ' +
          'that repeats an open one (same subject and type) is recorded as its duplicate and not run twice.',
        security,
        body: CreateBody,
        response: {
          201: jsonResponse(DsarView, {
            description: 'Recorded; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const created = await createDsar(service, team(request), request.body);
      return reply.code(201).header('location', created.links.self).send(created);
    },
  );

  app.get(
    '/api/v1/dsar',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'The request register',
        description:
          'Newest first, filtered by status, type, overdue and due date, cursor-paged. `format=csv` gives the ' +
          `whole register as CSV (${REGISTER_COLUMNS.join(', ')}), oldest first.`,
        security,
        querystring: ListQuery,
        response: {
          200: {
            description: 'The page (JSON) or the register (CSV)',
            headers: responseHeaders('Content-Disposition'),
            content: {
              'application/json': { schema: listResponse(DsarView, { next_cursor: NullableString }) },
              'text/csv': { schema: Type.String() },
            },
          },
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const { format, ...query } = request.query;
      if (format === 'csv') {
        const rows = registerRows(service, team(request), query);
        // Read the first row before answering, so a refusal is still a problem document.
        const first = await rows.next();
        const body = Readable.from(
          (async function* () {
            if (!first.done) yield first.value;
            yield* rows;
          })(),
        ).pipe(stringify({ header: true, columns: [...REGISTER_COLUMNS] }));
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', 'attachment; filename="dsar-register.csv"')
          .send(body as unknown as string);
      }
      const page = await listDsars(service, team(request), query);
      return listBody(page.data, { next_cursor: page.next_cursor });
    },
  );

  app.get(
    '/api/v1/dsar/summary',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "The operator's view: open requests by status, due this week, overdue, median days",
        security,
        response: {
          200: jsonResponse(Summary, { description: 'The summary' }),
          ...problemResponses(401, 403, 429),
        },
      },
    },
    async (request) => dsarSummary(service, team(request)),
  );

  app.get(
    '/api/v1/dsar/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'One request',
        security,
        params: IdParams,
        response: { 200: one, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => getDsar(service, team(request), request.params.id),
  );

  app.post(
    '/api/v1/dsar/:id/plan',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary:
          'The dry run of an erasure: what it would delete, anonymize, scrub or keep, changing nothing',
        security,
        params: IdParams,
        response: {
          200: jsonResponse(Type.Record(Type.String(), Type.Unknown()), {
            description:
              '`dry_run: true`, `stores` (counts per store and table), `columns`, `files`, `holds`',
          }),
          ...problemResponses(400, 401, 403, 404, 409, 429),
        },
      },
    },
    async (request) =>
      (await planDsar(service, team(request), request.params.id)) as unknown as Record<string, unknown>,
  );

  app.get(
    '/api/v1/dsar/:id/receipt',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "The request's signed receipt (docs/receipts.md)",
        description:
          'RFC 8785 JSON signed with Ed25519; verify it with `ferry receipts verify` or, without Ferry, against ' +
          '`/.well-known/ferry-receipt-keys.json` as docs/receipts.md shows.',
        security,
        params: IdParams,
        response: {
          200: jsonResponse(
            Type.Object(
              {
                receipt: Type.Record(Type.String(), Type.Unknown()),
                signature: Type.Object(
                  { alg: Type.Literal('EdDSA'), kid: Type.String(), value: Type.String() },
                  closed,
                ),
              },
              closed,
            ),
            { description: 'The receipt document', headers: ['Content-Disposition'] },
          ),
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request, reply) => {
      const document = await dsarReceipt(service, team(request), request.params.id);
      return reply
        .header('content-disposition', `attachment; filename="receipt-${request.params.id}.json"`)
        .send(
          document as unknown as {
            receipt: Record<string, unknown>;
            signature: { alg: 'EdDSA'; kid: string; value: string };
          },
        );
    },
  );

  const action = (
    path: string,
    summary: string,
    body: typeof Reason | typeof OptionalReason | typeof VerifyBody | null,
    handler: (
      caller: DsarCaller,
      id: string,
      body: Record<string, string | undefined>,
    ) => Promise<DsarViewOut>,
  ) =>
    app.post(
      `/api/v1/dsar/:id/${path}`,
      {
        onRequest: app.authenticate,
        schema: {
          tags,
          summary,
          security,
          params: IdParams,
          ...(body ? { body } : {}),
          response: { 200: one, ...problemResponses(400, 401, 403, 404, 409, 429) },
        },
      },
      async (request) =>
        handler(team(request), request.params.id, (request.body ?? {}) as Record<string, string | undefined>),
    );

  action(
    'verify',
    "Confirm the subject's identity: their one-time code, or a team member's reason",
    VerifyBody,
    (c, id, b) => verifyDsar(service, c, id, { code: b.code, reason: b.reason }),
  );
  action('resend-code', 'Send the subject a new one-time code', null, (c, id) => resendCode(service, c, id));
  action('approve', 'Approve an erasure, a rectification or an excessive request: it runs', null, (c, id) =>
    approveDsar(service, c, id),
  );
  action('deny', 'Deny the request, with the reason the subject is told', Reason, (c, id, b) =>
    denyDsar(service, c, id, b.reason),
  );
  action('extend', 'Extend the deadline once, with the reason the subject is told', Reason, (c, id, b) =>
    extendDsar(service, c, id, b.reason),
  );
  action('cancel', 'Cancel the request (withdrawn by the subject)', OptionalReason, (c, id, b) =>
    cancelDsar(service, c, id, b.reason),
  );
  action('run', 'Run a failed request again, from the step that failed', null, (c, id) =>
    rerunDsar(service, c, id),
  );
};
