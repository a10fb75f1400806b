import swaggerUi from '@fastify/swagger-ui';
import { Type } from 'typebox';
import type { RoutePlugin } from '../types.ts';

const OpenApiDocument = Type.Object(
  { openapi: Type.String(), info: Type.Object({}, { additionalProperties: true }) },
  { additionalProperties: true },
);

/** The OpenAPI document at /openapi.json and the interactive reference at /docs (assets served locally). */
export const docsRoutes: RoutePlugin = async (app) => {
  app.get(
    '/openapi.json',
    { schema: { hide: true, response: { 200: OpenApiDocument } } },
    async () => app.swagger() as unknown as { openapi: string; info: Record<string, unknown> },
  );

  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { deepLinking: true, docExpansion: 'list' },
  });
};
