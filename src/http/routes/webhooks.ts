import { Type } from 'typebox';
import { auditCaller, recordAudit } from '../../auth/audit.ts';
import { authorize } from '../../auth/policy.ts';
import { outboundPolicy } from '../../lib/ssrf.ts';
import {
  createEndpoint,
  deleteEndpoint,
  enableEndpoint,
  getEndpoint,
  listDeliveries,
  listEndpoints,
  rotateSecret,
} from '../../webhooks/endpoints.ts';
import { ALL_EVENTS, WEBHOOK_EVENTS } from '../../webhooks/events.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Timestamp = Type.String({ format: 'date-time' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const EventName = Type.Enum([ALL_EVENTS, ...WEBHOOK_EVENTS], {
  description: 'An event name, or `*` for every event (including events added later)',
});

const Endpoint = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    url: Type.String({ examples: ['https://example.com/hooks/ferry'] }),
    description: Nullable(Type.String()),
    events: Type.Array(Type.String()),
    status: Type.Enum(['active', 'disabled']),
    disabled_at: Nullable(Timestamp),
    disabled_reason: Nullable(Type.String()),
    secret_hint: Type.String({ description: 'The signing secret, masked', examples: ['••••Zx9='] }),
    previous_secret_expires_at: Nullable(
      Type.String({
        format: 'date-time',
        description: 'Until then the previous secret signs too (after a rotation)',
      }),
    ),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { additionalProperties: false },
);

const WithSecret = Type.Object(
  {
    ...Endpoint.properties,
    secret: Type.String({
      description:
        'The signing secret (`whsec_` + base64 of 32 bytes). Shown only in this response: store it now.',
      examples: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
    }),
  },
  { additionalProperties: false },
);

const CreateBody = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 2000, description: 'An https URL on a public host' }),
    events: Type.Optional(
      Type.Array(EventName, { minItems: 1, maxItems: WEBHOOK_EVENTS.length + 1, uniqueItems: true }),
    ),
    description: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);

const Attempt = Type.Object(
  {
    attempt: Type.Integer(),
    started_at: Timestamp,
    status_code: Type.Union([Type.Integer(), Type.Null()], { description: 'Null when no answer came' }),
    latency_ms: Type.Integer(),
    outcome: Type.Enum(['success', 'failure']),
    error: Nullable(Type.String()),
    response_excerpt: Nullable(Type.String({ description: 'The first 512 bytes of the answer' })),
  },
  { additionalProperties: false },
);

const Delivery = Type.Object(
  {
    message_id: Type.String({ description: 'The `webhook-id` header, the same on every attempt' }),
    event: Type.String(),
    status: Type.Enum(['pending', 'delivered', 'failed']),
    attempts: Type.Integer(),
    created_at: Timestamp,
    next_attempt_at: Nullable(Timestamp),
    delivered_at: Nullable(Timestamp),
    failed_at: Nullable(Timestamp),
    last_error: Nullable(Type.String()),
    attempt_log: Type.Array(Attempt),
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });

/**
 * Webhook endpoints (admin only, `webhooks:manage`): register, list, show, delete,
 * rotate the signing secret, re-enable, and read the delivery log. See docs/webhooks.md.
 */
export const webhookRoutes: RoutePlugin = async (app, { database, config, now: clock, secrets }) => {
  const now = clock ?? (() => new Date());
  const outbound = outboundPolicy(config.outboundAllow);
  const security = [{ bearer: [] }];
  const tags = ['webhooks'];

  app.post(
    '/api/v1/webhooks',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Register a webhook endpoint (admin)',
        description:
          'Returns the signing secret once. `events` defaults to `["*"]`. The URL must be https on a ' +
          'public host (private and loopback addresses are refused unless the operator allows them).',
        security,
        body: CreateBody,
        response: { 201: WithSecret, ...problemResponses(400, 401, 403, 409, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      const { endpoint, secret } = await createEndpoint(database, auth.tenantId, request.body, {
        secrets,
        outbound,
        now,
      });
      await recordAudit(database, {
        ...auditCaller(auth),
        action: 'webhook.created',
        targetId: endpoint.id,
        success: true,
        occurredAt: now(),
      });
      return reply.code(201).send({ ...endpoint, secret });
    },
  );

  app.get(
    '/api/v1/webhooks',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "List the tenant's webhook endpoints (admin)",
        security,
        response: {
          200: listResponse(Endpoint),
          ...problemResponses(401, 403, 429),
        },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      return listBody(await listEndpoints(database, auth.tenantId, secrets));
    },
  );

  app.get(
    '/api/v1/webhooks/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Show one webhook endpoint (admin)',
        security,
        params: IdParams,
        response: { 200: Endpoint, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      return getEndpoint(database, auth.tenantId, request.params.id, secrets);
    },
  );

  app.delete(
    '/api/v1/webhooks/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Delete a webhook endpoint (admin)',
        description:
          'Answers the endpoint as it was. Pending messages are dropped and its delivery log is deleted with it.',
        security,
        params: IdParams,
        response: { 200: Endpoint, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      const endpoint = await getEndpoint(database, auth.tenantId, request.params.id, secrets);
      await deleteEndpoint(database, auth.tenantId, request.params.id);
      await recordAudit(database, {
        ...auditCaller(auth),
        action: 'webhook.deleted',
        targetId: endpoint.id,
        success: true,
        occurredAt: now(),
      });
      return endpoint;
    },
  );

  app.post(
    '/api/v1/webhooks/:id/rotate-secret',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Rotate the signing secret (admin)',
        description:
          'Returns the new secret once. For 24 hours messages carry two signatures ' +
          '(`v1,<new> v1,<old>`), so receivers can switch without losing messages.',
        security,
        params: IdParams,
        response: { 200: WithSecret, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      const { endpoint, secret } = await rotateSecret(database, auth.tenantId, request.params.id, {
        secrets,
        now,
      });
      await recordAudit(database, {
        ...auditCaller(auth),
        action: 'webhook.secret_rotated',
        targetId: endpoint.id,
        success: true,
        occurredAt: now(),
      });
      return { ...endpoint, secret };
    },
  );

  app.post(
    '/api/v1/webhooks/:id/enable',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Re-enable a disabled webhook endpoint (admin)',
        description: 'Messages that failed while it was disabled are not sent again.',
        security,
        params: IdParams,
        response: { 200: Endpoint, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      const endpoint = await enableEndpoint(database, auth.tenantId, request.params.id, {
        secrets,
        now,
      });
      await recordAudit(database, {
        ...auditCaller(auth),
        action: 'webhook.enabled',
        targetId: endpoint.id,
        success: true,
        occurredAt: now(),
      });
      return endpoint;
    },
  );

  app.get(
    '/api/v1/webhooks/:id/deliveries',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "An endpoint's delivery log (admin)",
        description:
          'Messages newest first, each with every attempt: status code, latency and error. ' +
          '`status` filters by message status.',
        security,
        params: IdParams,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
            status: Type.Optional(Type.Enum(['pending', 'delivered', 'failed'])),
          },
          { additionalProperties: false },
        ),
        response: {
          200: listResponse(Delivery),
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'webhooks:manage');
      return listBody(
        await listDeliveries(database, auth.tenantId, request.params.id, {
          limit: request.query.limit,
          status: request.query.status,
        }),
      );
    },
  );
};
