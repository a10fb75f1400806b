import { type Static, Type } from 'typebox';
import {
  MAX_ALLOWLIST_ENTRIES,
  SESSION_ABSOLUTE_MS,
  SESSION_ABSOLUTE_RANGE,
  SESSION_IDLE_MS,
  SESSION_IDLE_RANGE,
  setSessionTimeouts,
  setTenantAllowList,
  tenantAccess,
} from '../../auth/ip-allowlist.ts';
import type { Database } from '../../db/database.ts';
import { authorize } from '../../auth/policy.ts';
import { invalid } from '../../domain/ferry-error.ts';
import { closeAccount, closureState, GRACE_DAYS, reopenAccount } from '../../privacy/closure.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const NullableTimestamp = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

const Closure = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    status: Type.Enum(['active', 'closing', 'purged'], {
      description: '`closing`: closed, suspended until `purge_after`; then purged',
    }),
    closed_at: NullableTimestamp,
    closed_by: Type.Union([Type.String(), Type.Null()]),
    purge_after: NullableTimestamp,
    purged_at: NullableTimestamp,
  },
  { additionalProperties: false },
);

const CloseBody = Type.Object(
  {
    confirm: Type.String({ minLength: 1, maxLength: 200, description: "The tenant's slug, to confirm" }),
    reason: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);

const security = [{ bearer: [] }];

const AccessSettings = Type.Object(
  {
    ip_allowlist: Type.Array(Type.String(), {
      description:
        'CIDR ranges (IPv4 and IPv6) from which API keys and the dashboard may be used; empty: anywhere',
    }),
    session_idle_minutes: Type.Union([Type.Integer(), Type.Null()], {
      description: `A dashboard session ends after this long without a request (null: ${SESSION_IDLE_MS / 60_000})`,
    }),
    session_absolute_minutes: Type.Union([Type.Integer(), Type.Null()], {
      description: `A dashboard session ends this long after sign-in in any case (null: ${SESSION_ABSOLUTE_MS / 60_000})`,
    }),
  },
  { additionalProperties: false },
);

const AllowListBody = Type.Object(
  {
    ip_allowlist: Type.Array(Type.String({ maxLength: 64 }), {
      maxItems: MAX_ALLOWLIST_ENTRIES,
      description:
        'Replaces the list; it must contain the address of this request. `[]` lifts the restriction.',
    }),
  },
  { additionalProperties: false },
);

const SessionBody = Type.Object(
  {
    session_idle_minutes: Type.Union([
      Type.Integer({ minimum: SESSION_IDLE_RANGE.min, maximum: SESSION_IDLE_RANGE.max }),
      Type.Null(),
    ]),
    session_absolute_minutes: Type.Union([
      Type.Integer({ minimum: SESSION_ABSOLUTE_RANGE.min, maximum: SESSION_ABSOLUTE_RANGE.max }),
      Type.Null(),
    ]),
  },
  { additionalProperties: false },
);

async function accessView(database: Database, tenantId: string): Promise<Static<typeof AccessSettings>> {
  const access = await tenantAccess(database, tenantId);
  return {
    ip_allowlist: [...access.ipAllowlist],
    session_idle_minutes: access.idleMinutes,
    session_absolute_minutes: access.absoluteMinutes,
  };
}

/** Account closure: close (with a grace period), reopen, and its state (docs/compliance.md#account-closure). */
export const accountRoutes: RoutePlugin = async (app, { database, now }) => {
  const clock = now ?? (() => new Date());

  app.get(
    '/api/v1/account/ip-allowlist',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: "The account's IP allow-list and dashboard session timeouts (admin)",
        security,
        response: { 200: AccessSettings, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'keys:manage');
      return accessView(database, auth.tenantId);
    },
  );

  app.put(
    '/api/v1/account/ip-allowlist',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: "Replace the account's IP allow-list (admin)",
        description:
          'Requests with an API key of the account, the dashboard and bound download links are then refused ' +
          '(403 `ip_not_allowed`) from addresses outside the list. A list that does not contain the address of ' +
          'this request is refused (400), so an admin cannot lock themselves out; an operator clears a list with ' +
          '`ferry tenants ip-allowlist <tenant> --clear`.',
        security,
        body: AllowListBody,
        response: { 200: AccessSettings, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      await setTenantAllowList(database, auth, request.body.ip_allowlist, clock());
      return accessView(database, auth.tenantId);
    },
  );

  app.put(
    '/api/v1/account/session-timeouts',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: "Set the dashboard's session timeouts (admin)",
        description:
          'Idle and absolute timeouts in minutes (null: the default). They apply to open sessions as well.',
        security,
        body: SessionBody,
        response: { 200: AccessSettings, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      await setSessionTimeouts(
        database,
        auth,
        {
          idleMinutes: request.body.session_idle_minutes,
          absoluteMinutes: request.body.session_absolute_minutes,
        },
        clock(),
      );
      return accessView(database, auth.tenantId);
    },
  );

  app.get(
    '/api/v1/account/closure',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: "The account's closure state (admin)",
        security,
        response: { 200: Closure, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'account:close');
      return closureState(database, auth.tenantId);
    },
  );

  app.post(
    '/api/v1/account/close',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: 'Close the account (admin)',
        description:
          `The account is suspended for ${GRACE_DAYS} days (it can still be read, exported and reopened), then ` +
          'every row, file and key of the tenant is purged except what legal holds keep, and a signed receipt ' +
          'records it. Take the company package first: `POST /api/v1/exports` with `{"datasets": [...], "package": "zip"}`.',
        security,
        body: CloseBody,
        response: { 200: Closure, ...problemResponses(400, 401, 403, 409, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'account:close');
      const tenant = await database.db
        .selectFrom('tenants')
        .select('slug')
        .where('id', '=', auth.tenantId)
        .executeTakeFirstOrThrow();
      if (request.body.confirm !== tenant.slug)
        throw invalid('confirm', `type the account's slug (${tenant.slug}) to confirm`);
      return closeAccount(
        database,
        auth.tenantId,
        { actor: auth.actor, ip: auth.ip, userAgent: auth.userAgent },
        { now: clock(), ...(request.body.reason ? { reason: request.body.reason } : {}) },
      );
    },
  );

  app.post(
    '/api/v1/account/reopen',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['account'],
        summary: 'Cancel the closure during the grace period (admin)',
        security,
        response: { 200: Closure, ...problemResponses(401, 403, 409, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'account:close');
      return reopenAccount(database, auth.tenantId, {
        actor: auth.actor,
        ip: auth.ip,
        userAgent: auth.userAgent,
      });
    },
  );
};
