import { Type } from 'typebox';
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

/** Account closure: close (with a grace period), reopen, and its state (docs/compliance.md#account-closure). */
export const accountRoutes: RoutePlugin = async (app, { database, now }) => {
  const clock = now ?? (() => new Date());

  app.get(
    '/api/v1/account/closure',
    {
      preHandler: app.authenticate,
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
      preHandler: app.authenticate,
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
      preHandler: app.authenticate,
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
