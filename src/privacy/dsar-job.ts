import type { JobContext } from '../jobs/types.ts';
import type { DsarType } from '../domain/dsar-state.ts';
import { randomUUID } from 'node:crypto';
import { completeDsar, type DsarDeps, failDsar, loadDsar, saveProgress } from './dsar-service.ts';
import { dsarDb } from './tables.ts';
import type { DsarRow } from './tables.ts';

/**
 * One run of a data subject request: its steps in order, each recorded in `result.steps`
 * when done, so a run that failed (or whose worker died) resumes at the step it had not
 * finished. Every step is idempotent on its own as well.
 */
export interface StepContext {
  readonly deps: DsarDeps;
  readonly job: JobContext;
  readonly row: DsarRow;
  /** What earlier steps produced. */
  readonly done: Readonly<Record<string, unknown>>;
}

export interface DsarStep {
  readonly name: string;
  run(ctx: StepContext): Promise<Record<string, unknown>>;
}

export interface DsarPlan {
  readonly steps: readonly DsarStep[];
  /** The outcome text stored on the request and its register row. */
  outcome(done: Readonly<Record<string, unknown>>): string;
  /** The receipt's id, from the steps' results, when the plan issues one. */
  receiptId(done: Readonly<Record<string, unknown>>): string | null;
}

const plans = new Map<DsarType, DsarPlan>();

/** Registers what a kind of request does (dsar-steps.ts registers every kind). */
export function registerDsarPlan(type: DsarType, plan: DsarPlan): void {
  plans.set(type, plan);
}

/** How long a run holds a request before another process may take it over (a crashed runner). */
const RUN_LEASE_MS = 30 * 60_000;

/**
 * Runs a request's remaining steps, unless another process runs it (its lease holds):
 * then it returns `busy` at once. `done` when this call ran it (or nothing was left).
 */
export async function runDsar(deps: DsarDeps, job: JobContext, initial: DsarRow): Promise<'done' | 'busy'> {
  if (initial.stage !== 'in_progress') return 'done';
  const token = randomUUID();
  const now = deps.now();
  const claimed = await dsarDb(deps.database)
    .updateTable('dsar_requests')
    .set({ run_token: token, run_until: new Date(now.getTime() + RUN_LEASE_MS) })
    .where('id', '=', initial.id)
    .where('stage', '=', 'in_progress')
    .where((eb) => eb.or([eb('run_until', 'is', null), eb('run_until', '<', now)]))
    .executeTakeFirst();
  if (Number(claimed.numUpdatedRows) !== 1) return 'busy';
  try {
    await runSteps(deps, job, await loadDsar(deps.database, initial.tenant_id, initial.id));
  } finally {
    await dsarDb(deps.database)
      .updateTable('dsar_requests')
      .set({ run_token: null, run_until: null })
      .where('id', '=', initial.id)
      .where('run_token', '=', token)
      .execute();
  }
  return 'done';
}

async function runSteps(deps: DsarDeps, job: JobContext, initial: DsarRow): Promise<void> {
  let row = initial;
  if (row.stage !== 'in_progress') return;
  const plan = plans.get(row.type);
  const steps: Record<string, unknown> = {
    ...((row.result?.steps as Record<string, unknown> | undefined) ?? {}),
  };
  if (!plan) {
    await failDsar(deps, row, 'plan', `no handler for ${row.type} requests`);
    return;
  }
  for (const step of plan.steps) {
    if (steps[step.name] !== undefined) continue;
    try {
      steps[step.name] = await step.run({ deps, job, row, done: steps });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      job.logger.warn({ dsar_id: row.id, step: step.name, err: message }, 'data subject request step failed');
      await failDsar(deps, row, step.name, message);
      return;
    }
    row = await saveProgress(deps, row, { ...(row.result ?? {}), steps });
  }
  await completeDsar(deps, row, {
    outcome: plan.outcome(steps),
    result: { ...(row.result ?? {}), steps },
    receiptId: plan.receiptId(steps),
  });
}
