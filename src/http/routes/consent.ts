import { Type } from 'typebox';
import type { AuthContext } from '../../auth/context.ts';
import { authorize } from '../../auth/policy.ts';
import {
  CONSENT_PURPOSES,
  type ConsentActor,
  LEGAL_BASES,
  listConsent,
  recordConsent,
} from '../../privacy/consent.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const Timestamp = Type.String({ format: 'date-time', description: 'UTC, microseconds' });
const NullableString = Type.Union([Type.String(), Type.Null()]);

const Subject = Type.Object(
  {
    email: Type.Optional(Type.String({ minLength: 3, maxLength: 254, examples: ['ana.souza@example.com'] })),
    customer_id: Type.Optional(
      Type.String({ minLength: 1, maxLength: 64, description: 'A customer id (uuid)' }),
    ),
  },
  {
    additionalProperties: false,
    description: 'The customer: by email (any case) or id; given both, one customer must have both',
  },
);

const RecordView = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    customer_id: Type.String({ format: 'uuid' }),
    purpose: Type.Enum(CONSENT_PURPOSES),
    granted: Type.Boolean({ description: 'true: consent given; false: withdrawn' }),
    legal_basis: Type.Enum(LEGAL_BASES, { description: 'The GDPR Art. 6(1) basis' }),
    source: Type.String(),
    policy_version: NullableString,
    ip_address: NullableString,
    recorded_at: Timestamp,
  },
  { additionalProperties: false },
);

const State = Type.Object(
  {
    purpose: Type.Enum(CONSENT_PURPOSES),
    status: Type.Enum(['given', 'withdrawn']),
    legal_basis: Type.Enum(LEGAL_BASES),
    policy_version: NullableString,
    source: Type.String(),
    given_at: Type.Union([Timestamp, Type.Null()], { description: 'When the consent in force was given' }),
    withdrawn_at: Type.Union([Timestamp, Type.Null()], { description: 'When it was withdrawn, if it is' }),
  },
  { additionalProperties: false },
);

const View = Type.Object(
  {
    subject: Type.Object({ customer_id: Type.String({ format: 'uuid' }) }, { additionalProperties: false }),
    current: Type.Array(State, { description: 'Each purpose with a record: its latest state' }),
    history: Type.Array(RecordView, { description: 'Every record, oldest first' }),
  },
  { additionalProperties: false },
);

const fields = {
  subject: Subject,
  purpose: Type.Enum(CONSENT_PURPOSES),
  legal_basis: Type.Optional(
    Type.Enum(LEGAL_BASES, { description: 'The GDPR Art. 6(1) basis (default consent)' }),
  ),
  source: Type.String({
    minLength: 1,
    maxLength: 200,
    description: 'Where it was captured',
    examples: ['widget_banner'],
  }),
  policy_version: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 100,
      description: 'The privacy policy version the person saw',
      examples: ['2026-11'],
    }),
  ),
  ip_address: Type.Optional(
    Type.String({ minLength: 2, maxLength: 45, description: 'Where it came from: an IPv4 or IPv6 address' }),
  ),
  recorded_at: Type.Optional(
    Type.String({
      format: 'date-time',
      maxLength: 40,
      description: 'When it happened (default: now): ISO 8601 with a zone, microseconds kept',
      examples: ['2026-11-01T10:00:00.123456Z'],
    }),
  ),
};

const RecordBody = Type.Object(
  { ...fields, granted: Type.Boolean({ description: 'true: consent given; false: withdrawn' }) },
  { additionalProperties: false },
);
const WithdrawBody = Type.Object(fields, { additionalProperties: false });

const security = [{ bearer: [] }];

/** Who the audit event names: the key or session, with its IP address and user agent. */
const caller = (auth: AuthContext): ConsentActor => ({
  actor: auth.actor,
  ip: auth.ip,
  userAgent: auth.userAgent,
});

/** Consent records: record, withdraw, and a subject's consents with their history (docs/consent.md). */
export const consentRoutes: RoutePlugin = async (app, { database }) => {
  app.post(
    '/api/v1/consent',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "Record a subject's consent given or withdrawn (admin, manager)",
        description:
          'Each record is an event: the history is never rewritten. The subject is a customer of the tenant, ' +
          'by email or id.',
        security,
        body: RecordBody,
        response: { 201: RecordView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'consent:manage');
      const record = await recordConsent(database, auth.tenantId, request.body, caller(auth));
      return reply.code(201).send(record);
    },
  );

  app.post(
    '/api/v1/consent/withdraw',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "Record a subject's withdrawal of consent (admin, manager)",
        security,
        body: WithdrawBody,
        response: { 201: RecordView, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'consent:manage');
      const record = await recordConsent(
        database,
        auth.tenantId,
        { ...request.body, granted: false },
        caller(auth),
      );
      return reply.code(201).send(record);
    },
  );

  app.get(
    '/api/v1/consent',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['consent'],
        summary: "A subject's consents: each purpose's state and the full history (admin, manager)",
        security,
        querystring: Type.Object(
          {
            subject: Type.String({
              minLength: 1,
              maxLength: 254,
              description:
                'The customer: an email address (any case, URL-encoded: + as %2B) or a customer id',
              examples: ['ana.souza@example.com'],
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
