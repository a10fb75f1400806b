/**
 * Who is calling, as every route and job sees it. Built by the authentication plugin
 * (src/auth/plugin.ts) from an API key; every query a route makes is scoped to
 * `tenantId`.
 */
export const ROLES = ['admin', 'manager', 'analyst', 'agent'] as const;
export type Role = (typeof ROLES)[number];

export const PLANS = ['starter', 'pro', 'agency', 'enterprise'] as const;
export type Plan = (typeof PLANS)[number];

export interface AuthContext {
  readonly tenantId: string;
  readonly plan: Plan;
  readonly role: Role;
  /** The API key used, when the caller is an API key. */
  readonly apiKeyId: string | null;
  /** The team member the key belongs to, when it belongs to one (agents always do). */
  readonly teamMemberId: string | null;
  /** Optional narrowing of what the key may do, e.g. `exports:read`. Empty = everything the role allows. */
  readonly scopes: readonly string[];
  /** For audit entries: `api_key:<id>` or `team_member:<id>`. */
  readonly actor: string;
  readonly ip: string | null;
  readonly userAgent: string | null;
  /**
   * Set when an organisation key or member acts in a client tenant of its organisation
   * (docs/organisations.md): `tenantId` is then the client tenant, and this names the
   * organisation and who acts.
   */
  readonly organisation?: OrganisationActor | undefined;
}

/** An organisation key or member acting in a client tenant. */
export interface OrganisationActor {
  readonly id: string;
  readonly homeTenantId: string;
  readonly principal: 'key' | 'member';
  /** The API key's or the team member's id (both belong to the home tenant). */
  readonly principalId: string;
}
