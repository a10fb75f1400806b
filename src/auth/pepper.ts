import { createHash, createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * The HMAC keys ("peppers") API keys are hashed under. The current pepper is derived from
 * FERRY_SECRET_KEY (or the per-install key file); peppers of earlier secrets
 * (FERRY_PREVIOUS_SECRET_KEYS) are kept so that keys hashed under them still verify until
 * each has been used once and hashed again under the current one.
 */
export interface Pepper {
  readonly key: KeyObject;
  /** A short public name of the pepper, stored with each hash (`api_keys.pepper_id`). */
  readonly id: string;
}

export interface PepperRing {
  /** Every new hash is made under this one. */
  readonly current: Pepper;
  /** Peppers of earlier secrets, newest first; only ever checked against. */
  readonly previous: readonly Pepper[];
}

interface PepperSource {
  ring?: PepperRing;
  readonly secret: () => string;
  readonly previous: readonly string[];
}

/**
 * The peppers are bound to a Database object: the HTTP app and the CLI bind the ones
 * derived from the configured secrets before any key is made or checked. When nothing was
 * bound, the first use binds a random per-process pepper, so a key is never hashed under a
 * known value (such a key only works in that process).
 */
const sources = new WeakMap<Database, PepperSource>();

/** Derives the HMAC key from the configured secret, under its own domain label. */
export function derivePepper(secret: string): Buffer {
  if (secret.length < 32)
    throw new FerryError('secret_key_invalid', 'the secret key must be at least 32 characters');
  return createHash('sha256').update('ferry:api-keys:v1\0').update(secret).digest();
}

/** The id of a pepper: 16 hex digits of an HMAC of a fixed label, which says nothing about the pepper. */
function pepperOf(secret: string): Pepper {
  // A KeyObject, made once: HMAC with a raw Buffer key imports the key on every call.
  const key = createSecretKey(derivePepper(secret));
  const id = createHmac('sha256', key).update('ferry:api-keys:pepper-id:v1').digest('hex').slice(0, 16);
  return { key, id };
}

/**
 * Sets where the peppers for `database` come from, unless a source is set already (the
 * first binding wins, so keys made earlier in the process stay valid). `secret` is called
 * on first use, not here; `previous` lists earlier secrets, newest first.
 */
export function bindApiKeyPepper(
  database: Database,
  secret: () => string,
  previous: readonly string[] = [],
): void {
  if (!sources.has(database)) sources.set(database, { secret, previous: [...previous] });
}

/** The current and previous peppers of `database`. */
export function pepperRing(database: Database): PepperRing {
  bindApiKeyPepper(database, () => randomBytes(32).toString('base64url'));
  const source = sources.get(database)!;
  if (!source.ring) {
    const current = pepperOf(source.secret());
    const previous: Pepper[] = [];
    for (const secret of source.previous) {
      const pepper = pepperOf(secret);
      // The current secret left in the list, or one listed twice, is checked once.
      if (pepper.id !== current.id && !previous.some((p) => p.id === pepper.id)) previous.push(pepper);
    }
    source.ring = { current, previous };
  }
  return source.ring;
}

/** The keyed hash of an API key under one pepper. */
export function hashKey(pepper: Pepper, token: string): Buffer {
  return createHmac('sha256', pepper.key).update(token, 'utf8').digest();
}
