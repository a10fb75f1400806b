import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import type { AuthContext, Plan, Role } from '../auth/context.ts';
import { recordAudit } from '../auth/audit.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import {
  ACCOUNT_POLICY,
  CLIENT_POLICY,
  accountKey,
  clearFailures,
  clientKey,
  lockedFor,
  recordFailure,
} from '../auth/failure-throttle.ts';
import {
  hashPassword,
  NO_PASSWORD,
  needsRehash,
  passwordProblem,
  verifyPassword,
} from '../auth/passwords.ts';
import {
  addressAllowed,
  refuseAddress,
  SESSION_ABSOLUTE_MS,
  SESSION_IDLE_MS,
  tenantAccess,
} from '../auth/ip-allowlist.ts';
import { type MemberOrganisation, memberAuthIn, memberOrganisation } from '../auth/organisations.ts';
import type { Database } from '../db/database.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { type TokenPurpose, webDb } from './tables.ts';

/**
 * Team members in the dashboard: sign-in with the throttle and lockout, sessions,
 * one-time links (first run, password reset, invitation) and TOTP two-factor.
 * Sessions and links are random tokens of which only the SHA-256 is stored.
 */

export { SESSION_ABSOLUTE_MS, SESSION_IDLE_MS };
/** How long the password step waits for the TOTP code. */
const SECOND_FACTOR_MS = 10 * 60_000;
/** A session's `last_seen_at` is written at most this often. */
const TOUCH_MS = 60_000;

export const TOKEN_TTL_MS: Readonly<Record<TokenPurpose, number>> = {
  sign_in: 24 * 3_600_000,
  reset: 3_600_000,
  invite: 7 * 24 * 3_600_000,
};

export interface Member {
  readonly id: string;
  readonly name: string;
  readonly email: string;
  readonly role: Role;
}

export interface Workspace {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly plan: Plan;
  readonly timezone: string;
}

export interface SignedIn {
  readonly sessionId: string;
  readonly member: Member;
  readonly tenant: Workspace;
  readonly secondFactorPending: boolean;
  /** The tenant's IP allow-list, as read with the session (empty = no restriction). */
  readonly ipAllowlist?: readonly string[];
  /** An organisation member's organisation: its tenants and the member's role in each. */
  readonly organisation?: MemberOrganisation | undefined;
  /**
   * The member's own tenant while the session acts in another tenant of the organisation
   * (`tenant` is then that tenant, `member.role` the member's role there, and `ipAllowlist`
   * still the home tenant's).
   */
  readonly home?: Workspace | undefined;
  /** The allow-list of the tenant acted in, when it is not the home tenant. */
  readonly actingIpAllowlist?: readonly string[] | undefined;
}

/** The member's own tenant: where their sessions, sign-ins and second factor are recorded. */
export const memberTenantId = (signedIn: SignedIn): string => (signedIn.home ?? signedIn.tenant).id;

export interface ClientInfo {
  readonly ip: string | null;
  readonly userAgent: string | null;
}

const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');
const newToken = () => randomBytes(32).toString('base64url');

/** What every service takes: the caller as the API's services see it. */
export function authOf(signedIn: SignedIn, client: ClientInfo): AuthContext {
  // In another tenant of the organisation: the member's role there, as `org_member:<id>`.
  const acting =
    signedIn.home && signedIn.organisation
      ? memberAuthIn(signedIn.organisation, signedIn.member, signedIn.tenant.id, client)
      : null;
  if (acting) return acting;
  return Object.freeze({
    tenantId: signedIn.tenant.id,
    plan: signedIn.tenant.plan,
    role: signedIn.member.role,
    apiKeyId: null,
    teamMemberId: signedIn.member.id,
    scopes: [],
    actor: `team_member:${signedIn.member.id}`,
    ip: client.ip,
    userAgent: client.userAgent?.slice(0, 512) ?? null,
  });
}

function memberQuery(database: Database) {
  return webDb(database)
    .selectFrom('team_members as m')
    .innerJoin('tenants as t', 't.id', 'm.tenant_id')
    .select([
      'm.id',
      'm.name',
      'm.email',
      'm.role',
      'm.password_hash',
      't.id as tenant_id',
      't.slug',
      't.name as tenant_name',
      't.plan',
      't.timezone',
    ]);
}

type MemberRow = Awaited<ReturnType<ReturnType<typeof memberQuery>['executeTakeFirstOrThrow']>>;

const memberOf = (r: MemberRow): Member => ({ id: r.id, name: r.name, email: r.email, role: r.role as Role });
const workspaceOf = (r: MemberRow): Workspace => ({
  id: r.tenant_id,
  slug: r.slug,
  name: r.tenant_name,
  plan: r.plan as Plan,
  timezone: r.timezone,
});

export type SignInResult =
  | { readonly kind: 'signed_in'; readonly token: string; readonly signedIn: SignedIn }
  | { readonly kind: 'locked'; readonly seconds: number }
  | { readonly kind: 'failed' }
  | { readonly kind: 'choose_workspace' };

/**
 * Email and password. The answer is the same whether the email is unknown or the password
 * wrong (no enumeration). Five failures for one email in 15 minutes lock it for 15 minutes,
 * and one client address is locked after 30 failures; both are counted in `auth_failures`.
 */
export async function signIn(
  database: Database,
  input: { email: string; password: string; workspace?: string | undefined },
  client: ClientInfo,
  now: Date,
): Promise<SignInResult> {
  const email = input.email.trim().toLowerCase();
  const locked = Math.max(
    await lockedFor(database, accountKey(email), now),
    await lockedFor(database, clientKey(client.ip), now),
  );
  if (locked > 0) return { kind: 'locked', seconds: locked };
  let query = memberQuery(database).where((eb) => eb(eb.fn('lower', ['m.email']), '=', email));
  const workspace = input.workspace?.trim().toLowerCase();
  if (workspace) query = query.where('t.slug', '=', workspace);
  const candidates = await query.orderBy('t.slug').limit(20).execute();
  const matching: MemberRow[] = [];
  for (const row of candidates)
    if (await verifyPassword(input.password, row.password_hash)) matching.push(row);
  if (candidates.length === 0) await verifyPassword(input.password, DUMMY_HASH); // same time for unknown emails
  if (matching.length === 0) {
    const seconds = Math.max(
      await recordFailure(database, accountKey(email), now, ACCOUNT_POLICY),
      await recordFailure(database, clientKey(client.ip), now, CLIENT_POLICY),
    );
    for (const row of candidates)
      await recordAudit(database, {
        tenantId: row.tenant_id,
        actor: `team_member:${row.id}`,
        action: 'session.sign_in_failed',
        ip: client.ip,
        userAgent: client.userAgent,
        success: false,
        error: seconds > 0 ? 'wrong password; account locked' : 'wrong password',
        occurredAt: now,
      });
    return seconds > 0 ? { kind: 'locked', seconds } : { kind: 'failed' };
  }
  if (matching.length > 1) return { kind: 'choose_workspace' };
  const row = matching[0]!;
  await clearFailures(database, accountKey(email));
  if (needsRehash(row.password_hash)) {
    await webDb(database)
      .updateTable('team_members')
      .set({ password_hash: await hashPassword(input.password) })
      .where('id', '=', row.id)
      .execute();
  }
  const pending = await hasSecondFactor(database, row.id);
  return { kind: 'signed_in', ...(await startSession(database, row, client, now, pending)) };
}

/** An argon2id hash of a random password, verified against for unknown emails. */
const DUMMY_HASH = await hashPassword(randomBytes(16).toString('hex'));

/** A tenant's session timeouts in milliseconds: its own settings, or Ferry's defaults. */
async function sessionLimits(database: Database, tenantId: string) {
  const access = await tenantAccess(database, tenantId);
  return limitsOf(access.idleMinutes, access.absoluteMinutes);
}

function limitsOf(idleMinutes: number | null, absoluteMinutes: number | null) {
  return {
    idleMs: idleMinutes === null ? SESSION_IDLE_MS : idleMinutes * 60_000,
    absoluteMs: absoluteMinutes === null ? SESSION_ABSOLUTE_MS : absoluteMinutes * 60_000,
  };
}

async function startSession(
  database: Database,
  row: MemberRow,
  client: ClientInfo,
  now: Date,
  secondFactorPending: boolean,
): Promise<{ token: string; signedIn: SignedIn }> {
  // From outside the tenant's IP allow-list no session starts (every page would refuse it anyway).
  const access = await tenantAccess(database, row.tenant_id);
  if (!addressAllowed(access.ipAllowlist, client.ip))
    throw await refuseAddress(database, {
      tenantId: row.tenant_id,
      actor: `team_member:${row.id}`,
      ip: client.ip,
      userAgent: client.userAgent,
      list: 'tenant',
      route: 'sign-in',
      occurredAt: now,
    });
  const token = newToken();
  const id = randomUUID();
  const limits = limitsOf(access.idleMinutes, access.absoluteMinutes);
  const absolute = new Date(now.getTime() + (secondFactorPending ? SECOND_FACTOR_MS : limits.absoluteMs));
  await webDb(database)
    .insertInto('web_sessions')
    .values({
      id,
      token_hash: sha256(token),
      tenant_id: row.tenant_id,
      team_member_id: row.id,
      second_factor_pending: secondFactorPending,
      ip: client.ip,
      user_agent: client.userAgent?.slice(0, 512) ?? null,
      created_at: now,
      last_seen_at: now,
      idle_expires_at: new Date(Math.min(absolute.getTime(), now.getTime() + limits.idleMs)),
      expires_at: absolute,
    })
    .execute();
  if (!secondFactorPending) await signedInAudit(database, row, client, now);
  const signedIn = { sessionId: id, member: memberOf(row), tenant: workspaceOf(row), secondFactorPending };
  return { token, signedIn };
}

async function signedInAudit(database: Database, row: MemberRow, client: ClientInfo, now: Date) {
  await webDb(database)
    .updateTable('team_members')
    .set({ last_login_at: now })
    .where('id', '=', row.id)
    .execute();
  await recordAudit(database, {
    tenantId: row.tenant_id,
    actor: `team_member:${row.id}`,
    action: 'session.signed_in',
    ip: client.ip,
    userAgent: client.userAgent,
    success: true,
    occurredAt: now,
  });
}

/** The session a cookie names, if it is open; touches it (at most once a minute). */
export async function resolveSession(database: Database, token: string, now: Date): Promise<SignedIn | null> {
  if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
  const row = await webDb(database)
    .selectFrom('web_sessions as s')
    .innerJoin('team_members as m', 'm.id', 's.team_member_id')
    .innerJoin('tenants as t', 't.id', 's.tenant_id')
    .leftJoin('tenant_access as a', 'a.tenant_id', 's.tenant_id')
    .leftJoin('organisation_members as om', 'om.team_member_id', 'm.id')
    .select([
      's.id as session_id',
      's.second_factor_pending',
      's.created_at',
      's.last_seen_at',
      's.idle_expires_at',
      's.expires_at',
      's.ended_at',
      'm.id',
      'm.name',
      'm.email',
      'm.role',
      'm.password_hash',
      't.id as tenant_id',
      't.slug',
      't.name as tenant_name',
      't.plan',
      't.timezone',
      'a.ip_allowlist',
      'a.session_idle_minutes',
      'a.session_absolute_minutes',
      's.acting_tenant_id',
      'om.organisation_id',
    ])
    .where('s.token_hash', '=', sha256(token))
    .executeTakeFirst();
  if (!row || row.ended_at) return null;
  const at = now.getTime();
  // The tenant's current timeouts apply to sessions started before they were shortened too.
  const limits = limitsOf(row.session_idle_minutes ?? null, row.session_absolute_minutes ?? null);
  const lastSeen = new Date(row.last_seen_at).getTime();
  const expires = row.second_factor_pending
    ? new Date(row.expires_at).getTime()
    : Math.min(new Date(row.expires_at).getTime(), new Date(row.created_at).getTime() + limits.absoluteMs);
  const idleExpires = row.second_factor_pending
    ? new Date(row.idle_expires_at).getTime()
    : Math.min(new Date(row.idle_expires_at).getTime(), lastSeen + limits.idleMs);
  if (expires <= at || idleExpires <= at) return null;
  if (at - lastSeen > TOUCH_MS && !row.second_factor_pending) {
    await webDb(database)
      .updateTable('web_sessions')
      .set({ last_seen_at: now, idle_expires_at: new Date(Math.min(expires, at + limits.idleMs)) })
      .where('id', '=', row.session_id)
      .execute();
  }
  const signedIn: SignedIn = {
    sessionId: row.session_id,
    member: memberOf(row),
    tenant: workspaceOf(row),
    secondFactorPending: row.second_factor_pending,
    ipAllowlist: row.ip_allowlist ?? [],
  };
  if (!row.organisation_id || row.second_factor_pending) return signedIn;
  return actingIn(database, signedIn, row.acting_tenant_id);
}

/**
 * An organisation member's session with its organisation, acting in the tenant it switched to.
 * A tenant that left the organisation, or where the member lost their role, takes the session
 * back to the member's own tenant at once.
 */
async function actingIn(
  database: Database,
  signedIn: SignedIn,
  actingTenantId: string | null,
): Promise<SignedIn> {
  const organisation = await memberOrganisation(database, signedIn.member.id);
  if (!organisation) return signedIn;
  const home = { ...signedIn, organisation };
  if (!actingTenantId || actingTenantId === signedIn.tenant.id) return home;
  const tenant = organisation.tenants.find((t) => t.id === actingTenantId && !t.home);
  if (!tenant?.role) {
    await webDb(database)
      .updateTable('web_sessions')
      .set({ acting_tenant_id: null })
      .where('id', '=', signedIn.sessionId)
      .execute();
    return home;
  }
  return {
    ...home,
    member: { ...signedIn.member, role: tenant.role },
    tenant: {
      id: tenant.id,
      slug: tenant.slug,
      name: tenant.name,
      plan: tenant.plan,
      timezone: tenant.timezone,
    },
    home: signedIn.tenant,
    actingIpAllowlist: tenant.ipAllowlist,
  };
}

export async function endSession(database: Database, signedIn: SignedIn, client: ClientInfo, now: Date) {
  await webDb(database)
    .updateTable('web_sessions')
    .set({ ended_at: now })
    .where('id', '=', signedIn.sessionId)
    .where('ended_at', 'is', null)
    .execute();
  await recordAudit(database, {
    tenantId: memberTenantId(signedIn),
    actor: `team_member:${signedIn.member.id}`,
    action: 'session.signed_out',
    ip: client.ip,
    userAgent: client.userAgent,
    success: true,
    occurredAt: now,
  });
}

export interface SessionView {
  readonly id: string;
  readonly ip: string | null;
  readonly userAgent: string | null;
  readonly createdAt: Date;
  readonly lastSeenAt: Date;
  readonly current: boolean;
}

/** A member's open sessions, newest first. */
export async function listSessions(
  database: Database,
  signedIn: SignedIn,
  now: Date,
): Promise<SessionView[]> {
  const rows = await webDb(database)
    .selectFrom('web_sessions')
    .select(['id', 'ip', 'user_agent', 'created_at', 'last_seen_at'])
    .where('team_member_id', '=', signedIn.member.id)
    .where('ended_at', 'is', null)
    .where('expires_at', '>', now)
    .where('idle_expires_at', '>', now)
    .where('second_factor_pending', '=', false)
    .orderBy('created_at', 'desc')
    .limit(50)
    .execute();
  return rows.map((r) => ({
    id: r.id,
    ip: r.ip,
    userAgent: r.user_agent,
    createdAt: new Date(r.created_at),
    lastSeenAt: new Date(r.last_seen_at),
    current: r.id === signedIn.sessionId,
  }));
}

/** Ends one of the member's own sessions (another device). */
export async function endOwnSession(database: Database, signedIn: SignedIn, id: string, now: Date) {
  await webDb(database)
    .updateTable('web_sessions')
    .set({ ended_at: now })
    .where('id', '=', id)
    .where('team_member_id', '=', signedIn.member.id)
    .where('ended_at', 'is', null)
    .execute();
}

// ---- one-time links ----------------------------------------------------------------

/** A one-time link's token for a member (the first-run link, `ferry users invite|reset`). */
export async function issueToken(
  database: Database,
  member: { tenantId: string; memberId: string },
  purpose: TokenPurpose,
  now: Date,
): Promise<string> {
  const token = newToken();
  await webDb(database)
    .insertInto('sign_in_tokens')
    .values({
      id: randomUUID(),
      token_hash: sha256(token),
      purpose,
      tenant_id: member.tenantId,
      team_member_id: member.memberId,
      created_at: now,
      expires_at: new Date(now.getTime() + TOKEN_TTL_MS[purpose]),
      sent_at: null,
      used_at: null,
    })
    .execute();
  return token;
}

/** The link for a token, under the server's public address. */
export function tokenLink(base: string, purpose: TokenPurpose, token: string): string {
  const path = purpose === 'sign_in' ? 'signin/link' : purpose === 'reset' ? 'signin/reset' : 'signin/invite';
  return `${base.replace(/\/$/, '')}/${path}/${token}`;
}

/** The member a still-valid token names, without using it up (to show the form it leads to). */
export async function peekToken(
  database: Database,
  token: string,
  purposes: readonly TokenPurpose[],
  now: Date,
): Promise<{ email: string; name: string } | null> {
  if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
  const row = await webDb(database)
    .selectFrom('sign_in_tokens as k')
    .innerJoin('team_members as m', 'm.id', 'k.team_member_id')
    .select(['m.email', 'm.name'])
    .where('k.token_hash', '=', sha256(token))
    .where('k.purpose', 'in', purposes)
    .where('k.used_at', 'is', null)
    .where('k.expires_at', '>', now)
    .executeTakeFirst();
  return row ?? null;
}

/** Uses a token up (once, atomically) and answers its member, or null when it is not valid. */
async function consumeToken(
  database: Database,
  token: string,
  purposes: readonly TokenPurpose[],
  now: Date,
): Promise<MemberRow | null> {
  if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
  const used = await webDb(database)
    .updateTable('sign_in_tokens')
    .set({ used_at: now })
    .where('token_hash', '=', sha256(token))
    .where('purpose', 'in', purposes)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .returning('team_member_id')
    .executeTakeFirst();
  if (!used) return null;
  return (await memberQuery(database).where('m.id', '=', used.team_member_id).executeTakeFirst()) ?? null;
}

/** Signs in with a one-time sign-in link. A member with two-factor still gives the code. */
export async function signInWithLink(database: Database, token: string, client: ClientInfo, now: Date) {
  const row = await consumeToken(database, token, ['sign_in'], now);
  if (!row) return null;
  return startSession(database, row, client, now, await hasSecondFactor(database, row.id));
}

/**
 * Sets a new password from a reset or invitation link: every other session of the member
 * ends, failures are forgotten, and a new session starts.
 */
export async function setPasswordWithLink(
  database: Database,
  token: string,
  password: string,
  client: ClientInfo,
  now: Date,
) {
  const peek = await peekToken(database, token, ['reset', 'invite'], now);
  if (!peek) return null;
  const problem = passwordProblem(password, peek.email);
  if (problem) throw invalid('password', problem);
  const row = await consumeToken(database, token, ['reset', 'invite'], now);
  if (!row) return null;
  await storePassword(database, row.id, password, now);
  await clearFailures(database, accountKey(row.email));
  await recordAudit(database, {
    tenantId: row.tenant_id,
    actor: `team_member:${row.id}`,
    action: 'session.password_set',
    ip: client.ip,
    userAgent: client.userAgent,
    success: true,
    occurredAt: now,
  });
  return startSession(database, row, client, now, await hasSecondFactor(database, row.id));
}

/** Changes a signed-in member's password (the current one first); other sessions end. */
export async function changePassword(
  database: Database,
  signedIn: SignedIn,
  input: { current: string; password: string },
  now: Date,
): Promise<void> {
  const row = await memberQuery(database).where('m.id', '=', signedIn.member.id).executeTakeFirstOrThrow();
  if (!(await verifyPassword(input.current, row.password_hash)))
    throw invalid('current', 'the current password is not right');
  const problem = passwordProblem(input.password, row.email);
  if (problem) throw invalid('password', problem);
  await storePassword(database, row.id, input.password, now, signedIn.sessionId);
}

async function storePassword(
  database: Database,
  memberId: string,
  password: string,
  now: Date,
  keep?: string,
) {
  await webDb(database)
    .updateTable('team_members')
    .set({ password_hash: await hashPassword(password) })
    .where('id', '=', memberId)
    .execute();
  let end = webDb(database)
    .updateTable('web_sessions')
    .set({ ended_at: now })
    .where('team_member_id', '=', memberId)
    .where('ended_at', 'is', null);
  if (keep) end = end.where('id', '!=', keep);
  await end.execute();
}

/**
 * "Forgot password": a reset link for each account with this email, sent by the
 * `web.send-link` job (the token is made there, so no secret waits in the queue). The
 * caller answers the same whatever happened.
 */
export async function requestPasswordReset(
  database: Database,
  email: string,
  now: Date,
  send: (tokenId: string) => Promise<void>,
): Promise<void> {
  const rows = await memberQuery(database)
    .where((eb) => eb(eb.fn('lower', ['m.email']), '=', email.trim().toLowerCase()))
    .limit(20)
    .execute();
  for (const row of rows) {
    // One pending link per member at a time: a second request within the hour sends nothing.
    const recent = await webDb(database)
      .selectFrom('sign_in_tokens')
      .select('id')
      .where('team_member_id', '=', row.id)
      .where('purpose', '=', 'reset')
      .where('used_at', 'is', null)
      .where('created_at', '>', new Date(now.getTime() - 5 * 60_000))
      .executeTakeFirst();
    if (recent) continue;
    const id = randomUUID();
    await webDb(database)
      .insertInto('sign_in_tokens')
      .values({
        id,
        token_hash: null,
        purpose: 'reset',
        tenant_id: row.tenant_id,
        team_member_id: row.id,
        created_at: now,
        expires_at: new Date(now.getTime() + TOKEN_TTL_MS.reset),
        sent_at: null,
        used_at: null,
      })
      .execute();
    await send(id);
  }
}

/**
 * For the `web.send-link` job: makes the token of a pending link and answers what the
 * email needs; null when the link was used, expired or already sent.
 */
export async function prepareEmailedLink(database: Database, id: string, now: Date) {
  const row = await webDb(database)
    .selectFrom('sign_in_tokens as k')
    .innerJoin('team_members as m', 'm.id', 'k.team_member_id')
    .innerJoin('tenants as t', 't.id', 'k.tenant_id')
    .select([
      'k.purpose',
      'k.used_at',
      'k.sent_at',
      'k.expires_at',
      'm.email',
      'm.name',
      't.name as tenant_name',
    ])
    .where('k.id', '=', id)
    .executeTakeFirst();
  if (!row || row.used_at || row.sent_at || new Date(row.expires_at) <= now) return null;
  const token = newToken();
  await webDb(database)
    .updateTable('sign_in_tokens')
    .set({ token_hash: sha256(token) })
    .where('id', '=', id)
    .execute();
  return { token, purpose: row.purpose, email: row.email, name: row.name, tenantName: row.tenant_name };
}

export async function markLinkSent(database: Database, id: string, now: Date): Promise<void> {
  await webDb(database).updateTable('sign_in_tokens').set({ sent_at: now }).where('id', '=', id).execute();
}

// ---- TOTP two-factor ---------------------------------------------------------------

const TOTP_OPTIONS = { algorithm: 'SHA1', digits: 6, period: 30 } as const;

async function hasSecondFactor(database: Database, memberId: string): Promise<boolean> {
  const row = await webDb(database)
    .selectFrom('team_member_factors')
    .select('enabled_at')
    .where('team_member_id', '=', memberId)
    .executeTakeFirst();
  return Boolean(row?.enabled_at);
}

export async function secondFactorEnabled(database: Database, signedIn: SignedIn): Promise<boolean> {
  return hasSecondFactor(database, signedIn.member.id);
}

/** Starts enrolment: a new secret (not yet in force) and its `otpauth://` URI for an authenticator app. */
export async function startTotp(database: Database, signedIn: SignedIn, secrets: SecretBox) {
  if (await hasSecondFactor(database, signedIn.member.id))
    throw new FerryError('conflict', 'two-factor sign-in is already on; turn it off first');
  const secret = new Secret({ size: 20 });
  const sealed = await secrets.seal(secret.base32);
  await webDb(database)
    .insertInto('team_member_factors')
    .values({
      team_member_id: signedIn.member.id,
      tenant_id: memberTenantId(signedIn),
      totp_secret: sealed,
      enabled_at: null,
      last_step: null,
    })
    .onConflict((oc) => oc.column('team_member_id').doUpdateSet({ totp_secret: sealed }))
    .execute();
  const totp = new TOTP({ issuer: 'Ferry', label: signedIn.member.email, secret, ...TOTP_OPTIONS });
  return { secret: secret.base32, uri: totp.toString() };
}

/** Checks a code against the member's secret; a code is accepted once (its time step is kept). */
async function checkTotp(database: Database, memberId: string, code: string, secrets: SecretBox, now: Date) {
  const row = await webDb(database)
    .selectFrom('team_member_factors')
    .select(['totp_secret', 'last_step', 'enabled_at'])
    .where('team_member_id', '=', memberId)
    .executeTakeFirst();
  if (!row || !/^\d{6}$/.test(code.trim())) return { ok: false, row } as const;
  const totp = new TOTP({
    secret: Secret.fromBase32(await secrets.open(row.totp_secret)),
    ...TOTP_OPTIONS,
  });
  const delta = totp.validate({ token: code.trim(), timestamp: now.getTime(), window: 1 });
  if (delta === null) return { ok: false, row } as const;
  const step = Math.floor(now.getTime() / 30_000) + delta;
  if (row.last_step !== null && step <= Number(row.last_step)) return { ok: false, row } as const;
  await webDb(database)
    .updateTable('team_member_factors')
    .set({ last_step: step })
    .where('team_member_id', '=', memberId)
    .execute();
  return { ok: true, row } as const;
}

/** Confirms enrolment with a first code: from now on sign-in asks for one. */
export async function confirmTotp(
  database: Database,
  signedIn: SignedIn,
  code: string,
  secrets: SecretBox,
  now: Date,
) {
  const { ok } = await checkTotp(database, signedIn.member.id, code, secrets, now);
  if (!ok)
    throw invalid('code', 'the code is not right; enter the 6 digits your authenticator app shows now');
  await webDb(database)
    .updateTable('team_member_factors')
    .set({ enabled_at: now })
    .where('team_member_id', '=', signedIn.member.id)
    .execute();
  await recordAudit(database, {
    tenantId: memberTenantId(signedIn),
    actor: `team_member:${signedIn.member.id}`,
    action: 'session.two_factor_enabled',
    success: true,
    occurredAt: now,
  });
}

/** Turns two-factor off (a current code is required). */
export async function disableTotp(
  database: Database,
  signedIn: SignedIn,
  code: string,
  secrets: SecretBox,
  now: Date,
) {
  const { ok } = await checkTotp(database, signedIn.member.id, code, secrets, now);
  if (!ok)
    throw invalid('code', 'the code is not right; enter the 6 digits your authenticator app shows now');
  await webDb(database)
    .deleteFrom('team_member_factors')
    .where('team_member_id', '=', signedIn.member.id)
    .execute();
  await recordAudit(database, {
    tenantId: memberTenantId(signedIn),
    actor: `team_member:${signedIn.member.id}`,
    action: 'session.two_factor_disabled',
    success: true,
    occurredAt: now,
  });
}

/**
 * The second step of a sign-in: a right code completes the pending session; wrong codes
 * count against the account like wrong passwords.
 */
export async function completeSecondFactor(
  database: Database,
  signedIn: SignedIn,
  code: string,
  secrets: SecretBox,
  client: ClientInfo,
  now: Date,
): Promise<'ok' | 'failed' | { locked: number }> {
  const key = accountKey(signedIn.member.email);
  const locked = await lockedFor(database, key, now);
  if (locked > 0) return { locked };
  const { ok } = await checkTotp(database, signedIn.member.id, code, secrets, now);
  if (!ok) {
    const seconds = await recordFailure(database, key, now, ACCOUNT_POLICY);
    if (seconds > 0) {
      await webDb(database)
        .updateTable('web_sessions')
        .set({ ended_at: now })
        .where('id', '=', signedIn.sessionId)
        .execute();
      return { locked: seconds };
    }
    return 'failed';
  }
  await clearFailures(database, key);
  const limits = await sessionLimits(database, signedIn.tenant.id);
  await webDb(database)
    .updateTable('web_sessions')
    .set({
      second_factor_pending: false,
      last_seen_at: now,
      idle_expires_at: new Date(now.getTime() + Math.min(limits.idleMs, limits.absoluteMs)),
      expires_at: new Date(now.getTime() + limits.absoluteMs),
    })
    .where('id', '=', signedIn.sessionId)
    .execute();
  const row = await memberQuery(database).where('m.id', '=', signedIn.member.id).executeTakeFirstOrThrow();
  await signedInAudit(database, row, client, now);
  return 'ok';
}

// ---- operators: invitations and resets ---------------------------------------------

/** `ferry users invite`: a new member without a password, and the link that sets one. */
export async function inviteMember(
  database: Database,
  input: { tenantId: string; email: string; name: string; role: Role },
  now: Date,
): Promise<{ memberId: string; token: string }> {
  const email = input.email.trim().toLowerCase();
  if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email))
    throw invalid('email', `"${input.email}" is not an email address`);
  const existing = await webDb(database)
    .selectFrom('team_members')
    .select('id')
    .where('tenant_id', '=', input.tenantId)
    .where((eb) => eb(eb.fn('lower', ['email']), '=', email))
    .executeTakeFirst();
  if (existing)
    throw new FerryError(
      'conflict',
      `${email} is already a member of this tenant; use \`ferry users reset\``,
    );
  const memberId = randomUUID();
  await webDb(database)
    .insertInto('team_members')
    .values({
      id: memberId,
      tenant_id: input.tenantId,
      name: input.name,
      email,
      role: input.role,
      password_hash: NO_PASSWORD,
      last_login_at: null,
    })
    .execute();
  const token = await issueToken(database, { tenantId: input.tenantId, memberId }, 'invite', now);
  return { memberId, token };
}

/** `ferry users reset`: a reset link for one member, found by email within a tenant. */
export async function resetLinkFor(database: Database, tenantId: string, email: string, now: Date) {
  const row = await memberQuery(database)
    .where('m.tenant_id', '=', tenantId)
    .where((eb) => eb(eb.fn('lower', ['m.email']), '=', email.trim().toLowerCase()))
    .executeTakeFirst();
  if (!row) throw new FerryError('not_found', `no team member with email ${email} in this tenant`);
  return {
    member: memberOf(row),
    token: await issueToken(database, { tenantId, memberId: row.id }, 'reset', now),
  };
}

/** The demo tenant's first admin, for the first-run sign-in link. */
export async function firstAdmin(database: Database, tenantId: string) {
  const row = await memberQuery(database)
    .where('m.tenant_id', '=', tenantId)
    .where('m.role', '=', 'admin')
    .orderBy('m.created_at')
    .orderBy('m.id')
    .executeTakeFirst();
  return row ? memberOf(row) : null;
}
