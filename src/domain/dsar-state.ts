/**
 * Data subject requests: their kinds and the state machine persisted in
 * `dsar_requests.status` (docs/dsar.md).
 *
 * ```
 * received ─→ identity_pending ─→ verified ─→ in_progress ─→ completed
 *     │              │               │ ↘            │ ↑
 *     │              │               │  awaiting_approval ──→ in_progress
 *     │              │               │                 failed (resumes at its failed step)
 *     └──────────────┴───────────────┴──→ denied | cancelled
 * any open status before in_progress ─→ extended (the deadline moved; the request waits
 *                                        where it stood: its `stage`)
 * ```
 *
 * - `received`: recorded; the deadline clock runs from here.
 * - `identity_pending`: a one-time code was sent to the subject's email.
 * - `verified`: the subject proved who they are (the code) or a team member vouched.
 * - `awaiting_approval`: destructive requests (erasure, rectification) and excessive ones
 *   wait for an admin or manager to approve.
 * - `in_progress`: a worker runs the request.
 * - `completed`, `denied`, `cancelled`: closed. `failed`: the run stopped; running it
 *   again resumes at the step that failed.
 */
export const DSAR_TYPES = [
  'access',
  'portability',
  'erasure',
  'rectification',
  'restriction',
  'opt_out',
] as const;
export type DsarType = (typeof DSAR_TYPES)[number];

export const REGULATIONS = ['gdpr', 'ccpa'] as const;
export type Regulation = (typeof REGULATIONS)[number];

export const DSAR_SOURCES = ['api', 'privacy_center', 'email', 'manual'] as const;
export type DsarSource = (typeof DSAR_SOURCES)[number];

export const DSAR_STATUSES = [
  'received',
  'identity_pending',
  'verified',
  'awaiting_approval',
  'in_progress',
  'completed',
  'extended',
  'denied',
  'cancelled',
  'failed',
] as const;
export type DsarStatus = (typeof DSAR_STATUSES)[number];

/** Where an open request stands; `status` shows `extended` over it while a request waits with a moved deadline. */
export type DsarStage = Exclude<DsarStatus, 'extended'>;

export const CLOSED_DSAR_STATUSES = [
  'completed',
  'denied',
  'cancelled',
] as const satisfies readonly DsarStatus[];

export function isClosedDsar(status: DsarStatus): boolean {
  return (CLOSED_DSAR_STATUSES as readonly DsarStatus[]).includes(status);
}

/** Requests that change or remove data: a person approves them before they run. */
export const APPROVAL_TYPES: readonly DsarType[] = ['erasure', 'rectification'];

/** Requests answered with a package of the subject's data. */
export const PACKAGE_TYPES: readonly DsarType[] = ['access', 'portability'];

/** What each operation needs the request's stage to be. */
export const ALLOWED_STAGES = {
  verify: ['received', 'identity_pending'],
  approve: ['awaiting_approval'],
  deny: ['received', 'identity_pending', 'verified', 'awaiting_approval', 'failed'],
  cancel: ['received', 'identity_pending', 'verified', 'awaiting_approval', 'failed'],
  extend: ['received', 'identity_pending', 'verified', 'awaiting_approval', 'in_progress', 'failed'],
  run: ['failed'],
} as const satisfies Record<string, readonly DsarStage[]>;
export type DsarOperation = keyof typeof ALLOWED_STAGES;

export function allows(operation: DsarOperation, stage: DsarStage): boolean {
  return (ALLOWED_STAGES[operation] as readonly DsarStage[]).includes(stage);
}
