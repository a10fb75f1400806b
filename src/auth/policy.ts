import { type ExportScope, SCOPE_KINDS, type ScopeKind } from '../domain/export-scope.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { PII_LEVELS, type PiiLevel } from '../domain/pii-level.ts';
import type { AuthContext, Role } from './context.ts';

/**
 * The permission matrix, as data: which actions each role may take, and which datasets
 * it may export at which anonymization levels and scopes. docs/auth.md shows the same
 * matrix as tables (a test keeps the two in step). Anything not listed is refused.
 */

export const ACTIONS = [
  'exports:create',
  'exports:read',
  'exports:delete',
  'exports:download',
  'keys:manage',
  'audit:read',
  'usage:read',
  'schedules:manage',
  'schedules:read',
  'webhooks:manage',
  'stream:read',
  'dsar:manage',
  'consent:manage',
  'retention:manage',
  'holds:manage',
  'processors:manage',
  'compliance:read',
  'account:close',
  'backups:manage',
  'imports:manage',
  'export_configs:read',
  'export_configs:write',
  'data:delete',
] as const;
export type Action = (typeof ACTIONS)[number];

export const ROLE_ACTIONS: Readonly<Record<Role, readonly Action[]>> = {
  admin: ACTIONS,
  manager: [
    'exports:create',
    'exports:read',
    'exports:delete',
    'exports:download',
    'audit:read',
    'usage:read',
    'schedules:manage',
    'schedules:read',
    'stream:read',
    'dsar:manage',
    'consent:manage',
    'compliance:read',
    'export_configs:read',
    'export_configs:write',
    'data:delete',
  ],
  analyst: [
    'exports:create',
    'exports:read',
    'exports:download',
    'schedules:manage',
    'schedules:read',
    'stream:read',
    'export_configs:read',
  ],
  agent: ['exports:create', 'exports:read', 'exports:download', 'stream:read', 'export_configs:read'],
};

/** Every dataset the policy knows, Ferry's own `audit_log` included. */
export const POLICY_DATASETS = [
  'conversations',
  'messages',
  'analytics',
  'revenue_attribution',
  'rollups',
  'site_summary',
  'topic_summary',
  'knowledge_base',
  'account',
  'team_members',
  'customers',
  'consent_records',
  'activity_logs',
  'billing',
  'sites',
  'settings',
  'integrations',
  'audit_log',
  'audit_trail',
  'daily_totals',
  'channel_performance',
  'marketing_campaigns',
] as const;
export type PolicyDataset = (typeof POLICY_DATASETS)[number];

const ALL_SCOPES: readonly ScopeKind[] = SCOPE_KINDS;

/** Levels without personal data: names, emails and phones removed, free text scrubbed. */
export const ANONYMIZED_LEVELS: readonly PiiLevel[] = ['enhanced', 'complete'];

export interface DatasetRule {
  /** The anonymization levels the role may ask for. */
  readonly pii: readonly PiiLevel[];
  /**
   * The scopes the role may ask for, or `own` : the export is always narrowed to the
   * key's own team member (agents), whatever scope was asked for.
   */
  readonly scopes: readonly ScopeKind[] | 'own';
}

const FULL: DatasetRule = { pii: PII_LEVELS, scopes: ALL_SCOPES };
const ANONYMIZED: DatasetRule = { pii: ANONYMIZED_LEVELS, scopes: ['tenant', 'site'] };
const OWN: DatasetRule = { pii: PII_LEVELS, scopes: 'own' };

/** role × dataset → rule; a dataset missing from a role's entry is refused. */
export const DATASET_POLICY: Readonly<Record<Role, Readonly<Partial<Record<PolicyDataset, DatasetRule>>>>> = {
  admin: Object.fromEntries(POLICY_DATASETS.map((d) => [d, FULL])),
  manager: {
    conversations: FULL,
    messages: FULL,
    analytics: FULL,
    revenue_attribution: FULL,
    rollups: FULL,
    site_summary: FULL,
    topic_summary: FULL,
    daily_totals: FULL,
    channel_performance: FULL,
    marketing_campaigns: FULL,
    knowledge_base: FULL,
    team_members: FULL,
    customers: FULL,
    consent_records: FULL,
    sites: FULL,
  },
  analyst: {
    conversations: ANONYMIZED,
    messages: ANONYMIZED,
    analytics: ANONYMIZED,
    revenue_attribution: ANONYMIZED,
    rollups: ANONYMIZED,
    site_summary: ANONYMIZED,
    topic_summary: ANONYMIZED,
    daily_totals: ANONYMIZED,
    channel_performance: ANONYMIZED,
    marketing_campaigns: ANONYMIZED,
  },
  agent: {
    conversations: OWN,
    messages: OWN,
    team_members: OWN,
  },
};

/** Audit actions a manager may read (exports and downloads); admins read every action. */
export const MANAGER_AUDIT_ACTION_PREFIX = 'export.';

function forbidden(message: string): FerryError {
  return new FerryError('forbidden', message);
}

/** Throws `forbidden` unless the key's role (and its scopes, when it has any) allow the action. */
export function authorize(auth: AuthContext, action: Action): void {
  if (!ROLE_ACTIONS[auth.role].includes(action)) {
    throw forbidden(`the ${auth.role} role may not ${action.replace(':', ' ')} (action ${action})`);
  }
  if (auth.scopes.length > 0 && !auth.scopes.includes(action)) {
    throw forbidden(`this API key is limited to the scopes ${auth.scopes.join(', ')}; ${action} is not one`);
  }
}

/** Whether the role and key allow the action, without throwing. */
export function isAllowed(auth: AuthContext, action: Action): boolean {
  return (
    ROLE_ACTIONS[auth.role].includes(action) && (auth.scopes.length === 0 || auth.scopes.includes(action))
  );
}

/** The rule for a role and dataset; admins may export any dataset, even one added after this matrix. */
export function datasetRule(role: Role, dataset: string): DatasetRule | undefined {
  const rule = DATASET_POLICY[role][dataset as PolicyDataset];
  if (rule) return rule;
  return role === 'admin' ? FULL : undefined;
}

/**
 * Checks an export against the matrix and returns the anonymization level and scope to
 * run it with. A request for more than the role may see is refused with `forbidden`,
 * never silently downgraded; an agent's export is narrowed to the conversations the
 * agent took part in.
 */
export function authorizeExport(
  auth: AuthContext,
  input: { dataset: string; pii: PiiLevel; scope?: ExportScope | undefined },
): { pii: PiiLevel; scope: ExportScope | undefined } {
  const rule = datasetRule(auth.role, input.dataset);
  if (!rule) {
    const allowed = Object.keys(DATASET_POLICY[auth.role]);
    throw forbidden(
      `the ${auth.role} role may not export dataset "${input.dataset}" (allowed: ${allowed.join(', ') || 'none'})`,
    );
  }
  if (!rule.pii.includes(input.pii)) {
    throw forbidden(
      `the ${auth.role} role may not export personal data: pii level "${input.pii}" is refused for ` +
        `${input.dataset} (allowed: ${rule.pii.join(', ')})`,
    );
  }
  const kind: ScopeKind = input.scope?.kind ?? 'tenant';
  if (rule.scopes === 'own') {
    const own = auth.teamMemberId;
    if (!own)
      throw forbidden(`an ${auth.role} key must be bound to a team member to export ${input.dataset}`);
    if (kind === 'tenant') return { pii: input.pii, scope: { kind: 'team_member', team_member_id: own } };
    if (input.scope?.kind === 'team_member' && input.scope.team_member_id === own)
      return { pii: input.pii, scope: input.scope };
    throw forbidden(
      `the ${auth.role} role may only export its own conversations: scope ${kind} is refused ` +
        '(leave the scope out, or use scope team_member with your own team member id)',
    );
  }
  if (!rule.scopes.includes(kind)) {
    throw forbidden(
      `the ${auth.role} role may not narrow ${input.dataset} to one ${kind.replace('_', ' ')} ` +
        `(allowed scopes: ${rule.scopes.join(', ')})`,
    );
  }
  return { pii: input.pii, scope: input.scope };
}

const LEVEL_NAMES = (levels: readonly PiiLevel[]) =>
  levels.length === PII_LEVELS.length ? 'any level' : levels.join(', ');

/** The matrix as the Markdown tables in docs/auth.md (a test keeps the two in step). */
export function permissionMatrixMarkdown(): string {
  const roles = Object.keys(ROLE_ACTIONS) as Role[];
  const yes = (b: boolean) => (b ? 'yes' : '-');
  const lines = [
    `| action | ${roles.join(' | ')} |`,
    `|---|${roles.map(() => '---').join('|')}|`,
    ...ACTIONS.map((a) => `| \`${a}\` | ${roles.map((r) => yes(ROLE_ACTIONS[r].includes(a))).join(' | ')} |`),
    '',
    `| dataset | ${roles.join(' | ')} |`,
    `|---|${roles.map(() => '---').join('|')}|`,
  ];
  for (const dataset of POLICY_DATASETS) {
    const cells = roles.map((role) => {
      const rule = DATASET_POLICY[role][dataset];
      if (!rule) return '-';
      const scopes =
        rule.scopes === 'own'
          ? 'own only'
          : rule.scopes.length === ALL_SCOPES.length
            ? 'any scope'
            : `scopes ${rule.scopes.join(', ')}`;
      return `${LEVEL_NAMES(rule.pii)}; ${scopes}`;
    });
    lines.push(`| ${dataset} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}
