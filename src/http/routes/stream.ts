import type {} from '@fastify/websocket';
import { FerryError } from '../../domain/ferry-error.ts';
import { createAuthLimiter } from '../../live/auth-limiter.ts';
import { createStreamHub } from '../../live/hub.ts';
import { openStreamSession } from '../../live/session.ts';
import { problemResponses } from '../problem.ts';
import { responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

export const STREAM_PATH = '/api/v1/stream/export';

/**
 * The live stream of conversation events over WebSocket (docs/stream.md). The
 * process's hub comes from the composition root; an app built without one (tests,
 * embedders) gets its own, stopped with the app. A plain HTTP request (no upgrade)
 * answers 426 `upgrade_required`.
 */
export const streamRoutes: RoutePlugin = async (app, deps) => {
  const hub = deps.stream ?? createStreamHub(deps.database, { logger: app.log });
  if (!deps.stream) app.addHook('onClose', () => hub.stop());
  const limiter = createAuthLimiter(hub.options.maxAuthFailuresPerMinute);

  app.route({
    method: 'GET',
    url: STREAM_PATH,
    exposeHeadRoute: false,
    schema: {
      tags: ['stream'],
      summary: 'Live stream of conversation events (WebSocket)',
      description:
        'Upgrade to a WebSocket (RFC 6455). The API key is sent in the first message ' +
        '(`{"type":"auth","token":…,"tenant_id":…}`), not in a header; then `subscribe`, optionally ' +
        'with `last_event_id` to resume. Messages are JSON text frames; see docs/stream.md.',
      response: {
        101: {
          description: 'Switching Protocols: the connection is a WebSocket',
          type: 'null',
          headers: responseHeaders('Upgrade', 'Connection', 'Sec-WebSocket-Accept'),
        },
        ...problemResponses(426),
      },
    },
    handler: async () => {
      throw new FerryError(
        'upgrade_required',
        `${STREAM_PATH} is a WebSocket: connect with Upgrade: websocket (see docs/stream.md)`,
      );
    },
    wsHandler: (socket, request) => {
      const userAgent = request.headers['user-agent'];
      openStreamSession(socket, {
        hub,
        database: deps.database,
        limiter,
        address: request.ip,
        userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null,
        logger: request.log,
      });
    },
  });
};
