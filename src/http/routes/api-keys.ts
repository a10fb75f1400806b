import { type Static, Type } from 'typebox';
import { ROLES } from '../../auth/context.ts';
import {
  type ApiKeyInfo,
  createKeyFor,
  getApiKey,
  listApiKeys,
  presentApiKey,
  revokeKeyFor,
  setKeyAllowList,
} from '../../auth/keys.ts';
import { MAX_ALLOWLIST_ENTRIES } from '../../auth/ip-allowlist.ts';
import { ACTIONS, authorize } from '../../auth/policy.ts';
import { problemResponses } from '../problem.ts';
import { listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Uuid = Type.String({ format: 'uuid' });
const Timestamp = Type.String({ format: 'date-time' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const AllowedIps = Type.Array(Type.String({ maxLength: 64 }), {
  maxItems: MAX_ALLOWLIST_ENTRIES,
  description:
    "CIDR ranges (IPv4 or IPv6, e.g. `203.0.113.0/24`, `2001:db8::/32`; a bare address is one host) the key may be used from, as well as the account's list. Empty: no restriction of its own.",
});

const ApiKey = Type.Object(
  {
    id: Uuid,
    prefix: Type.String({
      description: 'The first characters of the key, to recognise it',
      examples: ['fy_live_7Hq2LmZx'],
    }),
    name: Nullable(Type.String()),
    role: Type.Enum(ROLES),
    team_member_id: Nullable(Uuid),
    scopes: Type.Array(Type.Enum(ACTIONS), { description: 'Empty: everything the role allows' }),
    allowed_ips: AllowedIps,
    status: Type.Enum(['active', 'expired', 'revoked']),
    created_by: Nullable(Type.String()),
    created_at: Timestamp,
    expires_at: Nullable(Timestamp),
    revoked_at: Nullable(Timestamp),
    last_used_at: Nullable(Timestamp),
  },
  { additionalProperties: false },
);

const CreatedKey = Type.Object(
  {
    ...ApiKey.properties,
    key: Type.String({
      description: 'The API key. Shown only in this response: store it now, Ferry keeps only a hash.',
      examples: ['fy_live_7Hq2LmZx...'],
    }),
  },
  { additionalProperties: false },
);

const CreateBody = Type.Object(
  {
    role: Type.Enum(ROLES),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    team_member_id: Type.Optional(
      Type.String({
        format: 'uuid',
        description: 'Required for agent keys: the agent whose conversations it sees',
      }),
    ),
    expires_in_days: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
    scopes: Type.Optional(Type.Array(Type.Enum(ACTIONS), { maxItems: ACTIONS.length, uniqueItems: true })),
    allowed_ips: Type.Optional(AllowedIps),
  },
  { additionalProperties: false },
);

const UpdateBody = Type.Object({ allowed_ips: AllowedIps }, { additionalProperties: false });

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });

function present(key: ApiKeyInfo, now: Date): Static<typeof ApiKey> {
  const view = presentApiKey(key, now);
  return { ...view, scopes: view.scopes as Static<typeof ApiKey>['scopes'] };
}

const DAY_MS = 86_400_000;

/** API key management for admins: create (the key is shown once), list, show, revoke. */
export const apiKeyRoutes: RoutePlugin = async (app, { database, now: clock }) => {
  const now = clock ?? (() => new Date());
  const security = [{ bearer: [] }];

  app.post(
    '/api/v1/api-keys',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: 'Create an API key (admin)',
        description:
          'Returns the key once. Agent keys must name the team member (`team_member_id`) whose ' +
          'conversations they may export. The creation is written to the audit log.',
        security,
        body: CreateBody,
        response: { 201: CreatedKey, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      const at = now();
      const body = request.body;
      const created = await createKeyFor(
        database,
        auth,
        {
          role: body.role,
          name: body.name,
          teamMemberId: body.team_member_id,
          expiresAt: body.expires_in_days
            ? new Date(at.getTime() + body.expires_in_days * DAY_MS)
            : undefined,
          scopes: body.scopes,
          allowedIps: body.allowed_ips,
        },
        at,
      );
      return reply.code(201).send({ ...present(created, at), key: created.key });
    },
  );

  app.get(
    '/api/v1/api-keys',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: "List the tenant's API keys (admin)",
        description: 'Prefix and metadata only; a key itself can never be shown again.',
        security,
        response: {
          200: listResponse(ApiKey),
          ...problemResponses(401, 403, 429),
        },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'keys:manage');
      const at = now();
      return listBody((await listApiKeys(database, auth.tenantId)).map((k) => present(k, at)));
    },
  );

  app.get(
    '/api/v1/api-keys/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: 'Show one API key (admin)',
        security,
        params: IdParams,
        response: { 200: ApiKey, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'keys:manage');
      return present(await getApiKey(database, auth.tenantId, request.params.id), now());
    },
  );

  app.patch(
    '/api/v1/api-keys/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: "Change an API key's IP allow-list (admin)",
        description:
          "Replaces `allowed_ips`; `[]` lifts the key's own restriction. Written to the audit log as `api_key.allowed_ips_changed`.",
        security,
        params: IdParams,
        body: UpdateBody,
        response: { 200: ApiKey, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const at = now();
      return present(
        await setKeyAllowList(database, request.auth!, request.params.id, request.body.allowed_ips, at),
        at,
      );
    },
  );

  app.delete(
    '/api/v1/api-keys/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: 'Revoke an API key (admin)',
        description:
          'The key answers 401 from the next request on. Revoking a revoked key changes nothing. ' +
          'The revocation is written to the audit log.',
        security,
        params: IdParams,
        response: { 200: ApiKey, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      const at = now();
      const revoked = await revokeKeyFor(database, auth, request.params.id, at);
      return present(revoked, at);
    },
  );
};
