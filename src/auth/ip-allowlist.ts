import { BlockList, isIP } from 'node:net';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { auditCaller, recordAudit } from './audit.ts';
import type { AuthContext } from './context.ts';
import { authorize } from './policy.ts';
import { authDb } from './tables.ts';

/**
 * IP allow-lists (docs/auth.md#ip-allow-lists): per tenant and per API key, a list of CIDR
 * ranges (IPv4 and IPv6) from which a key, the dashboard or a bound download link may be
 * used. An empty list means no restriction. Matching is Node's `net.BlockList`; the client
 * address is the socket's, or the one Fastify's `trustProxy` (proxy-addr) takes from
 * `X-Forwarded-For` when the peer is a configured trusted proxy (FERRY_TRUSTED_PROXIES).
 */

/** Most entries in one list: a list is checked on every request. */
export const MAX_ALLOWLIST_ENTRIES = 100;

/** The audit action of a refused request. */
export const IP_REFUSED_ACTION = 'ip.refused';

const V4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/** An address as matched and recorded: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as its IPv4 form. */
export function normaliseAddress(address: string): string {
  const mapped = V4_MAPPED.exec(address);
  return mapped ? mapped[1]! : address.toLowerCase();
}

/**
 * One entry of a list in its stored form: an address with its prefix length (`10.0.0.0/8`,
 * `2001:db8::/32`); a bare address is a single host (`/32`, `/128`). Throws a message
 * naming the entry when it is not a CIDR range.
 */
function canonicalEntry(entry: string): string {
  const text = entry.trim();
  const slash = text.indexOf('/');
  const rawAddress = slash === -1 ? text : text.slice(0, slash);
  const rawPrefix = slash === -1 ? null : text.slice(slash + 1);
  let address = rawAddress;
  let family = isIP(address);
  const mapped = V4_MAPPED.exec(address);
  let offset = 0;
  if (mapped && family === 6) {
    address = mapped[1]!;
    family = 4;
    offset = 96;
  }
  if (family === 0) throw new Error(`"${entry}" is not an IPv4 or IPv6 address or CIDR range`);
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (rawPrefix !== null) {
    if (!/^\d{1,3}$/.test(rawPrefix))
      throw new Error(`"${entry}" has no valid prefix length after the "/" (0 to ${max + offset})`);
    prefix = Number(rawPrefix) - offset;
    if (prefix < 0 || prefix > max)
      throw new Error(`"${entry}" has a prefix length outside 0 to ${max + offset}`);
  }
  return `${family === 6 ? address.toLowerCase() : address}/${prefix}`;
}

/**
 * Validates a list as given to the API, the CLI or the dashboard and answers it in stored
 * form (trimmed, bare addresses as `/32` or `/128`, duplicates dropped). Every error is a
 * 400 `invalid_parameter` naming `field` and the entry.
 */
export function parseAllowList(field: string, entries: readonly unknown[]): string[] {
  if (entries.length > MAX_ALLOWLIST_ENTRIES)
    throw invalid(field, `at most ${MAX_ALLOWLIST_ENTRIES} entries (got ${entries.length})`);
  const out: string[] = [];
  for (const [i, entry] of entries.entries()) {
    if (typeof entry !== 'string' || entry.trim() === '')
      throw invalid(field, `entry ${i + 1} is empty; give an address or a CIDR range such as 203.0.113.0/24`);
    try {
      const canonical = canonicalEntry(entry);
      if (!out.includes(canonical)) out.push(canonical);
    } catch (err) {
      throw invalid(
        field,
        `${(err as Error).message}; give an address or a CIDR range such as 203.0.113.0/24`,
      );
    }
  }
  return out;
}

/** Splits a comma- or whitespace-separated list (the CLI's and the dashboard's form). */
export function splitAllowList(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Whether `address` lies in one of the list's ranges; an empty list allows every address. */
export function addressAllowed(list: readonly string[], address: string | null | undefined): boolean {
  if (list.length === 0) return true;
  if (!address) return false;
  const ip = normaliseAddress(address);
  const family = isIP(ip);
  if (family === 0) return false;
  const blocks = new BlockList();
  for (const entry of list) {
    const slash = entry.lastIndexOf('/');
    const net = entry.slice(0, slash);
    const netFamily = isIP(net);
    if (netFamily === 0) continue;
    blocks.addSubnet(net, Number(entry.slice(slash + 1)), netFamily === 4 ? 'ipv4' : 'ipv6');
  }
  return blocks.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

/** The allow-lists a request is checked against: the tenant's and, for an API key, the key's. */
export interface AllowLists {
  readonly tenant: readonly string[];
  readonly key?: readonly string[] | undefined;
}

/** Which list refuses `address`, or null when every list allows it. */
export function refusingList(lists: AllowLists, address: string | null | undefined): 'tenant' | 'key' | null {
  if (!addressAllowed(lists.tenant, address)) return 'tenant';
  if (lists.key && !addressAllowed(lists.key, address)) return 'key';
  return null;
}

/**
 * Records the refusal (`ip.refused`, with the address and what refused it, never a secret)
 * and answers the 403 `ip_not_allowed` error to throw.
 */
export async function refuseAddress(
  database: Database,
  entry: {
    tenantId: string;
    actor: string;
    ip: string | null;
    userAgent: string | null;
    list: 'tenant' | 'key';
    route: string;
    occurredAt?: Date;
  },
): Promise<FerryError> {
  const address = entry.ip ? normaliseAddress(entry.ip) : null;
  const which = entry.list === 'tenant' ? "the account's IP allow-list" : "this API key's IP allow-list";
  await recordAudit(database, {
    tenantId: entry.tenantId,
    actor: entry.actor,
    action: IP_REFUSED_ACTION,
    dataType: entry.route.slice(0, 100),
    ip: address,
    userAgent: entry.userAgent,
    success: false,
    error: `address ${address ?? 'unknown'} is not in ${which}`,
    ...(entry.occurredAt ? { occurredAt: entry.occurredAt } : {}),
  });
  return new FerryError(
    'ip_not_allowed',
    `requests from ${address ?? 'this address'} are not allowed: the address is not in ${which}`,
  );
}

// ---- the tenant's settings ---------------------------------------------------------------

/** A dashboard session ends after this long without a request, unless the tenant sets its own… */
export const SESSION_IDLE_MS = 8 * 3_600_000;
/** …and after this long in any case (also the session cookie's lifetime, so the most a tenant may set). */
export const SESSION_ABSOLUTE_MS = 7 * 24 * 3_600_000;

/** Dashboard session timeouts of a tenant, in minutes; null = Ferry's default. */
export interface SessionTimeouts {
  readonly idleMinutes: number | null;
  readonly absoluteMinutes: number | null;
}

export interface TenantAccess extends SessionTimeouts {
  readonly ipAllowlist: readonly string[];
}

export const SESSION_IDLE_RANGE = { min: 5, max: 10_080 } as const;
export const SESSION_ABSOLUTE_RANGE = { min: 5, max: 10_080 } as const;

/** The tenant's allow-list and session timeouts (defaults when it never set them). */
export async function tenantAccess(database: Database, tenantId: string): Promise<TenantAccess> {
  const row = await authDb(database)
    .selectFrom('tenant_access')
    .select(['ip_allowlist', 'session_idle_minutes', 'session_absolute_minutes'])
    .where('tenant_id', '=', tenantId)
    .executeTakeFirst();
  return {
    ipAllowlist: row?.ip_allowlist ?? [],
    idleMinutes: row?.session_idle_minutes ?? null,
    absoluteMinutes: row?.session_absolute_minutes ?? null,
  };
}

async function upsertAccess(
  database: Database,
  tenantId: string,
  set: {
    ip_allowlist?: string[];
    session_idle_minutes?: number | null;
    session_absolute_minutes?: number | null;
  },
  by: string,
  now: Date,
) {
  await authDb(database)
    .insertInto('tenant_access')
    .values({ tenant_id: tenantId, ...set, updated_at: now, updated_by: by })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ ...set, updated_at: now, updated_by: by }))
    .execute();
}

/**
 * Replaces the tenant's allow-list (`keys:manage`, so admins). A non-empty list must hold
 * the address of the request saving it, so an admin cannot lock themselves out; an operator
 * clears a list with `ferry tenants ip-allowlist <tenant> --clear`. Audited as
 * `account.ip_allowlist_changed`.
 */
export async function setTenantAllowList(
  database: Database,
  auth: AuthContext,
  entries: readonly unknown[],
  now: Date,
): Promise<readonly string[]> {
  authorize(auth, 'keys:manage');
  const list = parseAllowList('ip_allowlist', entries);
  if (list.length > 0 && !addressAllowed(list, auth.ip))
    throw invalid(
      'ip_allowlist',
      `the list does not contain your own address (${auth.ip ? normaliseAddress(auth.ip) : 'unknown'}); ` +
        'saving it would lock you out. Add your address or its range to the list',
    );
  await upsertAccess(database, auth.tenantId, { ip_allowlist: list }, auth.actor, now);
  await recordAudit(database, {
    ...auditCaller(auth),
    action: 'account.ip_allowlist_changed',
    dataType: list.length ? `${list.length} ranges` : 'cleared',
    success: true,
    occurredAt: now,
  });
  return list;
}

/** The operator's way back in: clears or sets a tenant's list without the self-address check (`ferry tenants`). */
export async function setTenantAllowListAsOperator(
  database: Database,
  tenantId: string,
  entries: readonly unknown[],
  now: Date,
): Promise<readonly string[]> {
  const list = parseAllowList('ip_allowlist', entries);
  await upsertAccess(database, tenantId, { ip_allowlist: list }, 'cli', now);
  await recordAudit(database, {
    tenantId,
    actor: 'cli',
    action: 'account.ip_allowlist_changed',
    dataType: list.length ? `${list.length} ranges` : 'cleared',
    success: true,
    occurredAt: now,
  });
  return list;
}

function minutes(field: string, value: unknown, range: { min: number; max: number }): number | null {
  if (value === null || value === undefined || value === '') return null;
  const n = typeof value === 'string' ? Number(value.trim()) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max)
    throw invalid(
      field,
      `must be a whole number of minutes from ${range.min} to ${range.max}, or empty for the default`,
    );
  return n;
}

/** Sets the tenant's dashboard session timeouts (`keys:manage`); null restores a default. */
export async function setSessionTimeouts(
  database: Database,
  auth: AuthContext,
  input: { idleMinutes: unknown; absoluteMinutes: unknown },
  now: Date,
): Promise<SessionTimeouts> {
  authorize(auth, 'keys:manage');
  const idle = minutes('session_idle_minutes', input.idleMinutes, SESSION_IDLE_RANGE);
  const absolute = minutes('session_absolute_minutes', input.absoluteMinutes, SESSION_ABSOLUTE_RANGE);
  await upsertAccess(
    database,
    auth.tenantId,
    { session_idle_minutes: idle, session_absolute_minutes: absolute },
    auth.actor,
    now,
  );
  await recordAudit(database, {
    ...auditCaller(auth),
    action: 'account.session_timeouts_changed',
    dataType: `idle ${idle ?? 'default'}, absolute ${absolute ?? 'default'}`,
    success: true,
    occurredAt: now,
  });
  return { idleMinutes: idle, absoluteMinutes: absolute };
}
