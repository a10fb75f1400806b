import { Type } from 'typebox';
import type { AuthContext } from '../../auth/context.ts';
import { authorize } from '../../auth/policy.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { outboundPolicy } from '../../lib/ssrf.ts';
import {
  acknowledgeNotice,
  createProcessor,
  DELETION_CHANNELS,
  deleteProcessor,
  getProcessor,
  NOTICE_STATUSES,
  PROCESSOR_CATEGORIES,
  processorNotices,
  type ProcessorInput,
  tenantProcessors,
  updateProcessor,
} from '../../privacy/processors.ts';
import { putActivities, recordOfProcessing, ropaCsv } from '../../privacy/ropa.ts';
import { checkEndpointUrl } from '../../webhooks/endpoints.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse, responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Nullable = (description: string) => Type.Union([Type.String(), Type.Null()], { description });
const Timestamp = Type.String({ format: 'date-time' });

const Processor = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    name: Type.String(),
    purpose: Type.String(),
    data_categories: Type.Array(Type.String(), { description: PROCESSOR_CATEGORIES.join(', ') }),
    location: Type.String(),
    retention: Type.String(),
    channel: Type.String({ description: 'How erasure reaches them: email, webhook or manual' }),
    deletion_contact: Nullable('The email address (email) or https URL (webhook)'),
    deletion_instructions: Nullable('What the team does (manual), shown on each erasure'),
    included_in_exports: Type.Boolean(),
    export_instructions_url: Nullable('How a person gets their data out of this processor'),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { additionalProperties: false },
);

const fields = {
  name: Type.String({ minLength: 1, maxLength: 200, examples: ['Stripe'] }),
  purpose: Type.String({ minLength: 1, maxLength: 1000, examples: ['Payment processing'] }),
  data_categories: Type.Array(Type.String({ minLength: 1, maxLength: 40 }), {
    minItems: 1,
    maxItems: 10,
    description: PROCESSOR_CATEGORIES.join(', '),
  }),
  location: Type.String({ minLength: 1, maxLength: 200, examples: ['US'] }),
  retention: Type.String({ minLength: 1, maxLength: 500, examples: ['7 years after the transaction'] }),
  deletion_channel: Type.String({ minLength: 1, maxLength: 20, description: DELETION_CHANNELS.join(', ') }),
  deletion_contact: Type.Optional(Type.Union([Type.String({ maxLength: 2000 }), Type.Null()])),
  deletion_instructions: Type.Optional(Type.Union([Type.String({ maxLength: 4000 }), Type.Null()])),
  included_in_exports: Type.Optional(Type.Boolean()),
  export_instructions_url: Type.Optional(Type.Union([Type.String({ maxLength: 2000 }), Type.Null()])),
};

const CreateBody = Type.Object(fields, { additionalProperties: false });
const PatchBody = Type.Partial(Type.Object(fields, { additionalProperties: false }));

const Notice = Type.Object(
  {
    notification_id: Type.String({ format: 'uuid' }),
    request_id: Type.String({ format: 'uuid', description: 'The erasure request (DSAR id)' }),
    processor_id: Type.String({ format: 'uuid' }),
    processor: Type.String({ description: "The processor's name" }),
    channel: Type.String({ description: 'email, webhook or manual' }),
    status: Type.Enum(['pending', 'sent', 'failed', 'acknowledged']),
    notified_at: Type.Union([Timestamp, Type.Null()]),
    acknowledged_at: Type.Union([Timestamp, Type.Null()]),
    instructions: Nullable('Manual processors: what to do'),
    error: Nullable('Why the last attempt to send failed'),
  },
  { additionalProperties: false },
);

const Activity = Type.Object(
  {
    processing_activity: Type.String(),
    legal_basis: Type.String(),
    data_categories: Type.Array(Type.String(), { description: "Derived from the data map's column classes" }),
    retention_period: Type.String({ description: 'Read from the retention policies in force' }),
    data_subjects: Type.Array(Type.String()),
    recipients: Type.Array(Type.String(), {
      description: 'Declared recipients and the registered processors',
    }),
    international_transfers: Type.Object(
      { countries: Type.Array(Type.String()), safeguards: Type.Union([Type.String(), Type.Null()]) },
      { additionalProperties: false },
    ),
    automated_processing: Type.Object(
      {
        exists: Type.Boolean(),
        description: Type.Union([Type.String(), Type.Null()]),
        human_review: Type.Union([Type.String(), Type.Null()]),
      },
      { additionalProperties: false },
    ),
    datasets: Type.Array(Type.String()),
  },
  { additionalProperties: false },
);

const Ropa = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    controller: Type.String(),
    generated_at: Timestamp,
    source: Type.Enum(['declared', 'default']),
    activities: Type.Array(Activity),
  },
  { additionalProperties: false },
);

const ActivityInput = Type.Object(
  {
    processing_activity: Type.String({ minLength: 1, maxLength: 300 }),
    legal_basis: Type.String({ minLength: 1, maxLength: 500 }),
    datasets: Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { minItems: 1, maxItems: 50 }),
    data_subjects: Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1, maxItems: 20 }),
    recipients: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 50 })),
    international_transfers: Type.Optional(
      Type.Object(
        {
          countries: Type.Optional(
            Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 50 }),
          ),
          safeguards: Type.Optional(Type.Union([Type.String({ maxLength: 1000 }), Type.Null()])),
        },
        { additionalProperties: false },
      ),
    ),
    automated_processing: Type.Optional(
      Type.Object(
        {
          exists: Type.Boolean(),
          description: Type.Optional(Type.Union([Type.String({ maxLength: 2000 }), Type.Null()])),
          human_review: Type.Optional(Type.Union([Type.String({ maxLength: 2000 }), Type.Null()])),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) }, { additionalProperties: false });
const tags = ['processors'];
const security = [{ bearer: [] }];

/** The processors registry and the record of processing activities (docs/processors.md). */
export const processorRoutes: RoutePlugin = async (app, { database, config }) => {
  const outbound = outboundPolicy(config.outboundAllow);
  /** A webhook address must be a public https host, like a webhook endpoint's. */
  const reachable = async (input: ProcessorInput, current?: string) => {
    const channel = input.deletion_channel ?? current;
    if (channel !== 'webhook' || !input.deletion_contact) return;
    try {
      await checkEndpointUrl(input.deletion_contact, outbound);
    } catch (err) {
      if (err instanceof FerryError && err.code === 'invalid_parameter')
        throw invalid('deletion_contact', err.message.replace(/^url: /, ''));
      throw err;
    }
  };
  const who = (auth: AuthContext) => ({
    actor: auth.actor,
    ip: auth.ip,
    userAgent: auth.userAgent,
  });

  app.get(
    '/api/v1/processors',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'The third-party processors registry (admin, manager)',
        security,
        response: { 200: listResponse(Processor), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      return listBody(await tenantProcessors(database, auth.tenantId));
    },
  );

  app.post(
    '/api/v1/processors',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Register a processor (admin)',
        description:
          'Erasure requests notify each processor that receives a category of the erased person’s data: by ' +
          'email, by a JSON POST to an https URL, or (manual) with instructions shown to the team.',
        security,
        body: CreateBody,
        response: { 201: Processor, ...problemResponses(400, 401, 403, 409, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'processors:manage');
      await reachable(request.body);
      return reply.code(201).send(await createProcessor(database, auth.tenantId, request.body, who(auth)));
    },
  );

  app.get(
    '/api/v1/processors/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'One processor (admin, manager)',
        security,
        params: IdParams,
        response: { 200: Processor, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      return getProcessor(database, auth.tenantId, request.params.id);
    },
  );

  app.patch(
    '/api/v1/processors/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Change a processor (admin)',
        security,
        params: IdParams,
        body: PatchBody,
        response: { 200: Processor, ...problemResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'processors:manage');
      const current = await getProcessor(database, auth.tenantId, request.params.id);
      await reachable(request.body, current.channel);
      return updateProcessor(database, auth.tenantId, request.params.id, request.body, who(auth));
    },
  );

  app.delete(
    '/api/v1/processors/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Remove a processor from the registry (admin); answers with what was removed',
        security,
        params: IdParams,
        response: { 200: Processor, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'processors:manage');
      return deleteProcessor(database, auth.tenantId, request.params.id, who(auth));
    },
  );

  app.get(
    '/api/v1/processors/:id/notifications',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "A processor's erasure notices, newest first (admin, manager)",
        description:
          'Each erasure request that reached the processor has one notice; `status=pending` lists the manual ' +
          'ones the team still has to carry out, `status=sent` those waiting for the processor to confirm.',
        security,
        params: IdParams,
        querystring: Type.Object(
          {
            status: Type.Optional(Type.Enum([...NOTICE_STATUSES])),
            request_id: Type.Optional(Type.String({ format: 'uuid' })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: listResponse(Notice), ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      const { status, request_id: requestId, limit } = request.query;
      return listBody(
        await processorNotices(database, auth.tenantId, request.params.id, { status, requestId, limit }),
      );
    },
  );

  app.post(
    '/api/v1/processors/:id/notifications/:notification_id/acknowledge',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Record that a processor confirmed a deletion (admin)',
        security,
        params: Type.Object(
          { id: Type.String({ maxLength: 64 }), notification_id: Type.String({ maxLength: 64 }) },
          { additionalProperties: false },
        ),
        response: { 200: Notice, ...problemResponses(401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'processors:manage');
      const processor = await getProcessor(database, auth.tenantId, request.params.id);
      return acknowledgeNotice(
        database,
        auth.tenantId,
        processor.id,
        request.params.notification_id,
        who(auth),
      );
    },
  );

  app.get(
    '/api/v1/ropa',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'The record of processing activities, GDPR Art. 30 (admin, manager)',
        description:
          'Data categories come from the data map, retention periods from the retention policies, recipients and ' +
          'transfers from the processors registry. `format=csv` gives one row per activity.',
        security,
        querystring: Type.Object(
          { format: Type.Optional(Type.Enum(['json', 'csv'], { default: 'json' })) },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The record (JSON or CSV)',
            headers: responseHeaders('Content-Disposition'),
            content: { 'application/json': { schema: Ropa }, 'text/csv': { schema: Type.String() } },
          },
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      const ropa = await recordOfProcessing(database, auth.tenantId);
      if (request.query.format === 'csv')
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', 'attachment; filename="records-of-processing.csv"')
          .send(ropaCsv(ropa));
      return ropa;
    },
  );

  app.put(
    '/api/v1/ropa/activities',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "Replace the tenant's declared processing activities (admin)",
        description: 'An empty list returns to the built-in activities of a support platform.',
        security,
        body: Type.Object(
          { activities: Type.Array(ActivityInput, { maxItems: 100 }) },
          { additionalProperties: false },
        ),
        response: { 200: Ropa, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'processors:manage');
      return putActivities(database, auth.tenantId, request.body.activities, auth.actor);
    },
  );
};
