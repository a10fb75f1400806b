import type {} from '@fastify/websocket';
import { createAuthLimiter } from '../../stream/auth-limiter.ts';
import { createStreamHub } from '../../stream/hub.ts';
import { openStreamSession } from '../../stream/session.ts';
import type { RoutePlugin } from '../types.ts';

export const STREAM_PATH = '/api/v1/stream/export';

/**
 * The live stream of conversation events over WebSocket (docs/stream.md). The
 * process's hub comes from the composition root; an app built without one (tests,
 * embedders) gets its own, stopped with the app.
 */
export const streamRoutes: RoutePlugin = async (app, deps) => {
  const hub = deps.stream ?? createStreamHub(deps.database, { logger: app.log });
  if (!deps.stream) app.addHook('onClose', () => hub.stop());
  const limiter = createAuthLimiter(hub.options.maxAuthFailuresPerMinute);

  app.get(STREAM_PATH, { websocket: true }, (socket, request) => {
    const userAgent = request.headers['user-agent'];
    openStreamSession(socket, {
      hub,
      database: deps.database,
      limiter,
      address: request.ip,
      userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null,
      logger: request.log,
    });
  });
};
