import { sql } from 'kysely';
import { Type } from 'typebox';
import { problem, problemResponses } from '../problem.ts';
import { instanceOf, sendProblem } from '../error-handler.ts';
import type { RoutePlugin } from '../types.ts';

const Health = Type.Object(
  {
    status: Type.Literal('ok'),
    version: Type.String({ description: 'The Ferry version', examples: ['0.1.0'] }),
  },
  { additionalProperties: false },
);

const Ready = Type.Object(
  { status: Type.Literal('ready'), database: Type.Literal('ok') },
  { additionalProperties: false },
);

/** Readiness fails rather than hangs when the database does not answer in time. */
const READY_TIMEOUT_MS = 5_000;

/** Liveness and readiness probes, for load balancers and orchestrators. */
export const healthRoutes: RoutePlugin = async (app, { database, version }) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['health'],
        summary: 'Liveness: the process is up',
        description:
          'Answers without touching any dependency, so a restart is only triggered by a stuck process.',
        response: { 200: Health },
      },
    },
    async () => ({ status: 'ok' as const, version }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['health'],
        summary: 'Readiness: the database answers',
        description:
          'Runs `SELECT 1`; answers 503 while the database is unreachable or the server is stopping.',
        response: { 200: Ready, ...problemResponses(503) },
      },
    },
    async (request, reply) => {
      try {
        await withTimeout(sql`SELECT 1`.execute(database.db), READY_TIMEOUT_MS);
        return { status: 'ready' as const, database: 'ok' as const };
      } catch (err) {
        request.log.warn({ err }, 'readiness check failed');
        return sendProblem(
          reply,
          problem({
            code: 'service_unavailable',
            detail: 'the database is not reachable',
            instance: instanceOf(request),
            requestId: request.id,
          }),
        );
      }
    },
  );
};

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
