import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AuthContext, Role } from '../src/auth/context.ts';
import {
  ACTIONS,
  type Action,
  authorize,
  authorizeExport,
  DATASET_POLICY,
  permissionMatrixMarkdown,
  POLICY_DATASETS,
  ROLE_ACTIONS,
} from '../src/auth/policy.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import type { ExportScope } from '../src/domain/export-scope.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import type { PiiLevel } from '../src/domain/pii-level.ts';

const AGENT_ID = '11111111-1111-4111-8111-111111111111';
const OTHER_AGENT = '22222222-2222-4222-8222-222222222222';

function ctx(role: Role, extra: Partial<AuthContext> = {}): AuthContext {
  return {
    tenantId: '00000000-0000-4000-8000-000000000001',
    plan: 'pro',
    role,
    apiKeyId: '00000000-0000-4000-8000-0000000000aa',
    teamMemberId: role === 'agent' ? AGENT_ID : null,
    scopes: [],
    actor: 'api_key:00000000-0000-4000-8000-0000000000aa',
    ip: null,
    userAgent: null,
    ...extra,
  };
}

function refusal(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('forbidden');
    return (err as FerryError).message;
  }
}

type ExportCase = [
  role: Role,
  dataset: string,
  pii: PiiLevel,
  scope: ExportScope | undefined,
  expected: { scope: ExportScope | undefined } | RegExp,
];

const own: ExportScope = { kind: 'team_member', team_member_id: AGENT_ID };
const site: ExportScope = { kind: 'site', site_url: 'https://shop.example' };
const customer: ExportScope = { kind: 'customer', customer_id: '33333333-3333-4333-8333-333333333333' };

const EXPORT_CASES: ExportCase[] = [
  // admin: everything, PII included, any scope, even datasets added later
  ['admin', 'conversations', 'full', undefined, { scope: undefined }],
  ['admin', 'billing', 'full', undefined, { scope: undefined }],
  ['admin', 'audit_log', 'full', undefined, { scope: undefined }],
  ['admin', 'customers', 'basic', customer, { scope: customer }],
  ['admin', 'a_future_dataset', 'full', undefined, { scope: undefined }],
  // manager: conversations, analytics, team, customers, revenue; not account data or the audit log export
  ['manager', 'conversations', 'full', undefined, { scope: undefined }],
  ['manager', 'revenue_attribution', 'enhanced', undefined, { scope: undefined }],
  ['manager', 'team_members', 'full', undefined, { scope: undefined }],
  ['manager', 'messages', 'basic', customer, { scope: customer }],
  ['manager', 'billing', 'enhanced', undefined, /manager role may not export dataset "billing"/],
  ['manager', 'account', 'enhanced', undefined, /may not export dataset "account"/],
  ['manager', 'integrations', 'enhanced', undefined, /may not export dataset "integrations"/],
  ['manager', 'audit_log', 'enhanced', undefined, /may not export dataset "audit_log"/],
  ['manager', 'a_future_dataset', 'enhanced', undefined, /may not export dataset "a_future_dataset"/],
  // analyst: anonymized conversation data and aggregates only; a PII request is refused, not downgraded
  ['analyst', 'conversations', 'enhanced', undefined, { scope: undefined }],
  ['analyst', 'messages', 'complete', site, { scope: site }],
  ['analyst', 'analytics', 'enhanced', undefined, { scope: undefined }],
  ['analyst', 'revenue_attribution', 'complete', undefined, { scope: undefined }],
  ['analyst', 'conversations', 'full', undefined, /may not export personal data: pii level "full"/],
  ['analyst', 'messages', 'basic', undefined, /may not export personal data: pii level "basic"/],
  ['analyst', 'analytics', 'full', undefined, /pii level "full" is refused/],
  ['analyst', 'customers', 'complete', undefined, /may not export dataset "customers"/],
  ['analyst', 'team_members', 'complete', undefined, /may not export dataset "team_members"/],
  ['analyst', 'billing', 'complete', undefined, /may not export dataset "billing"/],
  ['analyst', 'conversations', 'complete', customer, /may not narrow conversations to one customer/],
  // agent: only own conversations, narrowed whatever was asked
  ['agent', 'conversations', 'full', undefined, { scope: own }],
  ['agent', 'conversations', 'enhanced', { kind: 'tenant' }, { scope: own }],
  ['agent', 'messages', 'basic', own, { scope: own }],
  ['agent', 'team_members', 'full', undefined, { scope: own }],
  ['agent', 'messages', 'full', { kind: 'team_member', team_member_id: OTHER_AGENT }, /only export its own/],
  ['agent', 'conversations', 'full', customer, /only export its own conversations: scope customer/],
  ['agent', 'conversations', 'full', site, /scope site is refused/],
  ['agent', 'analytics', 'enhanced', undefined, /agent role may not export dataset "analytics"/],
  ['agent', 'customers', 'enhanced', undefined, /may not export dataset "customers"/],
  ['agent', 'revenue_attribution', 'enhanced', undefined, /may not export dataset "revenue_attribution"/],
  ['agent', 'audit_log', 'enhanced', undefined, /may not export dataset "audit_log"/],
  ['agent', 'billing', 'enhanced', undefined, /may not export dataset "billing"/],
];

describe('authorizeExport', () => {
  it.each(EXPORT_CASES)('%s exporting %s at %s (scope %j)', (role, dataset, pii, scope, expected) => {
    const auth = ctx(role);
    if (expected instanceof RegExp) {
      expect(refusal(() => authorizeExport(auth, { dataset, pii, scope }))).toMatch(expected);
    } else {
      expect(authorizeExport(auth, { dataset, pii, scope })).toEqual({ pii, scope: expected.scope });
    }
  });

  it('never changes the level: what is returned is what was asked, or nothing', () => {
    for (const role of ['admin', 'manager', 'analyst', 'agent'] as const) {
      for (const dataset of POLICY_DATASETS) {
        for (const pii of ['full', 'basic', 'enhanced', 'complete'] as const) {
          try {
            expect(authorizeExport(ctx(role), { dataset, pii }).pii).toBe(pii);
          } catch (err) {
            expect((err as FerryError).code).toBe('forbidden');
          }
        }
      }
    }
  });

  it('refuses an agent key without a team member', () => {
    expect(
      refusal(() =>
        authorizeExport(ctx('agent', { teamMemberId: null }), { dataset: 'conversations', pii: 'enhanced' }),
      ),
    ).toMatch(/must be bound to a team member/);
  });

  it('covers every dataset of the data map', () => {
    expect([...POLICY_DATASETS].sort()).toEqual(Object.keys(REFERENCE_DATAMAP.datasets).sort());
    for (const role of Object.keys(DATASET_POLICY) as Role[]) {
      for (const dataset of Object.keys(DATASET_POLICY[role])) expect(POLICY_DATASETS).toContain(dataset);
    }
  });
});

describe('authorize', () => {
  const rows = (['admin', 'manager', 'analyst', 'agent'] as const).flatMap((role) =>
    ACTIONS.map((action) => ({ role, action, allowed: ROLE_ACTIONS[role].includes(action) })),
  );

  it('gives admins every action and keeps key management, webhooks and account data to admins', () => {
    expect(ROLE_ACTIONS.admin).toEqual(ACTIONS);
    for (const role of ['manager', 'analyst', 'agent'] as const) {
      expect(ROLE_ACTIONS[role]).not.toContain('keys:manage');
      expect(ROLE_ACTIONS[role]).not.toContain('webhooks:manage');
    }
    expect(ROLE_ACTIONS.analyst).not.toContain('audit:read');
    expect(ROLE_ACTIONS.agent).not.toContain('audit:read');
    expect(ROLE_ACTIONS.agent).not.toContain('usage:read');
  });

  it.each(rows)('$role $action → allowed $allowed', ({ role, action, allowed }) => {
    const message = refusal(() => authorize(ctx(role), action));
    if (allowed) expect(message).toBeNull();
    else expect(message).toMatch(new RegExp(`the ${role} role may not .*\\(action ${action}\\)`));
  });

  it('a key with scopes may only do those actions, and never more than its role', () => {
    const scoped = ctx('manager', { scopes: ['exports:read', 'keys:manage'] });
    expect(refusal(() => authorize(scoped, 'exports:read'))).toBeNull();
    expect(refusal(() => authorize(scoped, 'exports:create'))).toMatch(
      /limited to the scopes exports:read, keys:manage/,
    );
    expect(refusal(() => authorize(scoped, 'keys:manage' as Action))).toMatch(/manager role may not/);
  });
});

describe('docs/auth.md', () => {
  it('shows the permission matrix of src/auth/policy.ts', () => {
    const doc = readFileSync(new URL('../docs/auth.md', import.meta.url), 'utf8');
    const start = doc.indexOf('<!-- permission-matrix:start -->');
    const end = doc.indexOf('<!-- permission-matrix:end -->');
    expect(start).toBeGreaterThan(-1);
    expect(doc.slice(start + '<!-- permission-matrix:start -->'.length, end).trim()).toBe(
      permissionMatrixMarkdown(),
    );
  });
});
