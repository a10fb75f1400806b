import { createHash } from 'node:crypto';
import type { AuthContext } from '../auth/context.ts';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { exportDb } from './tables.ts';

/**
 * Idempotency keys (as Stripe's): the first accepted request with a key stores its
 * status and response under (tenant, credential, key) with a hash of the request; a
 * retry with the same key and the same request gets the stored response again, the
 * same key with another request is refused with `idempotency_key_reused`. Keys are
 * kept at least 24 hours (`IDEMPOTENCY_RETENTION_HOURS`); after that a reuse is a new
 * request. Requests that fail validation or authorization store nothing.
 */
export const IDEMPOTENCY_RETENTION_HOURS = 48;

const KEY = /^[\x21-\x7e]{1,255}$/;

export interface StoredResponse {
  statusCode: number;
  response: unknown;
  resourceId: string | null;
}

/** Checks the header value: 1-255 printable ASCII characters. */
export function checkIdempotencyKey(key: string): string {
  if (!KEY.test(key))
    throw invalid('Idempotency-Key', 'must be 1 to 255 printable ASCII characters without spaces');
  return key;
}

/** Who the key belongs to: the API key, or the actor for other credentials. */
export function credentialOf(auth: AuthContext): string {
  return auth.apiKeyId ? `api_key:${auth.apiKeyId}` : auth.actor;
}

/** SHA-256 of the operation and its canonical JSON input (object keys sorted). */
export function requestHash(operation: string, input: unknown): string {
  return createHash('sha256').update(operation).update('\n').update(canonicalJson(input)).digest('hex');
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The stored response for a key, or undefined when the key is new (or older than the
 * retention). Throws `idempotency_key_reused` when the key was used for another request.
 */
export async function findIdempotentResponse(
  database: Database,
  auth: AuthContext,
  input: { key: string; operation: string; requestHash: string; notBefore: Date },
): Promise<StoredResponse | undefined> {
  const row = await exportDb(database)
    .selectFrom('idempotency_keys')
    .select(['operation', 'request_hash', 'status_code', 'response', 'resource_id', 'created_at'])
    .where('tenant_id', '=', auth.tenantId)
    .where('credential', '=', credentialOf(auth))
    .where('key', '=', input.key)
    .executeTakeFirst();
  if (!row || row.created_at < input.notBefore) return undefined;
  if (row.operation !== input.operation || row.request_hash !== input.requestHash)
    throw new FerryError(
      'idempotency_key_reused',
      `the Idempotency-Key "${input.key}" was already used with a different request; use a new key for a new request`,
    );
  return { statusCode: row.status_code, response: row.response, resourceId: row.resource_id };
}

/** Removes keys older than the retention; returns how many. */
export async function pruneIdempotencyKeys(database: Database, now: Date): Promise<number> {
  const before = new Date(now.getTime() - IDEMPOTENCY_RETENTION_HOURS * 3_600_000);
  const result = await exportDb(database)
    .deleteFrom('idempotency_keys')
    .where('created_at', '<', before)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** The oldest creation time a key may have and still be replayed. */
export function idempotencyWindowStart(now: Date): Date {
  return new Date(now.getTime() - IDEMPOTENCY_RETENTION_HOURS * 3_600_000);
}
