import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config/config.ts';

/**
 * Collects every route's schemas into an OpenAPI 3.1 document. Registered on the
 * root instance before the routes, so it sees all of them; shared schemas added
 * with `addSchema` become `components.schemas` under their `$id`.
 */
export async function registerOpenApi(app: FastifyInstance, config: Config, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Ferry API',
        version,
        description:
          'Data export, backup and portability for AI customer-support platforms. Errors are RFC 9457 ' +
          '`application/problem+json` documents with a stable `code`.',
        license: { name: 'MIT', identifier: 'MIT' },
      },
      ...(config.publicUrl ? { servers: [{ url: config.publicUrl }] } : {}),
      tags: [
        { name: 'health', description: 'Liveness and readiness probes' },
        { name: 'errors', description: 'The catalog of error codes that problem documents carry' },
        { name: 'api-keys', description: 'API keys of the tenant (admin)' },
        { name: 'usage', description: 'Plan quotas and what is used' },
        { name: 'audit', description: 'The audit trail of exports, downloads and key changes' },
      ],
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API key: `Authorization: Bearer fy_live_...` (see docs/auth.md)',
          },
        },
      },
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
  });
}
