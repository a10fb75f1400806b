import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, LogController } from 'fastify';
import packageJson from '../../package.json' with { type: 'json' };
import { installAuth } from '../auth/plugin.ts';
import { openKeyring } from '../crypto/open-keyring.ts';
import { createLogger } from '../lib/logger.ts';
import {
  clientErrorHandler,
  frameworkError,
  installErrorHandling,
  instanceOf,
  sendProblem,
} from './error-handler.ts';
import { registerOpenApi } from './openapi.ts';
import { ProblemSchema, problem } from './problem.ts';
import { parseQueryString } from './query-string.ts';
import { accountRoutes } from './routes/account.ts';
import { apiKeyRoutes } from './routes/api-keys.ts';
import { auditRoutes } from './routes/audit.ts';
import { complianceRoutes } from './routes/compliance.ts';
import { complianceReportRoutes } from './routes/compliance-reports.ts';
import { consentRoutes } from './routes/consent.ts';
import { docsRoutes } from './routes/docs.ts';
import { downloadRoutes } from './routes/downloads.ts';
import { dsarRoutes } from './routes/dsar.ts';
import { exportConfigRoutes } from './routes/export-configs.ts';
import { exportDatasetRoutes } from './routes/export-datasets.ts';
import { exportRoutes } from './routes/exports.ts';
import { healthRoutes } from './routes/health.ts';
import { odataRoutes } from './routes/odata.ts';
import { organisationRoutes } from './routes/organisation.ts';
import { problemRoutes } from './routes/problems.ts';
import { processorRoutes } from './routes/processors.ts';
import { receiptKeyRoutes } from './routes/receipt-keys.ts';
import { deletionRoutes } from './routes/deletions.ts';
import { retentionRoutes } from './routes/retention.ts';
import { backupRoutes } from './routes/backups.ts';
import { importRoutes } from './routes/imports.ts';
import { scheduleRoutes } from './routes/schedules.ts';
import { schemaRoutes } from './routes/schemas.ts';
import { streamRoutes } from './routes/stream.ts';
import { usageRoutes } from './routes/usage.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import type { AppDeps, FerryApp, RouteDeps, RoutePlugin } from './types.ts';
import { buildValidator } from './validation.ts';

export type { FerryApp };

export const FERRY_VERSION: string = packageJson.version;

/** The API's areas, one plugin file each in src/http/routes/. */
const ROUTES: readonly RoutePlugin[] = [
  healthRoutes,
  problemRoutes,
  docsRoutes,
  apiKeyRoutes,
  usageRoutes,
  auditRoutes,
  exportDatasetRoutes,
  odataRoutes,
  exportRoutes,
  schemaRoutes,
  downloadRoutes,
  complianceRoutes,
  streamRoutes,
  webhookRoutes,
  scheduleRoutes,
  exportConfigRoutes,
  dsarRoutes,
  receiptKeyRoutes,
  consentRoutes,
  processorRoutes,
  retentionRoutes,
  deletionRoutes,
  complianceReportRoutes,
  accountRoutes,
  backupRoutes,
  importRoutes,
  organisationRoutes,
];

const QUIET_PATHS = new Set(['/healthz', '/readyz']);

/** A caller's `X-Request-Id` is kept when it is short and plain, so it cannot forge log lines. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the HTTP application (not yet listening). Adapters come in through `deps`. */
export async function buildApp(deps: AppDeps): Promise<FerryApp> {
  const logger = deps.logger ?? createLogger(deps.config);
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    requestIdHeader: false,
    logController: new LogController({
      requestIdLogLabel: 'request_id',
      // Probes arrive every few seconds; their lines would drown everything else.
      disableRequestLogging: (request) => QUIET_PATHS.has(request.url.split('?')[0]!),
    }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    schemaController: { compilersFactory: { buildValidator } },
    routerOptions: { querystringParser: parseQueryString },
    // Every answer is a problem document with a request id, including the ones Fastify and
    // Node's HTTP parser would otherwise write themselves.
    frameworkErrors: frameworkError,
    clientErrorHandler,
    return503OnClosing: false,
    // The client address (`request.ip`) is the socket's, or, when the peer is one of the
    // trusted proxies, the one proxy-addr finds walking back X-Forwarded-For.
    trustProxy: deps.config.trustedProxies?.length ? [...deps.config.trustedProxies] : false,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Once closing, answers end their connection: a keep-alive client would otherwise
  // hold the shutdown open until its idle timeout. A request that arrives then is
  // turned away (503), so a load balancer sends it to another replica.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (closing) {
      const body = problem({
        code: 'service_unavailable',
        detail: 'the server is shutting down; retry on another replica or in a moment',
        instance: instanceOf(request),
        requestId: request.id,
      });
      request.log.info({ code: body.code }, 'request rejected');
      return sendProblem(reply, body);
    }
  });
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });
  app.addSchema(ProblemSchema);
  installErrorHandling(app);
  await registerOpenApi(app, deps.config, FERRY_VERSION);
  await installAuth(app, { database: deps.database, config: deps.config, now: deps.now });
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });

  const routeDeps: RouteDeps = {
    database: deps.database,
    config: deps.config,
    version: FERRY_VERSION,
    secrets: deps.secrets ?? (await openKeyring(deps.database, deps.config)).secrets,
    ...(deps.now ? { now: deps.now } : {}),
    ...(deps.queue ? { queue: deps.queue } : {}),
    ...(deps.store ? { store: deps.store } : {}),
    ...(deps.signer ? { signer: deps.signer } : {}),
    ...(deps.stream ? { stream: deps.stream } : {}),
    ...(deps.deliveryClients ? { deliveryClients: deps.deliveryClients } : {}),
    ...(deps.mailer ? { mailer: deps.mailer } : {}),
  };
  for (const routes of [...ROUTES, ...(deps.routes ?? [])]) await app.register(routes, routeDeps);
  return app;
}
