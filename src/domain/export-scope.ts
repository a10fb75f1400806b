/**
 * Whose data an export covers: the whole tenant, one site, one customer (a data
 * subject) or the conversations of one team member. One shape from the API body
 * through the stored request to the engine's query, in the API's own words.
 */
export type ExportScope =
  | { readonly kind: 'tenant' }
  | { readonly kind: 'site'; readonly site_url: string }
  | { readonly kind: 'customer'; readonly customer_id: string }
  | { readonly kind: 'team_member'; readonly team_member_id: string };

export type ScopeKind = ExportScope['kind'];

export const SCOPE_KINDS = [
  'tenant',
  'site',
  'customer',
  'team_member',
] as const satisfies readonly ScopeKind[];

/** The scope of an export that asks for none. */
export const TENANT_SCOPE: ExportScope = { kind: 'tenant' };

/** A scope narrower than the whole tenant. */
export type NarrowScope = Exclude<ExportScope, { kind: 'tenant' }>;

/** The site URL, customer id or team member id a narrowing scope names. */
export function scopeTarget(scope: NarrowScope): string {
  switch (scope.kind) {
    case 'site':
      return scope.site_url;
    case 'customer':
      return scope.customer_id;
    case 'team_member':
      return scope.team_member_id;
  }
}

/** Whether two scopes narrow an export the same way (no scope is the whole tenant). */
export function sameScope(a: ExportScope | undefined, b: ExportScope | undefined): boolean {
  const left = a ?? TENANT_SCOPE;
  const right = b ?? TENANT_SCOPE;
  if (left.kind === 'tenant' || right.kind === 'tenant') return left.kind === right.kind;
  return left.kind === right.kind && scopeTarget(left) === scopeTarget(right);
}
