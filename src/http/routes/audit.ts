import { Type } from 'typebox';
import { listAudit } from '../../auth/audit.ts';
import { authorize } from '../../auth/policy.ts';
import { verifyAuditChain } from '../../privacy/audit-chain.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const NullableString = Type.Union([Type.String(), Type.Null()]);
const NullableCount = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]);

const AuditEvent = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    occurred_at: Type.String({ format: 'date-time' }),
    actor: Type.String({ description: '`api_key:<id>`, `team_member:<id>`, `cli` or `system`' }),
    action: Type.String({ examples: ['export.completed', 'api_key.revoked'] }),
    target_id: NullableString,
    data_type: { ...NullableString, description: 'Dataset or package kind' },
    date_from: NullableString,
    date_to: NullableString,
    record_count: NullableCount,
    file_bytes: NullableCount,
    download_count: NullableCount,
    ip_address: NullableString,
    user_agent: NullableString,
    success: Type.Boolean(),
    error: NullableString,
    retention_until: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { additionalProperties: false },
);

const Query = Type.Object(
  {
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 100, examples: ['export.downloaded'] })),
    from: Type.Optional(Type.String({ description: 'YYYY-MM-DD or ISO 8601, inclusive' })),
    to: Type.Optional(
      Type.String({ description: 'YYYY-MM-DD (that whole day included) or ISO 8601 (exclusive)' }),
    ),
    cursor: Type.Optional(Type.String({ maxLength: 200, description: '`next_cursor` of the previous page' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  },
  { additionalProperties: false },
);

const ChainVerification = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    valid: Type.Boolean(),
    events: Type.Integer({ minimum: 0 }),
    first_seq: Type.Integer({ minimum: 0 }),
    last_seq: Type.Integer({ minimum: 0 }),
    redacted: Type.Integer({ minimum: 0, description: 'Events an erasure scrubbed (the chain still holds)' }),
    anchors_checked: Type.Integer({ minimum: 0 }),
    broken: Type.Union([
      Type.Object(
        {
          seq: Type.Integer(),
          event_id: Type.Union([Type.String({ format: 'uuid' }), Type.Null()]),
          reason: Type.String(),
        },
        { additionalProperties: false },
      ),
      Type.Null(),
    ]),
  },
  { additionalProperties: false },
);

/** The audit log: admins see everything, managers exports and downloads only. */
export const auditRoutes: RoutePlugin = async (app, { database }) => {
  app.get(
    '/api/v1/audit',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['audit'],
        summary: 'The audit log (admin: all; manager: exports and downloads)',
        description:
          'Newest first, with cursor pagination: pass `next_cursor` as `cursor` for the next page. ' +
          'Managers see only `export.*` actions, not key changes.',
        security: [{ bearer: [] }],
        querystring: Query,
        response: {
          200: listResponse(AuditEvent, { next_cursor: NullableString }),
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'audit:read');
      const { items, ...page } = await listAudit(database, auth, request.query);
      return listBody(items, page);
    },
  );

  app.get(
    '/api/v1/audit/verify',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['audit'],
        summary: "Verify the tenant's audit chain (admin)",
        description:
          'Walks the hash chain from where retention cut it to its head, then checks the signed daily anchors. ' +
          '`broken` names the first link that does not hold: a changed, missing or cut-off event.',
        security: [{ bearer: [] }],
        response: { 200: ChainVerification, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'audit:read');
      if (auth.role !== 'admin') authorize(auth, 'keys:manage');
      return verifyAuditChain(database, auth.tenantId);
    },
  );
};
