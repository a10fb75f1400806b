import { type Static, Type } from 'typebox';
import { PLANS, ROLES } from '../../auth/context.ts';
import { MAX_ALLOWLIST_ENTRIES } from '../../auth/ip-allowlist.ts';
import { ORGANISATION_ROLES, TENANT_ROLES } from '../../auth/organisations.ts';
import { ACTIONS } from '../../auth/policy.ts';
import { QUOTAS } from '../../auth/quotas.ts';
import { listMembers, removeMember, setMember } from '../../organisations/admin.ts';
import { createOrganisationExport, OrganisationExportBodySchema } from '../../organisations/exports.ts';
import {
  createOrganisationKey,
  listOrganisationKeys,
  revokeOrganisationKey,
  setKeyTenantRoles,
} from '../../organisations/keys.ts';
import {
  organisationCaller,
  presentOrganisationTenant,
  requireOrganisationAdmin,
} from '../../organisations/model.ts';
import { organisationUsage, SUMMED_QUOTAS } from '../../organisations/usage.ts';
import { problemResponses } from '../problem.ts';
import { jsonResponse, listBody, listResponse } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';
import { ExportViewSchema, serviceDeps } from './exports.ts';

const closed = { additionalProperties: false } as const;
const Uuid = Type.String({ format: 'uuid' });
const Timestamp = Type.String({ format: 'date-time' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const IdParams = Type.Object({ id: Uuid }, closed);

const TenantRoles = Type.Record(Type.String({ maxLength: 64 }), Type.Enum(TENANT_ROLES), {
  maxProperties: 500,
  description:
    'Role per client tenant (id or slug) over the default; `none` takes the tenant away. Replaces the roles given before.',
});

const OrganisationSchema = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    home_tenant_id: Uuid,
    you: Type.Object(
      {
        principal: Type.Enum(['key', 'member']),
        id: Uuid,
        admin: Type.Boolean({ description: 'An organisation admin: manages members, roles and keys' }),
      },
      closed,
    ),
    tenants: Type.Array(
      Type.Object(
        {
          id: Uuid,
          slug: Type.String(),
          name: Type.String(),
          plan: Type.Enum(PLANS),
          home: Type.Boolean({ description: "The organisation's own tenant" }),
          added_at: Nullable(Timestamp),
          role: Type.Union([Type.Enum(ROLES), Type.Null()], {
            description: 'Your role there; null: none (requests with Ferry-Tenant set to it are refused)',
          }),
        },
        closed,
      ),
    ),
  },
  closed,
);

const QuotaLine = Type.Object(
  {
    quota: Type.Enum(QUOTAS),
    unit: Type.String(),
    limit: Type.Union([Type.Integer(), Type.Null()]),
    used: Type.Union([Type.Integer(), Type.Null()]),
    remaining: Type.Union([Type.Integer(), Type.Null()]),
    resets_at: Nullable(Timestamp),
    description: Type.String(),
  },
  closed,
);

const UsageSchema = Type.Object(
  {
    organisation_id: Uuid,
    tenants: Type.Array(
      Type.Object(
        {
          tenant: Type.Object(
            { id: Uuid, slug: Type.String(), name: Type.String(), home: Type.Boolean() },
            closed,
          ),
          usage: Type.Object(
            { tenant_id: Uuid, plan: Type.Enum(PLANS), quotas: Type.Array(QuotaLine) },
            closed,
          ),
        },
        closed,
      ),
    ),
    total: Type.Array(
      Type.Object(
        { quota: Type.Enum(SUMMED_QUOTAS), used: Type.Union([Type.Integer(), Type.Null()]) },
        closed,
      ),
      { description: 'What the listed tenants use together, per counted quota' },
    ),
  },
  closed,
);

const MemberSchema = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    email: Type.String(),
    home_role: Type.Enum(ROLES),
    admin: Type.Boolean(),
    default_role: Type.Union([Type.Enum(ORGANISATION_ROLES), Type.Null()]),
    tenant_roles: Type.Record(Type.String(), Type.Enum(TENANT_ROLES)),
  },
  closed,
);

const MemberBody = Type.Object(
  {
    admin: Type.Optional(Type.Boolean({ description: 'Make (or unmake) an organisation admin' })),
    default_role: Type.Optional(
      Type.Union([Type.Enum(ORGANISATION_ROLES), Type.Null()], {
        description: 'Role in every client tenant without a role of its own; null: none',
      }),
    ),
    tenant_roles: Type.Optional(TenantRoles),
  },
  closed,
);

const AllowedIps = Type.Array(Type.String({ maxLength: 64 }), { maxItems: MAX_ALLOWLIST_ENTRIES });

const OrganisationKey = Type.Object(
  {
    id: Uuid,
    prefix: Type.String(),
    name: Nullable(Type.String()),
    role: Type.Enum(ROLES),
    team_member_id: Nullable(Uuid),
    scopes: Type.Array(Type.Enum(ACTIONS)),
    allowed_ips: AllowedIps,
    status: Type.String({ description: '`active`, `expired` or `revoked`' }),
    created_by: Nullable(Type.String()),
    created_at: Timestamp,
    expires_at: Nullable(Timestamp),
    revoked_at: Nullable(Timestamp),
    last_used_at: Nullable(Timestamp),
    tenant_roles: Type.Record(Type.String(), Type.Enum(TENANT_ROLES)),
  },
  closed,
);

const CreatedOrganisationKey = Type.Object(
  {
    ...OrganisationKey.properties,
    key: Type.String({ description: 'The API key. Shown only in this response: store it now.' }),
  },
  closed,
);

const CreateKeyBody = Type.Object(
  {
    role: Type.Enum(ORGANISATION_ROLES, {
      description: 'Its role in the home tenant and, by default, in every client tenant',
    }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    expires_in_days: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
    scopes: Type.Optional(Type.Array(Type.Enum(ACTIONS), { maxItems: ACTIONS.length, uniqueItems: true })),
    allowed_ips: Type.Optional(AllowedIps),
    tenant_roles: Type.Optional(TenantRoles),
  },
  closed,
);

const KeyRolesBody = Type.Object({ tenant_roles: TenantRoles }, closed);

const DAY_MS = 86_400_000;

type KeyView = Static<typeof OrganisationKey>;
const asKey = <T extends { scopes: string[] }>(k: T) => k as unknown as T & KeyView;

/**
 * The organisation of the calling key or member (docs/organisations.md): its tenants and your
 * role in each, organisation-wide usage, members and roles, organisation keys (admins), and the
 * aggregated export across its tenants.
 */
export const organisationRoutes: RoutePlugin = async (app, deps) => {
  const { database } = deps;
  const now = deps.now ?? (() => new Date());
  const tags = ['organisation'];
  const caller = (auth: Parameters<typeof organisationCaller>[1]) => organisationCaller(database, auth);
  const by = (home: { actor: string; ip: string | null; userAgent: string | null }) => ({
    actor: home.actor,
    ip: home.ip,
    userAgent: home.userAgent,
  });

  app.get(
    '/api/v1/organisation',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Your organisation, its tenants and your role in each',
        description:
          'For an organisation key or member: the home tenant and the client tenants it manages, with your role ' +
          'in each. Send `Ferry-Tenant: <id>` on any other route to act in one of them.',
        response: { 200: OrganisationSchema, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      return {
        id: c.organisation.id,
        name: c.organisation.name,
        home_tenant_id: c.organisation.homeTenantId,
        // A request's caller is a key or a member; the operator works on the command line only.
        you: { principal: c.principal as 'key' | 'member', id: c.principalId, admin: c.manages },
        tenants: c.tenants.map((t) => ({
          ...presentOrganisationTenant(t),
          role: c.roles.get(t.id) ?? null,
        })),
      };
    },
  );

  app.get(
    '/api/v1/organisation/usage',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Organisation-wide usage: per tenant and in total',
        description:
          "Each tenant's usage (as `GET /api/v1/usage` shows it there) where your role may read usage, and " +
          'the sum of the counted quotas over those tenants.',
        response: { 200: UsageSchema, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => organisationUsage(database, await caller(request.auth!), now()),
  );

  app.get(
    '/api/v1/organisation/members',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Organisation members and their roles (organisation admin)',
        response: { 200: listResponse(MemberSchema), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      return listBody(await listMembers(database, c.organisation));
    },
  );

  app.put(
    '/api/v1/organisation/members/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary:
          'Add a team member of the home tenant to the organisation, or change their roles (organisation admin)',
        params: IdParams,
        body: MemberBody,
        response: { 200: MemberSchema, ...problemResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      const body = request.body;
      return setMember(
        database,
        c.organisation,
        request.params.id,
        { admin: body.admin, defaultRole: body.default_role, tenantRoles: body.tenant_roles },
        by(c.home),
        now(),
      );
    },
  );

  app.delete(
    '/api/v1/organisation/members/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Remove a member from the organisation (organisation admin)',
        // Answers the member as they were.
        description:
          'They stay a team member of the home tenant and lose access to the client tenants at once.',
        params: IdParams,
        response: { 200: MemberSchema, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      return removeMember(database, c.organisation, request.params.id, by(c.home), now());
    },
  );

  app.get(
    '/api/v1/organisation/keys',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Organisation keys and their roles per tenant (organisation admin)',
        response: { 200: listResponse(OrganisationKey), ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      return listBody((await listOrganisationKeys(database, c.organisation, now())).map(asKey));
    },
  );

  app.post(
    '/api/v1/organisation/keys',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Create an organisation key (organisation admin)',
        description:
          'The key belongs to the home tenant; with `Ferry-Tenant` it acts in a client tenant with its role there ' +
          '(`tenant_roles`, else `role`). Returned once.',
        body: CreateKeyBody,
        response: { 201: CreatedOrganisationKey, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      const at = now();
      const body = request.body;
      const created = await createOrganisationKey(
        database,
        c.organisation,
        {
          role: body.role,
          name: body.name,
          scopes: body.scopes,
          expiresAt: body.expires_in_days
            ? new Date(at.getTime() + body.expires_in_days * DAY_MS)
            : undefined,
          allowedIps: body.allowed_ips,
          tenantRoles: body.tenant_roles,
        },
        by(c.home),
        at,
      );
      const view = (await listOrganisationKeys(database, c.organisation, at)).find(
        (k) => k.id === created.id,
      )!;
      return reply.code(201).send({ ...asKey(view), key: created.key });
    },
  );

  app.put(
    '/api/v1/organisation/keys/:id/tenant-roles',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "Replace an organisation key's roles per tenant (organisation admin)",
        params: IdParams,
        body: KeyRolesBody,
        response: { 200: OrganisationKey, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      return asKey(
        await setKeyTenantRoles(
          database,
          c.organisation,
          request.params.id,
          request.body.tenant_roles,
          by(c.home),
          now(),
        ),
      );
    },
  );

  app.delete(
    '/api/v1/organisation/keys/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Revoke an organisation key (organisation admin)',
        description: 'The key answers 401 in every tenant from the next request on.',
        params: IdParams,
        response: { 200: OrganisationKey, ...problemResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => {
      const c = await caller(request.auth!);
      requireOrganisationAdmin(c);
      return asKey(
        await revokeOrganisationKey(database, c.organisation, request.params.id, by(c.home), now()),
      );
    },
  );

  const service = serviceDeps(app, deps);
  app.post(
    '/api/v1/organisation/exports',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Export from every tenant of the organisation into one archive',
        description:
          'The body of `POST /api/v1/exports`, plus `tenants` to choose some. Runs the request in every tenant where ' +
          'your role may export it: one zip (or tar.gz) with `tenants/<slug>/` holding that tenant’s own export, ' +
          '`organisation/analytics_totals.csv`, `metadata.json` and `checksums.sha256`. Stored and downloaded as an ' +
          'export of the home tenant, visible only to you.',
        body: OrganisationExportBodySchema,
        response: {
          202: jsonResponse(ExportViewSchema, {
            description: 'Accepted: the export is queued; `Location` is its URL',
            headers: ['Location'],
          }),
          ...problemResponses(400, 401, 403, 409, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const c = await caller(request.auth!);
      const view = await createOrganisationExport(service, c, request.body);
      return reply.code(202).header('location', view.links.self).send(view);
    },
  );
};
