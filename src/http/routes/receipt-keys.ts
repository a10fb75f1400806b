import { Type } from 'typebox';
import { receiptJwks } from '../../privacy/receipt-keys.ts';
import type { RoutePlugin } from '../types.ts';

const ReceiptJwk = Type.Object(
  {
    kty: Type.Literal('OKP'),
    crv: Type.Literal('Ed25519'),
    x: Type.String({ description: 'The raw 32-byte public key, base64url' }),
    kid: Type.String({
      description: 'The key id that receipts name (`signature.kid`): its RFC 7638 thumbprint',
    }),
    use: Type.Literal('sig'),
    alg: Type.Literal('EdDSA'),
    status: Type.Union([Type.Literal('active'), Type.Literal('retired')], {
      description:
        '`active` signs new receipts; `retired` keys only verify receipts issued before their retirement',
    }),
    valid_from: Type.String({ description: 'When the key started signing (UTC, microseconds)' }),
    valid_until: Type.Union([Type.String(), Type.Null()], {
      description: 'When the key was retired (UTC, microseconds); null while active',
    }),
  },
  { additionalProperties: false },
);

const ReceiptJwks = Type.Object(
  {
    keys: Type.Array(ReceiptJwk, {
      description: 'Every key that ever signed receipts, oldest first; empty before the first receipt',
    }),
  },
  { additionalProperties: false },
);

/** How long caches may keep the key set: a rotated key shows up within this time. */
const CACHE_SECONDS = 300;

/** The public keys that verify signed receipts, as a JWKS (RFC 7517): public, no credentials. */
export const receiptKeyRoutes: RoutePlugin = async (app, { database }) => {
  app.get(
    '/.well-known/ferry-receipt-keys.json',
    {
      schema: {
        tags: ['receipts'],
        summary: 'The public keys that verify receipts',
        description:
          'The Ed25519 public keys (JWKS, RFC 7517 and RFC 8037) that sign the receipts of data subject ' +
          'requests. Retired keys stay listed with their validity period, so every receipt ever issued ' +
          'still verifies. Public: no credentials needed. See docs/receipts.md.',
        response: {
          200: {
            description: 'The key set',
            headers: {
              'Cache-Control': {
                type: 'string',
                description: `\`public, max-age=${CACHE_SECONDS}\`: caches may keep the key set for five minutes`,
              },
            },
            content: {
              'application/jwk-set+json': { schema: ReceiptJwks },
              'application/json': { schema: ReceiptJwks },
            },
          },
        },
      },
    },
    async (_request, reply) => {
      reply.header('cache-control', `public, max-age=${CACHE_SECONDS}`);
      reply.type('application/jwk-set+json');
      const jwks = await receiptJwks(database);
      return { keys: [...jwks.keys] };
    },
  );
};
