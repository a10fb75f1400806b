import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/config.ts';
import { linkBase } from '../export-requests/links.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';

/**
 * The privacy center's status page of one request: `/privacy/<tenant>/requests/<id>/<token>`,
 * where the token is an HMAC of the request id under the install's secret key. The person
 * who made the request gets the link on the page and in the code email; nobody can reach
 * another request's page by changing the id.
 */
export function statusToken(config: Pick<Config, 'secretKey' | 'dataDir'>, requestId: string): string {
  return createHmac('sha256', loadOrCreateSecretKey(config))
    .update(`ferry:dsar-status:v1\0${requestId}`)
    .digest('base64url')
    .slice(0, 32);
}

/** Whether `token` is the request's status token, under the secret key or a previous one (FERRY_PREVIOUS_SECRET_KEYS). */
export function checkStatusToken(
  config: Pick<Config, 'secretKey' | 'dataDir' | 'previousSecretKeys'>,
  requestId: string,
  token: string,
) {
  const given = Buffer.from(token);
  const secrets = [
    config,
    ...(config.previousSecretKeys ?? []).map((secretKey) => ({ ...config, secretKey })),
  ];
  return secrets.some((secret) => {
    const expected = Buffer.from(statusToken(secret, requestId));
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

export function statusPath(tenantSlug: string, requestId: string, token: string): string {
  return `/privacy/${encodeURIComponent(tenantSlug)}/requests/${requestId}/${token}`;
}

/** The full link of a request's status page, under the server's public address. */
export function statusLink(config: Config, tenantSlug: string, requestId: string): string {
  return `${linkBase(config)}${statusPath(tenantSlug, requestId, statusToken(config, requestId))}`;
}
