import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import { CONSENT_PURPOSES, LEGAL_BASES, listConsent, recordConsent } from '../../privacy/consent.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const Timestamp = Type.String({ format: 'date-time', description: 'UTC, microseconds' });
const NullableString = Type.Union([Type.String(), Type.Null()]);

const Subject = Type.Object(
  {
    email: Type.Optional(Type.String({ minLength: 3, maxLength: 254 })),
    customer_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  },
  { additionalProperties: false, description: 'The customer: by email (any case) or id' },
);

const Record = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    customer_id: Type.String({ format: 'uuid' }),
    purpose: Type.String({ description: CONSENT_PURPOSES.join(', ') }),
    granted: Type.Boolean({ description: 'true: consent given; false: withdrawn' }),
    legal_basis: Type.String({ description: LEGAL_BASES.join(', ') }),
    source: Type.String(),
    policy_version: NullableString,
    ip_address: NullableString,
    recorded_at: Timestamp,
  },
  { additionalProperties: false },
);

const State = Type.Object(
  {
    purpose: Type.String({ description: CONSENT_PURPOSES.join(', ') }),
    status: Type.Enum(['given', 'withdrawn']),
    legal_basis: Type.String({ description: LEGAL_BASES.join(', ') }),
    policy_version: NullableString,
    source: Type.String(),
    given_at: Type.Union([Timestamp, Type.Null()]),
    withdrawn_at: Type.Union([Timestamp, Type.Null()]),
  },
  { additionalProperties: false },
);

const View = Type.Object(
  {
    subject: Type.Object({ customer_id: Type.String({ format: 'uuid' }) }, { additionalProperties: false }),
    current: Type.Array(State, { description: 'Each purpose with a record: its latest state' }),
    history: Type.Array(Record, { description: 'Every record, oldest first' }),
  },
  { additionalProperties: false },
);

const fields = {
  subject: Subject,
  purpose: Type.String({ minLength: 1, maxLength: 40, description: CONSENT_PURPOSES.join(', ') }),
  legal_basis: Type.Optional(
    Type.String({ minLength: 1, maxLength: 40, description: `${LEGAL_BASES.join(', ')} (default consent)` }),
  ),
  source: Type.String({ minLength: 1, maxLength: 200, examples: ['widget_banner'] }),
  policy_version: Type.Optional(Type.String({ minLength: 1, maxLength: 100, examples: ['2026-11'] })),
  ip_address: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  recorded_at: Type.Optional(
    Type.String({ minLength: 10, maxLength: 40, description: 'When it happened (default: now), ISO 8601' }),
  ),
};

const RecordBody = Type.Object(
  { ...fields, granted: Type.Boolean({ description: 'true: consent given; false: withdrawn' }) },
  { additionalProperties: false },
);
const WithdrawBody = Type.Object(fields, { additionalProperties: false });

const security = [{ bearer: [] }];

/** Consent records: record, withdraw, and a subject's consents with their history (docs/consent.md). */
export const consentRoutes: RoutePlugin = async (app, { database }) => {
  app.post(
    '/api/v1/consent',
    {
      preHandler: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "Record a subject's consent given or withdrawn (admin, manager)",
        description:
          'Each record is an event: the history is never rewritten. The subject is a customer of the tenant, ' +
          'by email or id.',
        security,
        body: RecordBody,
        response: { 201: Record, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'consent:manage');
      const record = await recordConsent(database, auth.tenantId, request.body, {
        actor: auth.actor,
        ip: auth.ip,
        userAgent: auth.userAgent,
      });
      return reply.code(201).send(record);
    },
  );

  app.post(
    '/api/v1/consent/withdraw',
    {
      preHandler: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "Record a subject's withdrawal of consent (admin, manager)",
        security,
        body: WithdrawBody,
        response: { 201: Record, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'consent:manage');
      const record = await recordConsent(
        database,
        auth.tenantId,
        { ...request.body, granted: false },
        { actor: auth.actor, ip: auth.ip, userAgent: auth.userAgent },
      );
      return reply.code(201).send(record);
    },
  );

  app.get(
    '/api/v1/consent',
    {
      preHandler: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "A subject's consents: each purpose's state and the full history (admin, manager)",
        security,
        querystring: Type.Object(
          {
            subject: Type.String({
              minLength: 1,
              maxLength: 254,
              description: 'The customer: an email address (any case) or a customer id',
            }),
          },
          { additionalProperties: false },
        ),
        response: { 200: View, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'consent:manage');
      return listConsent(database, auth.tenantId, request.query.subject);
    },
  );
};
