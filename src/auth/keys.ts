import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { AUDIT_ACTIONS, type AuditEntry, auditCaller, recordAudit } from './audit.ts';
import { type AllowLists, parseAllowList } from './ip-allowlist.ts';
import { hashKey, pepperRing } from './pepper.ts';
import { type AuthContext, PLANS, type Plan, ROLES, type Role } from './context.ts';
import { ACTIONS, authorize, ROLE_ACTIONS } from './policy.ts';
import { countRequestsSql, type RateCounts, type RateWindows, rateWindows } from './rate-limit.ts';
import { authDb } from './tables.ts';

/**
 * API keys: `fy_live_` followed by 43 base62 characters (32 random bytes, 256 bits).
 * The key is shown once; the database keeps its first characters (the prefix, for
 * lookup and display) and an HMAC-SHA-256 of the whole key under a server-side pepper,
 * compared in constant time. Keys are high-entropy secrets, so a fast keyed hash is
 * the right storage: a slow password hash would only cost CPU on every request.
 */
export const KEY_PREFIX = 'fy_live_';
const RANDOM_CHARS = 43;
const PREFIX_CHARS = 8;
const KEY_PATTERN = /^fy_live_[0-9A-Za-z]{43}$/;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_NAME = 100;
/** `last_used_at` is written at most once a minute per key, not on every request. */
const LAST_USED_RESOLUTION_MS = 60_000;

// ---- pepper ----------------------------------------------------------------------------

export { bindApiKeyPepper, derivePepper } from './pepper.ts';

// ---- key text --------------------------------------------------------------------------

function base62(bytes: Buffer, length: number): string {
  let n = BigInt(`0x${bytes.toString('hex')}`);
  let out = '';
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out.padStart(length, '0');
}

function newKeyText(): string {
  return `${KEY_PREFIX}${base62(randomBytes(32), RANDOM_CHARS)}`;
}

/** Whether a bearer token has the shape of a Ferry API key (checked before any query). */
export function isWellFormedKey(token: string): boolean {
  return KEY_PATTERN.test(token);
}

function prefixOf(token: string): string {
  return token.slice(0, KEY_PREFIX.length + PREFIX_CHARS);
}

/** A new key and the columns that store it: its prefix, its hash under the current pepper and that pepper's id. */
export function newKey(database: Database): {
  key: string;
  prefix: string;
  key_hash: string;
  pepper_id: string;
} {
  const key = newKeyText();
  const { current } = pepperRing(database);
  return {
    key,
    prefix: prefixOf(key),
    key_hash: hashKey(current, key).toString('hex'),
    pepper_id: current.id,
  };
}

// ---- create, list, revoke --------------------------------------------------------------

export interface CreateApiKeyInput {
  tenantId: string;
  role: Role;
  name?: string | undefined;
  teamMemberId?: string | undefined;
  expiresAt?: Date | undefined;
  scopes?: readonly string[] | undefined;
  /** CIDR ranges the key may be used from (empty: anywhere the tenant's list allows). */
  allowedIps?: readonly unknown[] | undefined;
  /** Who created it, for the audit trail and the listing (`api_key:<id>`, `cli`). */
  createdBy?: string | undefined;
}

/** A key as listed: metadata and prefix, never the key or its hash. */
export interface ApiKeyInfo {
  id: string;
  tenantId: string;
  name: string | null;
  role: Role;
  teamMemberId: string | null;
  prefix: string;
  scopes: string[];
  allowedIps: string[];
  createdBy: string | null;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
  /** The key this one replaced by rotation. */
  rotatedFrom: string | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** The full key. Shown once: only its hash is stored. */
  key: string;
}

/** Creates a key for a tenant; validates role, team member (same tenant), scopes and expiry. */
export async function createApiKey(
  database: Database,
  input: CreateApiKeyInput,
  now: Date = new Date(),
): Promise<CreatedApiKey> {
  if (!(ROLES as readonly string[]).includes(input.role))
    throw invalid('role', `unknown role "${input.role}"`, ROLES);
  const name = input.name?.trim() || null;
  if (name && name.length > MAX_NAME) throw invalid('name', `must be at most ${MAX_NAME} characters`);
  const scopes = [...new Set(input.scopes ?? [])];
  for (const scope of scopes) {
    if (!(ACTIONS as readonly string[]).includes(scope))
      throw invalid('scopes', `unknown scope "${scope}"`, ACTIONS);
  }
  // A scope narrows what the role allows; one above the role would promise what no request gets.
  const allowed = ROLE_ACTIONS[input.role as Role];
  const above = scopes.filter((scope) => !(allowed as readonly string[]).includes(scope));
  if (above.length)
    throw invalid(
      'scopes',
      `${above.map((s) => `"${s}"`).join(', ')} ${above.length === 1 ? 'is' : 'are'} above the ${input.role} role; ` +
        `a ${input.role} key may be limited to: ${allowed.join(', ')}`,
      allowed,
    );
  if (input.expiresAt && !(input.expiresAt.getTime() > now.getTime()))
    throw invalid('expires_at', 'must be in the future');
  const allowedIps = parseAllowList('allowed_ips', input.allowedIps ?? []);
  const db = authDb(database);
  if (!UUID.test(input.tenantId))
    throw new FerryError('not_found', `tenant "${input.tenantId}" does not exist`);
  const tenant = await db
    .selectFrom('tenants')
    .select('id')
    .where('id', '=', input.tenantId)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `tenant "${input.tenantId}" does not exist`);
  const teamMemberId = input.teamMemberId ?? null;
  if (input.role === 'agent' && !teamMemberId)
    throw invalid('team_member_id', 'an agent key must be bound to a team member of the tenant');
  if (teamMemberId) {
    const member = UUID.test(teamMemberId)
      ? await db
          .selectFrom('team_members')
          .select('id')
          .where('tenant_id', '=', input.tenantId)
          .where('id', '=', teamMemberId)
          .executeTakeFirst()
      : undefined;
    if (!member) throw invalid('team_member_id', `no team member "${teamMemberId}" in this tenant`);
  }

  const { key, ...secret } = newKey(database);
  const id = randomUUID();
  const row = await db
    .insertInto('api_keys')
    .values({
      id,
      tenant_id: input.tenantId,
      name,
      role: input.role,
      team_member_id: teamMemberId,
      ...secret,
      scopes,
      allowed_ips: allowedIps,
      created_by: input.createdBy ?? null,
      created_at: now,
      expires_at: input.expiresAt ?? null,
    })
    .returning(INFO_COLUMNS)
    .executeTakeFirstOrThrow();
  return { ...toInfo(row), key };
}

export const INFO_COLUMNS = [
  'id',
  'tenant_id',
  'name',
  'role',
  'team_member_id',
  'prefix',
  'scopes',
  'allowed_ips',
  'created_by',
  'created_at',
  'expires_at',
  'revoked_at',
  'last_used_at',
  'rotated_from',
] as const;

interface InfoRow {
  id: string;
  tenant_id: string;
  name: string | null;
  role: Role;
  team_member_id: string | null;
  prefix: string;
  scopes: string[];
  allowed_ips: string[];
  created_by: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  rotated_from: string | null;
}

/** An API key as the API and `ferry keys list --json` show it: snake_case, timestamps as ISO text. */
export interface ApiKeyView {
  id: string;
  prefix: string;
  name: string | null;
  role: Role;
  team_member_id: string | null;
  scopes: string[];
  /** CIDR ranges the key may be used from; empty: no restriction of its own. */
  allowed_ips: string[];
  status: 'active' | 'expired' | 'revoked';
  created_by: string | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  /** The id of the key this one replaced (`POST /api/v1/api-keys/{id}/rotate`). */
  rotated_from: string | null;
}

/** Whether a key works at `now`. */
export function apiKeyStatus(key: ApiKeyInfo, now: Date): ApiKeyView['status'] {
  if (key.revokedAt) return 'revoked';
  if (key.expiresAt && key.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'active';
}

/** The one presentation of a key, shared by the API and the CLI. Never the key itself. */
export function presentApiKey(key: ApiKeyInfo, now: Date): ApiKeyView {
  return {
    id: key.id,
    prefix: key.prefix,
    name: key.name,
    role: key.role,
    team_member_id: key.teamMemberId,
    scopes: [...key.scopes],
    allowed_ips: [...key.allowedIps],
    status: apiKeyStatus(key, now),
    created_by: key.createdBy,
    created_at: key.createdAt.toISOString(),
    expires_at: key.expiresAt?.toISOString() ?? null,
    revoked_at: key.revokedAt?.toISOString() ?? null,
    last_used_at: key.lastUsedAt?.toISOString() ?? null,
    rotated_from: key.rotatedFrom,
  };
}

export function toInfo(row: InfoRow): ApiKeyInfo {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    role: row.role,
    teamMemberId: row.team_member_id,
    prefix: row.prefix,
    scopes: [...row.scopes],
    allowedIps: [...(row.allowed_ips ?? [])],
    createdBy: row.created_by,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
    rotatedFrom: row.rotated_from,
  };
}

/** The tenant's keys, newest first, revoked and expired ones included. */
export async function listApiKeys(database: Database, tenantId: string): Promise<ApiKeyInfo[]> {
  if (!UUID.test(tenantId)) return [];
  const rows = await authDb(database)
    .selectFrom('api_keys')
    .select(INFO_COLUMNS)
    .where('tenant_id', '=', tenantId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
  return rows.map(toInfo);
}

/** One key of the tenant; a key of another tenant is `not_found`. */
export async function getApiKey(database: Database, tenantId: string, id: string): Promise<ApiKeyInfo> {
  const row = UUID.test(id)
    ? await authDb(database)
        .selectFrom('api_keys')
        .select(INFO_COLUMNS)
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .executeTakeFirst()
    : undefined;
  if (!row) throw new FerryError('not_found', `API key "${id}" does not exist in this tenant`);
  return toInfo(row);
}

/**
 * Revokes a key of the tenant; it answers 401 from the next request on. Revoking a
 * revoked key keeps the first revocation time. A key of another tenant is `not_found`.
 */
export async function revokeApiKey(
  database: Database,
  tenantId: string,
  id: string,
  now: Date = new Date(),
): Promise<ApiKeyInfo> {
  const existing = await getApiKey(database, tenantId, id);
  if (existing.revokedAt) return existing;
  const row = await authDb(database)
    .updateTable('api_keys')
    .set({ revoked_at: now })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .returning(INFO_COLUMNS)
    .executeTakeFirst();
  return row ? toInfo(row) : getApiKey(database, tenantId, id);
}

/**
 * Replaces a key's IP allow-list (`keys:manage`); an empty list lifts the key's own
 * restriction. Audited as `api_key.allowed_ips_changed`. A key of another tenant is `not_found`.
 */
export async function setKeyAllowList(
  database: Database,
  auth: AuthContext,
  id: string,
  entries: readonly unknown[],
  now: Date,
): Promise<ApiKeyInfo> {
  authorize(auth, 'keys:manage');
  return storeKeyAllowList(database, auditCaller(auth), id, entries, now);
}

/** The change itself, for a caller already authorized (`setKeyAllowList`, `ferry keys allow-ips`). */
export async function storeKeyAllowList(
  database: Database,
  caller: Pick<AuditEntry, 'tenantId' | 'actor' | 'ip' | 'userAgent'>,
  id: string,
  entries: readonly unknown[],
  now: Date,
): Promise<ApiKeyInfo> {
  const list = parseAllowList('allowed_ips', entries);
  await getApiKey(database, caller.tenantId, id);
  const row = await authDb(database)
    .updateTable('api_keys')
    .set({ allowed_ips: list })
    .where('tenant_id', '=', caller.tenantId)
    .where('id', '=', id)
    .returning(INFO_COLUMNS)
    .executeTakeFirstOrThrow();
  await recordAudit(database, {
    ...caller,
    action: 'api_key.allowed_ips_changed',
    targetId: id,
    dataType: list.length ? `${list.length} ranges` : 'cleared',
    success: true,
    occurredAt: now,
  });
  return toInfo(row);
}

// ---- verify ----------------------------------------------------------------------------

/** What a valid key resolves to: the caller context plus the tenant's limit overrides. */
export interface ResolvedKey {
  auth: AuthContext;
  /** The tenant's `ferry.limits` setting (honoured for enterprise plans), if any. */
  limitOverrides: Record<string, unknown> | null;
  /** With `countRequest`: this request's rate-limit windows and the key's counts in them. */
  rate?: { windows: RateWindows; counts: RateCounts };
  /** The tenant's account status: `active`, `closing` (closed, in its grace period) or `purged`. */
  tenantStatus: 'active' | 'closing' | 'purged';
  /** The tenant's and the key's IP allow-lists (empty = no restriction). */
  allowLists: AllowLists;
}

/** Why a token was refused. Expired and revoked are only told to a caller holding the whole key. */
export type KeyRejection = 'malformed' | 'unknown' | 'expired' | 'revoked';

/** A refused token; an expired key also says when it expired and the prefix of the key that replaced it. */
export interface RejectedKey {
  rejected: KeyRejection;
  expiredAt?: Date;
  replacedBy?: string | null;
}

/** The setting key holding an enterprise tenant's custom limits. */
export const LIMITS_SETTING = 'ferry.limits';

/**
 * Resolves a bearer token to its key, or says why it is refused. Every stored key
 * with the same prefix is compared in constant time, under the current pepper and each
 * previous one. A key that matches only under a previous pepper is hashed again under the
 * current one (a compare-and-set on the old hash, so concurrent requests agree), and a key
 * whose pepper was not recorded yet gets it recorded: once every key has been used, the
 * previous secrets can go (`ferry keys rehash-status`).
 *
 * With `countRequest`, the same statement also counts the request against the key's
 * rate-limit windows (when the key is valid: right hash, not revoked, not expired), and
 * the counts come back in `rate`: one round trip for what every API request needs.
 */
export async function resolveApiKey(
  database: Database,
  token: string,
  now: Date = new Date(),
  options: { countRequest?: boolean } = {},
): Promise<ResolvedKey | RejectedKey> {
  if (!isWellFormedKey(token)) return { rejected: 'malformed' };
  const ring = pepperRing(database);
  const peppers = [ring.current, ...ring.previous];
  const hashes = peppers.map((pepper) => hashKey(pepper, token));
  const expected = hashes[0]!;
  const db = authDb(database);
  const lookup = db
    .selectFrom('api_keys as k')
    .innerJoin('tenants as t', 't.id', 'k.tenant_id')
    .leftJoin('settings as s', (join) =>
      join.onRef('s.tenant_id', '=', 'k.tenant_id').on('s.key', '=', LIMITS_SETTING),
    )
    .leftJoin('tenant_access as a', 'a.tenant_id', 'k.tenant_id')
    .select([
      'k.id',
      'k.tenant_id',
      'k.role',
      'k.team_member_id',
      'k.scopes',
      'k.key_hash',
      'k.expires_at',
      'k.revoked_at',
      'k.last_used_at',
      'k.pepper_id',
      't.plan',
      't.status as tenant_status',
      's.value as limits',
      'k.allowed_ips',
      'a.ip_allowlist',
    ])
    .where('k.prefix', '=', prefixOf(token));
  let windows: RateWindows | undefined;
  let candidates: (Awaited<ReturnType<typeof lookup.execute>>[number] & {
    hour_count?: number | null;
    burst_count?: number | null;
  })[];
  if (options.countRequest) {
    windows = rateWindows(now);
    // Only the key whose stored hash equals this token's is counted. The comparison in SQL
    // is of HMAC outputs under a secret pepper, so its timing tells nothing about a key.
    const valid = sql`SELECT id FROM k
      WHERE key_hash IN (${sql.join(hashes.map((hash) => hash.toString('hex')))})
      AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${now}::timestamptz)`;
    const result = await sql<(typeof candidates)[number]>`
      WITH k AS (${lookup}), counted AS (${countRequestsSql(valid, windows)})
      SELECT k.*,
        (SELECT count FROM counted c WHERE c.api_key_id = k.id AND c.window_kind = 'hour') AS hour_count,
        (SELECT count FROM counted c WHERE c.api_key_id = k.id AND c.window_kind = 'burst') AS burst_count
      FROM k`.execute(db);
    candidates = result.rows;
  } else {
    candidates = await lookup.execute();
  }
  let match: (typeof candidates)[number] | undefined;
  let matchedPepper = 0;
  for (const candidate of candidates) {
    const stored = Buffer.from(candidate.key_hash, 'hex');
    for (const [i, hash] of hashes.entries()) {
      if (stored.length === hash.length && timingSafeEqual(stored, hash)) {
        match = candidate;
        matchedPepper = i;
      }
    }
  }
  // An unknown prefix does the same work as a wrong secret, so timing does not tell them apart.
  if (candidates.length === 0) timingSafeEqual(expected, Buffer.alloc(expected.length));
  if (!match || !(PLANS as readonly string[]).includes(match.plan) || match.tenant_status === 'purged')
    return { rejected: 'unknown' };
  if (match.revoked_at) return { rejected: 'revoked' };
  if (match.expires_at && match.expires_at.getTime() <= now.getTime()) {
    const successor = await db
      .selectFrom('api_keys')
      .select('prefix')
      .where('rotated_from', '=', match.id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return { rejected: 'expired', expiredAt: match.expires_at, replacedBy: successor?.prefix ?? null };
  }
  const stale =
    !match.last_used_at || now.getTime() - match.last_used_at.getTime() >= LAST_USED_RESOLUTION_MS;
  if (matchedPepper > 0) {
    // Only the request that still sees the old hash writes the new one; the others find it done.
    await db
      .updateTable('api_keys')
      .set({ key_hash: expected.toString('hex'), pepper_id: ring.current.id, last_used_at: now })
      .where('id', '=', match.id)
      .where('key_hash', '=', match.key_hash)
      .execute();
  } else if (stale || match.pepper_id !== ring.current.id) {
    await db
      .updateTable('api_keys')
      .set({ pepper_id: ring.current.id, ...(stale ? { last_used_at: now } : {}) })
      .where('id', '=', match.id)
      .execute();
  }
  const limits = match.limits;
  const rate =
    windows && match.hour_count != null && match.burst_count != null
      ? { windows, counts: { hour: Number(match.hour_count), burst: Number(match.burst_count) } }
      : undefined;
  return {
    ...(rate ? { rate } : {}),
    tenantStatus: match.tenant_status,
    allowLists: { tenant: match.ip_allowlist ?? [], key: match.allowed_ips ?? [] },
    auth: {
      tenantId: match.tenant_id,
      plan: match.plan as Plan,
      role: match.role,
      apiKeyId: match.id,
      teamMemberId: match.team_member_id,
      scopes: Object.freeze([...match.scopes]),
      actor: `api_key:${match.id}`,
      ip: null,
      userAgent: null,
    },
    limitOverrides:
      limits && typeof limits === 'object' && !Array.isArray(limits)
        ? (limits as Record<string, unknown>)
        : null,
  };
}

/**
 * The caller context of a bearer token; null when it is malformed, unknown, expired or
 * revoked. `ip` and `userAgent` are null: the caller fills them in.
 */
export async function verifyApiKey(
  database: Database,
  token: string,
  now: Date = new Date(),
): Promise<AuthContext | null> {
  const resolved = await resolveApiKey(database, token, now);
  return 'auth' in resolved ? resolved.auth : null;
}

/**
 * A key created by a signed-in caller (the API or the dashboard): `keys:manage` is checked,
 * and `api_key.created` is written to the audit trail.
 */
export async function createKeyFor(
  database: Database,
  auth: AuthContext,
  input: Omit<CreateApiKeyInput, 'tenantId' | 'createdBy'>,
  now: Date,
): Promise<CreatedApiKey> {
  authorize(auth, 'keys:manage');
  const created = await createApiKey(
    database,
    { ...input, tenantId: auth.tenantId, createdBy: auth.actor },
    now,
  );
  await recordAudit(database, {
    ...auditCaller(auth),
    action: AUDIT_ACTIONS.keyCreated,
    targetId: created.id,
    dataType: `api_key:${created.role}`,
    success: true,
    occurredAt: now,
  });
  return created;
}

/** Revokes a key of the caller's tenant (`keys:manage`); the first revocation is audited. */
export async function revokeKeyFor(
  database: Database,
  auth: AuthContext,
  id: string,
  now: Date,
): Promise<ApiKeyInfo> {
  authorize(auth, 'keys:manage');
  const before = await getApiKey(database, auth.tenantId, id);
  const revoked = await revokeApiKey(database, auth.tenantId, id, now);
  if (!before.revokedAt) {
    await recordAudit(database, {
      ...auditCaller(auth),
      action: AUDIT_ACTIONS.keyRevoked,
      targetId: revoked.id,
      dataType: `api_key:${revoked.role}`,
      success: true,
      occurredAt: now,
    });
  }
  return revoked;
}
