import { Type } from 'typebox';
import { PLANS } from '../../auth/context.ts';
import { authorize } from '../../auth/policy.ts';
import { limitsFor, QUOTAS } from '../../auth/quotas.ts';
import { usageReport } from '../../auth/usage.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const Count = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]);

const QuotaUsage = Type.Object(
  {
    quota: Type.Enum(QUOTAS),
    unit: Type.Enum(['exports', 'bytes', 'days', 'jobs', 'schedules', 'requests_per_hour']),
    limit: { ...Count, description: 'null: unlimited' },
    used: { ...Count, description: 'null: not counted' },
    remaining: Count,
    resets_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When the count starts again; null when it does not reset with time',
    }),
    description: Type.String(),
  },
  { additionalProperties: false },
);

const Usage = Type.Object(
  { tenant_id: Type.String({ format: 'uuid' }), plan: Type.Enum(PLANS), quotas: Type.Array(QuotaUsage) },
  { additionalProperties: false },
);

/** The tenant's plan quotas, what is used and when each resets. */
export const usageRoutes: RoutePlugin = async (app, { database, now: clock }) => {
  const now = clock ?? (() => new Date());
  app.get(
    '/api/v1/usage',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['usage'],
        summary: 'Plan quotas and usage (admin, manager)',
        description:
          'Each quota of the plan with its limit, what is used and when it resets. The rate limit line ' +
          'is the calling key’s own.',
        security: [{ bearer: [] }],
        response: { 200: Usage, ...problemResponses(401, 403, 429) },
      },
    },
    async (request) => {
      const auth = request.auth!;
      authorize(auth, 'usage:read');
      const limits = request.limits ?? (await limitsFor(database, auth));
      return usageReport(database, auth, limits, now());
    },
  );
};
