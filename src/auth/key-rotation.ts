import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { AUDIT_ACTIONS, type AuditEntry, auditCaller, recordAudit } from './audit.ts';
import type { AuthContext } from './context.ts';
import { type ApiKeyInfo, type CreatedApiKey, INFO_COLUMNS, newKey, toInfo } from './keys.ts';
import { pepperRing } from './pepper.ts';
import { authorize } from './policy.ts';
import { type AuthTables, authDb } from './tables.ts';

/**
 * Key rotation: a new key with the old one's name, role, scopes, team member and allowed
 * addresses, while the old one keeps working for an overlap window (docs/auth.md#rotating-keys);
 * the expiry warnings sent a week ahead; and how many keys still carry a hash made under a
 * previous FERRY_SECRET_KEY.
 */

export const DEFAULT_OVERLAP_HOURS = 24;
export const MAX_OVERLAP_HOURS = 720;
/** `api_key.expiring` is sent this many days before a key expires. */
export const EXPIRY_WARNING_DAYS = 7;

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type Caller = Pick<AuditEntry, 'tenantId' | 'actor' | 'ip' | 'userAgent'>;

export interface RotateInput {
  /** Hours the old key keeps working (0: it stops at once); default 24, at most 720. */
  overlapHours?: number | undefined;
  /**
   * When the new key expires: a time, `null` for never, or (left out) the old key's
   * lifetime again: a key made to last 90 days is replaced by one that lasts 90 days.
   */
  expiresAt?: Date | null | undefined;
}

export interface RotatedKey {
  /** The new key, its secret shown once. */
  key: CreatedApiKey;
  /** The old key, with the end of its overlap window as `expiresAt`. */
  previous: ApiKeyInfo;
}

/** Rotates a key of the caller's tenant (`keys:manage`); audited as `api_key.rotated` and `api_key.created`. */
export async function rotateKeyFor(
  database: Database,
  auth: AuthContext,
  id: string,
  input: RotateInput,
  now: Date,
): Promise<RotatedKey> {
  authorize(auth, 'keys:manage');
  return storeRotation(database, auditCaller(auth), id, input, now);
}

/**
 * The rotation itself, for a caller already authorized (`rotateKeyFor`, `ferry keys rotate`).
 * The old key's row is locked for the change, so two rotations of one key cannot both
 * succeed: the second is a `conflict` naming the key that replaced it. Its expiry is set to
 * the end of the overlap, never later than it already was, and its expiry warning is reset
 * when that changes it.
 */
export async function storeRotation(
  database: Database,
  caller: Caller,
  id: string,
  input: RotateInput,
  now: Date,
): Promise<RotatedKey> {
  const overlapHours = input.overlapHours ?? DEFAULT_OVERLAP_HOURS;
  if (!Number.isInteger(overlapHours) || overlapHours < 0 || overlapHours > MAX_OVERLAP_HOURS)
    throw invalid('overlap_hours', `must be a whole number of hours from 0 to ${MAX_OVERLAP_HOURS}`);
  if (input.expiresAt && !(input.expiresAt.getTime() > now.getTime()))
    throw invalid('expires_at', 'must be in the future');
  const notFound = new FerryError('not_found', `API key "${id}" does not exist in this tenant`);
  if (!UUID.test(id)) throw notFound;
  const overlapEnd = new Date(now.getTime() + overlapHours * HOUR_MS);

  const result = await database.db.transaction().execute(async (trx) => {
    const db = trx.withTables<AuthTables>();
    const old = await db
      .selectFrom('api_keys')
      .select(INFO_COLUMNS)
      .where('tenant_id', '=', caller.tenantId)
      .where('id', '=', id)
      .forUpdate()
      .executeTakeFirst();
    if (!old) throw notFound;
    if (old.revoked_at)
      throw new FerryError('conflict', `API key ${id} was revoked: create a new key instead of rotating it`);
    const successor = await db
      .selectFrom('api_keys')
      .select(['id', 'prefix'])
      .where('rotated_from', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (successor)
      throw new FerryError(
        'conflict',
        `API key ${id} was rotated already: key ${successor.id} (${successor.prefix}…) replaces it; ` +
          'rotate that key instead, or revoke it first',
      );

    const lifetime = old.expires_at ? old.expires_at.getTime() - old.created_at.getTime() : null;
    const expiresAt =
      input.expiresAt !== undefined
        ? input.expiresAt
        : lifetime === null
          ? null
          : new Date(now.getTime() + Math.max(lifetime, DAY_MS));
    const { key, ...secret } = newKey(database);
    const created = await db
      .insertInto('api_keys')
      .values({
        id: randomUUID(),
        tenant_id: old.tenant_id,
        name: old.name,
        role: old.role,
        team_member_id: old.team_member_id,
        ...secret,
        scopes: [...old.scopes],
        allowed_ips: [...(old.allowed_ips ?? [])],
        created_by: caller.actor,
        created_at: now,
        expires_at: expiresAt,
        rotated_from: old.id,
      })
      .returning(INFO_COLUMNS)
      .executeTakeFirstOrThrow();

    let previous = old;
    if (!old.expires_at || old.expires_at.getTime() > overlapEnd.getTime()) {
      previous = await db
        .updateTable('api_keys')
        .set({ expires_at: overlapEnd, expiry_warned_at: null })
        .where('id', '=', old.id)
        .returning(INFO_COLUMNS)
        .executeTakeFirstOrThrow();
    }
    return { key: { ...toInfo(created), key }, previous: toInfo(previous) };
  });

  await recordAudit(database, {
    ...caller,
    action: AUDIT_ACTIONS.keyRotated,
    targetId: result.previous.id,
    dataType: `replaced by ${result.key.id}, overlap ${overlapHours}h`,
    success: true,
    occurredAt: now,
  });
  await recordAudit(database, {
    ...caller,
    action: AUDIT_ACTIONS.keyCreated,
    targetId: result.key.id,
    dataType: `api_key:${result.key.role}`,
    success: true,
    occurredAt: now,
  });
  return result;
}

// ---- expiry warnings --------------------------------------------------------------------

/** A key to warn about: it expires within EXPIRY_WARNING_DAYS and was not warned about for this expiry. */
export interface ExpiringKey {
  id: string;
  tenantId: string;
  name: string | null;
  prefix: string;
  expiresAt: Date;
  /** The id of the key that replaced it by rotation, if one did. */
  replacedBy: string | null;
}

/** Keys, of every tenant, that expire within a week of `now` and were not warned about yet, soonest first. */
export async function keysToWarn(database: Database, now: Date, limit = 500): Promise<ExpiringKey[]> {
  const horizon = new Date(now.getTime() + EXPIRY_WARNING_DAYS * DAY_MS);
  const rows = await authDb(database)
    .selectFrom('api_keys as k')
    .select([
      'k.id',
      'k.tenant_id',
      'k.name',
      'k.prefix',
      'k.expires_at',
      sql<string | null>`(SELECT n.id FROM api_keys n
        WHERE n.rotated_from = k.id AND n.revoked_at IS NULL LIMIT 1)`.as('replaced_by'),
    ])
    .where('k.revoked_at', 'is', null)
    .where('k.expiry_warned_at', 'is', null)
    .where('k.expires_at', '>', now)
    .where('k.expires_at', '<=', horizon)
    .orderBy('k.expires_at')
    .orderBy('k.id')
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    prefix: r.prefix,
    expiresAt: r.expires_at!,
    replacedBy: r.replaced_by,
  }));
}

/**
 * Records that `key` was warned about for its current expiry. False when its expiry
 * changed meanwhile (a rotation): then it is warned about again for the new one.
 */
export async function markExpiryWarned(database: Database, key: ExpiringKey, now: Date): Promise<boolean> {
  const result = await authDb(database)
    .updateTable('api_keys')
    .set({ expiry_warned_at: now })
    .where('id', '=', key.id)
    // Compared as JavaScript sees it: an expiry written by SQL may carry microseconds.
    .where(sql<Date>`date_trunc('milliseconds', expires_at)`, '=', key.expiresAt)
    .where('expiry_warned_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Whole days left until `expiresAt`, rounded up: a key expiring in 20 hours has 1 day left. */
export function daysLeft(expiresAt: Date, now: Date): number {
  return Math.max(0, Math.ceil((expiresAt.getTime() - now.getTime()) / DAY_MS));
}

// ---- previous secrets -------------------------------------------------------------------

/** How many usable keys carry a hash under which secret (`ferry keys rehash-status`). */
export interface RehashStatus {
  /** Active keys hashed under the current secret. */
  current: number;
  /** Active keys hashed under each previous secret, in FERRY_PREVIOUS_SECRET_KEYS order (after duplicates are dropped). */
  previous: number[];
  /**
   * Active keys whose secret is not known: made before pepper ids were recorded and not
   * used since, or hashed under a secret that is not configured any more.
   */
  unknown: number;
  /** Revoked and expired keys, and keys restored without their hash: they never work again. */
  inactive: number;
}

export async function rehashStatus(database: Database, now: Date, tenantId?: string): Promise<RehashStatus> {
  const ring = pepperRing(database);
  let query = authDb(database)
    .selectFrom('api_keys')
    .select([
      'pepper_id',
      // A hash withheld from a backup (a sandbox restore's keys) can never match a key: not counted as active.
      sql<boolean>`(revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${now}::timestamptz)
        AND key_hash ~ '^[0-9a-f]{64}$')`.as('active'),
      sql<string>`count(*)`.as('keys'),
    ])
    .groupBy(['pepper_id', 'active']);
  if (tenantId) query = query.where('tenant_id', '=', tenantId);
  const status: RehashStatus = { current: 0, previous: ring.previous.map(() => 0), unknown: 0, inactive: 0 };
  for (const row of await query.execute()) {
    const count = Number(row.keys);
    if (!row.active) status.inactive += count;
    else if (row.pepper_id === ring.current.id) status.current += count;
    else {
      const i = ring.previous.findIndex((p) => p.id === row.pepper_id);
      if (i === -1) status.unknown += count;
      else status.previous[i]! += count;
    }
  }
  return status;
}
