import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import { RETENTION_ACTIONS, RETENTION_AFTER } from '../../datamap/types.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { createHold, getHold, HOLD_SCOPES, holdReport, listHolds, releaseHold } from '../../privacy/holds.ts';
import { listSweeps, previewRetention } from '../../privacy/retention.ts';
import { effectiveRetention, putRetention } from '../../privacy/retention-policies.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Timestamp = Type.String({ format: 'date-time' });
const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);
const security = [{ bearer: [] }];

const Duration = Type.String({
  minLength: 2,
  maxLength: 40,
  description: 'ISO 8601 duration, e.g. `P30D`, `P2Y`, `P0D`',
  examples: ['P2Y'],
});

const Policy = Type.Object(
  {
    dataset: Type.String({ examples: ['conversations'] }),
    keep: Duration,
    after: Type.Enum([...RETENTION_AFTER]),
    action: Type.Enum([...RETENTION_ACTIONS]),
    archive_keep: Type.Union([Duration, Type.Null()], {
      description: '`archive`: how long the archive package is kept; null keeps it',
    }),
    source: Type.Enum(['default', 'tenant'], {
      description: '`default` (data map or plan) or `tenant` (an override)',
    }),
    statement: Type.String({ description: 'The policy in one sentence a privacy policy can quote' }),
    note: Type.String(),
  },
  { additionalProperties: false },
);

const PolicyInput = Type.Object(
  {
    dataset: Type.String({ minLength: 1, maxLength: 100 }),
    keep: Type.String({ minLength: 1, maxLength: 40 }),
    after: Type.String({ minLength: 1, maxLength: 40 }),
    action: Type.String({ minLength: 1, maxLength: 40 }),
    archive_keep: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 40 }), Type.Null()])),
  },
  { additionalProperties: false },
);

const PoliciesBody = Type.Object(
  {
    policies: Type.Array(PolicyInput, {
      maxItems: 100,
      description: 'The overrides; a dataset left out returns to its default',
    }),
  },
  { additionalProperties: false },
);

const PreviewDataset = Type.Object(
  {
    dataset: Type.String(),
    action: Type.Enum([...RETENTION_ACTIONS]),
    keep: Type.String(),
    after: Type.Enum([...RETENTION_AFTER]),
    cutoff: NullableTimestamp,
    rows: Type.Integer({ minimum: 0, description: 'Rows (or files) the sweep would act on' }),
    held: Type.Integer({ minimum: 0, description: 'Rows past their period that legal holds keep' }),
    oldest: NullableTimestamp,
    holds: Type.Array(
      Type.Object(
        { hold_id: Type.String({ format: 'uuid' }), matter: Type.String() },
        { additionalProperties: false },
      ),
    ),
    note: NullableString,
  },
  { additionalProperties: false },
);

const Preview = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    as_of: Timestamp,
    time_zone: Type.String(),
    datasets: Type.Array(PreviewDataset),
  },
  { additionalProperties: false },
);

const Counts = Type.Object(
  {
    deleted: Type.Integer({ minimum: 0 }),
    anonymized: Type.Integer({ minimum: 0 }),
    archived: Type.Integer({ minimum: 0 }),
    cascaded: Type.Record(Type.String(), Type.Integer({ minimum: 0 })),
    archive: Type.Optional(
      Type.Object(
        { key: Type.String(), sha256: Type.String(), bytes: Type.Integer(), records: Type.Integer() },
        { additionalProperties: false },
      ),
    ),
    done: Type.Boolean(),
  },
  { additionalProperties: false },
);

const Sweep = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    tenant_id: Type.String({ format: 'uuid' }),
    trigger: Type.Enum(['schedule', 'manual']),
    status: Type.Enum(['running', 'completed', 'failed']),
    as_of: Timestamp,
    started_at: Timestamp,
    finished_at: NullableTimestamp,
    datasets: Type.Record(Type.String(), Counts),
    error: NullableString,
  },
  { additionalProperties: false },
);

const Subject = Type.Object(
  {
    email: Type.Optional(Type.String({ minLength: 3, maxLength: 254 })),
    customer_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  },
  { additionalProperties: false },
);

const Hold = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    scope: Type.Enum([...HOLD_SCOPES]),
    subject: Type.Union([
      Type.Object(
        {
          email: Type.Optional(Type.String()),
          phone: Type.Optional(Type.String()),
          customer_id: Type.Optional(Type.String()),
          team_member_id: Type.Optional(Type.String()),
        },
        { additionalProperties: false },
      ),
      Type.Null(),
    ]),
    datasets: Type.Array(Type.String()),
    conversation_ids: Type.Array(Type.String({ format: 'uuid' })),
    from: NullableTimestamp,
    to: NullableTimestamp,
    reason: Type.String(),
    matter: Type.String(),
    created_at: Timestamp,
    created_by: Type.String(),
    released_at: NullableTimestamp,
    released_by: NullableString,
    release_reason: NullableString,
  },
  { additionalProperties: false },
);

const HoldWithReport = Type.Object(
  {
    ...Hold.properties,
    keeps: Type.Array(
      Type.Object(
        { dataset: Type.String(), rows: Type.Integer({ minimum: 0 }) },
        { additionalProperties: false },
      ),
      { description: 'What the hold keeps now, per dataset (active holds)' },
    ),
  },
  { additionalProperties: false },
);

const HoldBody = Type.Object(
  {
    scope: Type.String({ minLength: 1, maxLength: 40, description: HOLD_SCOPES.join(', ') }),
    subject: Type.Optional(Subject),
    datasets: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 50 })),
    conversation_ids: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 10_000 }),
    ),
    from: Type.Optional(
      Type.String({ minLength: 10, maxLength: 40, description: 'YYYY-MM-DD or ISO 8601, inclusive' }),
    ),
    to: Type.Optional(
      Type.String({ minLength: 10, maxLength: 40, description: 'YYYY-MM-DD or ISO 8601, exclusive' }),
    ),
    reason: Type.String({ minLength: 1, maxLength: 2000 }),
    matter: Type.String({ minLength: 1, maxLength: 200, description: 'The matter or case reference' }),
  },
  { additionalProperties: false },
);

const ReleaseBody = Type.Object(
  { reason: Type.String({ minLength: 1, maxLength: 2000, description: 'Why the hold ends' }) },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false });

/** Retention policies, their preview and sweeps, and legal holds (docs/retention.md, docs/legal-holds.md). */
export const retentionRoutes: RoutePlugin = async (app, { database, store, now }) => {
  const clock = now ?? (() => new Date());

  app.get(
    '/api/v1/retention',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['retention'],
        summary: 'The retention policies in force (admin)',
        description:
          "Every dataset's policy: the data map's default (or the plan's, for export files) unless the tenant " +
          'overrides it, with a sentence a privacy policy can quote.',
        security,
        response: { 200: listResponse(Policy), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'retention:manage');
      return listBody(await effectiveRetention(database, auth.tenantId));
    },
  );

  app.put(
    '/api/v1/retention',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['retention'],
        summary: "Replace the tenant's retention overrides (admin)",
        description:
          'Each policy: `{"dataset", "keep", "after", "action"}` (and `archive_keep` for `archive`). A dataset ' +
          'left out returns to its default. Returns every policy in force.',
        security,
        body: PoliciesBody,
        response: { 200: listResponse(Policy), ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'retention:manage');
      return listBody(await putRetention(database, auth.tenantId, request.body.policies, auth.actor));
    },
  );

  app.get(
    '/api/v1/retention/preview',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['retention'],
        summary: 'What the next retention sweep would do (admin)',
        description:
          'Per dataset: the cutoff, the rows the sweep would delete, anonymize or archive, the oldest of them, ' +
          'and the rows legal holds keep (with the holds). Nothing is changed.',
        security,
        response: { 200: Preview, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'retention:manage');
      if (!store) throw new FerryError('service_unavailable', 'no object store is configured');
      return previewRetention({ database, store, now: clock }, auth.tenantId);
    },
  );

  app.get(
    '/api/v1/retention/sweeps',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['retention'],
        summary: 'The latest retention sweeps and their counts (admin)',
        security,
        response: { 200: listResponse(Sweep), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'retention:manage');
      return listBody(await listSweeps(database, auth.tenantId));
    },
  );

  app.post(
    '/api/v1/legal-holds',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['legal holds'],
        summary: 'Place a legal hold (admin)',
        description:
          'Scopes: `tenant` (everything), `subject` (`subject.email` or `subject.customer_id`), `dataset` ' +
          '(`datasets`), `conversation_ids` (those conversations and their messages), `date_range` ' +
          '(`from`/`to` on every dataset with a time column). `from`/`to` also narrow the other scopes. ' +
          'No deletion (retention, erasure, account purge) touches held data while the hold is active.',
        security,
        body: HoldBody,
        response: { 201: Hold, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'holds:manage');
      const hold = await createHold(database, auth.tenantId, request.body, {
        actor: auth.actor,
        ip: auth.ip,
        userAgent: auth.userAgent,
      });
      return reply.code(201).send(hold);
    },
  );

  app.get(
    '/api/v1/legal-holds',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['legal holds'],
        summary: 'List legal holds with what each keeps (admin)',
        description:
          'Active holds with their counts per dataset; `include_released=true` lists released ones too.',
        security,
        querystring: Type.Object(
          { include_released: Type.Optional(Type.Boolean({ default: false })) },
          { additionalProperties: false },
        ),
        response: { 200: listResponse(HoldWithReport), ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'holds:manage');
      const report = new Map((await holdReport(database, auth.tenantId)).map((r) => [r.hold.id, r.datasets]));
      const holds = await listHolds(database, auth.tenantId, {
        includeReleased: request.query.include_released,
      });
      return listBody(holds.map((h) => ({ ...h, keeps: report.get(h.id) ?? [] })));
    },
  );

  app.get(
    '/api/v1/legal-holds/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['legal holds'],
        summary: 'One legal hold and what it keeps (admin)',
        security,
        params: IdParams,
        response: { 200: HoldWithReport, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'holds:manage');
      const hold = await getHold(database, auth.tenantId, request.params.id);
      const keeps = hold.released_at
        ? []
        : ((await holdReport(database, auth.tenantId, undefined, hold.id))[0]?.datasets ?? []);
      return { ...hold, keeps };
    },
  );

  app.delete(
    '/api/v1/legal-holds/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['legal holds'],
        summary: 'Release a legal hold, with a reason (admin)',
        description:
          'The hold stays on record with who released it, when and why; its data is then subject to retention ' +
          'and erasure again.',
        security,
        params: IdParams,
        body: ReleaseBody,
        response: { 200: Hold, ...problemResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'holds:manage');
      return releaseHold(database, auth.tenantId, request.params.id, request.body.reason, {
        actor: auth.actor,
        ip: auth.ip,
        userAgent: auth.userAgent,
      });
    },
  );
};
