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
import { DEFAULT_OVERLAP_HOURS, MAX_OVERLAP_HOURS, rotateKeyFor } from '../../auth/key-rotation.ts';
import { invalid } from '../../domain/ferry-error.ts';
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
    rotated_from: Nullable({
      ...Uuid,
      description: 'The key this one replaced by rotation (`POST /api/v1/api-keys/{id}/rotate`)',
    }),
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
    expires_in_days: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3650,
        description: 'The key stops working this many days from now',
      }),
    ),
    expires_at: Type.Optional(
      Type.String({
        format: 'date-time',
        description:
          'The key stops working at this time (RFC 3339, in the future); not with `expires_in_days`',
      }),
    ),
    scopes: Type.Optional(Type.Array(Type.Enum(ACTIONS), { maxItems: ACTIONS.length, uniqueItems: true })),
    allowed_ips: Type.Optional(AllowedIps),
  },
  { additionalProperties: false },
);

const RotateBody = Type.Object(
  {
    overlap_hours: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_OVERLAP_HOURS,
        default: DEFAULT_OVERLAP_HOURS,
        description:
          'Hours the old key keeps working beside the new one (0: it stops at once). Never extends an expiry the old key already has.',
      }),
    ),
    expires_in_days: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3650,
        description: 'The new key stops working this many days from now',
      }),
    ),
    expires_at: Type.Optional(
      Type.Union([Timestamp, Type.Null()], {
        description:
          'The new key stops working at this time; `null`: never. Without it (and `expires_in_days`), the new key lasts as long as the old one was made to last.',
      }),
    ),
  },
  { additionalProperties: false },
);

const RotatedKey = Type.Object(
  {
    ...CreatedKey.properties,
    previous: Type.Object(
      { id: Uuid, prefix: Type.String(), status: ApiKey.properties.status, expires_at: Nullable(Timestamp) },
      {
        additionalProperties: false,
        description: 'The old key: it works until `expires_at`, the end of the overlap window',
      },
    ),
  },
  { additionalProperties: false },
);

/** The expiry a create or rotate body asks for: `expires_at` or `expires_in_days`, not both; undefined when neither. */
function requestedExpiry(
  body: { expires_in_days?: number | undefined; expires_at?: string | null | undefined },
  now: Date,
): Date | null | undefined {
  if (body.expires_in_days !== undefined && body.expires_at !== undefined)
    throw invalid('expires_at', 'give expires_at or expires_in_days, not both');
  if (body.expires_in_days !== undefined) return new Date(now.getTime() + body.expires_in_days * DAY_MS);
  if (body.expires_at === undefined || body.expires_at === null) return body.expires_at;
  const at = new Date(body.expires_at);
  if (Number.isNaN(at.getTime())) throw invalid('expires_at', 'must be an RFC 3339 date-time');
  return at;
}

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
          expiresAt: requestedExpiry(body, at) ?? undefined,
          scopes: body.scopes,
          allowedIps: body.allowed_ips,
        },
        at,
      );
      return reply.code(201).send({ ...present(created, at), key: created.key });
    },
  );

  app.post(
    '/api/v1/api-keys/:id/rotate',
    {
      // `curl -X POST …/rotate` sends no body: that is the defaults.
      preValidation: async (request) => {
        request.body ??= {};
      },
      onRequest: app.authenticate,
      schema: {
        tags: ['api-keys'],
        summary: 'Rotate an API key (admin)',
        description:
          'Creates a new key with the same name, role, scopes, team member and allowed addresses, and ' +
          'returns it once (`rotated_from` names the old key). The old key keeps working for ' +
          '`overlap_hours` (default 24; 0 stops it at once), then answers 401 `api_key_expired`. ' +
          'A key can be rotated once: rotating it again is 409 `conflict` naming the key that replaced it ' +
          '(rotate that one instead). Written to the audit log as `api_key.rotated` and `api_key.created`.',
        security,
        params: IdParams,
        body: RotateBody,
        response: { 201: RotatedKey, ...problemResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      const at = now();
      const body = request.body;
      const rotated = await rotateKeyFor(
        database,
        request.auth!,
        request.params.id,
        { overlapHours: body.overlap_hours, expiresAt: requestedExpiry(body, at) },
        at,
      );
      const previous = present(rotated.previous, at);
      return reply.code(201).send({
        ...present(rotated.key, at),
        key: rotated.key.key,
        previous: {
          id: previous.id,
          prefix: previous.prefix,
          status: previous.status,
          expires_at: previous.expires_at,
        },
      });
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
