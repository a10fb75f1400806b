import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { deliverAll } from '../deliver/deliver.ts';
import type { Mailer } from '../deliver/mailer.ts';
import type { DeliveryArtifact, DeliveryClients, DeliveryContext, DeliveryResult } from '../deliver/types.ts';
import type { JobQueue } from '../jobs/queue.ts';
import type { Logger } from '../lib/logger.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import { keyedMessageId } from '../webhooks/emit.ts';
import { giveUpMessages } from '../webhooks/settle.ts';
import type { RunFile } from './model.ts';
import type { RunConfig } from './run-file.ts';
import type { DeliveryRow, RunRow } from './repository.ts';
import { scheduleRuns } from './run-repository.ts';
import { SCHEDULE_RUN_QUEUE } from './tick.ts';

/** What delivering a run's files needs (part of the run's dependencies). */
export interface RunDeliveryDeps {
  readonly database: Database;
  readonly logger: Logger;
  readonly queue: Pick<JobQueue, 'send'>;
  readonly now: () => Date;
  /** Keys the pseudonyms of a schedule's files (HMAC), so every run pseudonymizes alike. */
  readonly secretKey: string;
  /** Opens the targets' sealed secrets. */
  readonly secrets: SecretBox;
  readonly outbound: OutboundPolicy;
  readonly mailer?: Mailer | undefined;
  readonly deliveryClients: DeliveryClients;
  /** Waits between delivery attempts within one run attempt; default 1 s, 4 s, 16 s. */
  readonly deliveryRetryDelays?: readonly number[] | undefined;
  readonly deliveryTimeoutMs?: number | undefined;
  /** The retry schedule of webhook targets' messages; default the webhook schedule (docs/webhooks.md). */
  readonly webhookRetryDelays?: readonly number[] | undefined;
}

/** How delivering went in one attempt of a run. */
export interface DeliveryRound {
  /** Every required target has every file. */
  delivered: boolean;
  /** Every missing delivery the run could try again failed in a way no retry of the run fixes. */
  permanent: boolean;
  /**
   * Set when every missing delivery is a webhook message waiting for its next attempt:
   * the earliest of those attempts.
   */
  waitUntil?: Date;
  /** What is missing, per target and file. */
  reason: string;
  /** Every delivery outcome of the run so far. */
  deliveries: DeliveryRow[];
}

/**
 * Delivers each file to every target that has not received it yet: targets side by side,
 * each target's files in order, one failing target not stopping the others. Each outcome
 * is recorded as it happens. Every attempt of the run fills path placeholders from the
 * run's start and names each (file, target) delivery alike, so a retry writes the same
 * object keys and a webhook target keeps one message per file.
 */
export async function deliverRunFiles(
  deps: RunDeliveryDeps,
  row: RunRow,
  files: readonly RunFile[],
  artifacts: ReadonlyMap<string, DeliveryArtifact>,
  signal: AbortSignal,
): Promise<DeliveryRound> {
  const runs = scheduleRuns(deps.database);
  const config = row.config as RunConfig;
  const context: DeliveryContext = {
    secrets: deps.secrets,
    outbound: deps.outbound,
    clients: deps.deliveryClients,
    database: deps.database,
    now: deps.now,
    logger: deps.logger,
    pathTime: row.started_at ?? deps.now(),
    queue: deps.queue,
    ...(deps.mailer ? { mailer: deps.mailer } : {}),
    ...(deps.deliveryRetryDelays ? { retryDelays: deps.deliveryRetryDelays } : {}),
    ...(deps.deliveryTimeoutMs ? { timeoutMs: deps.deliveryTimeoutMs } : {}),
    ...(deps.webhookRetryDelays ? { webhookRetryDelays: deps.webhookRetryDelays } : {}),
  };
  const pair = (exportId: string, index: number) => `${exportId}#${index}`;
  const earlier = await runs.deliveries(row.id);
  const done = new Set<string>();
  const recorded = new Map<string, number>();
  for (const d of earlier) {
    const key = pair(d.export_id, d.target_index);
    if (d.status === 'delivered') done.add(key);
    recorded.set(key, (recorded.get(key) ?? 0) + d.attempts);
  }
  const latest = new Map<string, DeliveryResult>();
  await Promise.all(
    config.targets.map(async ({ target }, index) => {
      for (const file of files) {
        const key = pair(file.export_id, index);
        if (done.has(key)) continue;
        if (signal.aborted) return;
        const [result] = (await deliverAll([target], artifacts.get(file.export_id)!, {
          ...context,
          deliveryKey: runDeliveryKey(file.export_id, index),
        })) as [DeliveryResult];
        latest.set(key, result);
        // A webhook target reports its message's attempts so far: the history gets the new ones,
        // and a message that only waits for its next attempt adds nothing.
        const attempts =
          target.type === 'webhook'
            ? Math.max(0, result.attempts - (recorded.get(key) ?? 0))
            : result.attempts;
        if (result.status === 'delivered' || attempts > 0 || !result.retryAt) {
          await runs.recordDelivery(row, file.export_id, index, { ...result, attempts }, deps.now());
          recorded.set(key, (recorded.get(key) ?? 0) + attempts);
        }
        if (result.status === 'delivered') done.add(key);
      }
    }),
  );
  if (signal.aborted) throw signal.reason;
  const missing = config.targets.flatMap(({ required }, index) =>
    required
      ? files
          .filter((f) => !done.has(pair(f.export_id, index)))
          .map((file) => ({ index, file, result: latest.get(pair(file.export_id, index)) }))
      : [],
  );
  const reason = missing
    .map(
      ({ index, file, result }) =>
        `${result?.target.label ?? `target ${index}`}: ${file.name} not delivered${result?.error ? ` (${result.error})` : ''}`,
    )
    .join('; ');
  // Webhook messages waiting for their next attempt are retried by the outbox, not by the run.
  const failed = missing.filter(({ result }) => !result?.retryAt);
  const retries = missing.flatMap(({ result }) => (result?.retryAt ? [result.retryAt.getTime()] : []));
  return {
    delivered: missing.length === 0,
    permanent: failed.length > 0 && failed.every(({ result }) => result?.permanent === true),
    ...(missing.length > 0 && failed.length === 0 ? { waitUntil: new Date(Math.min(...retries)) } : {}),
    reason,
    deliveries: await runs.deliveries(row.id),
  };
}

/** Names the delivery of a run's file to one of its targets, the same in every attempt of the run. */
function runDeliveryKey(exportId: string, targetIndex: number): string {
  return `schedule-run-file:${exportId}:target:${targetIndex}`;
}

/**
 * Every delivery the run still misses is a webhook message waiting for its next attempt
 * on the webhook schedule. The run stays open (`retrying`), so the schedule's later runs
 * keep waiting for it, and its job is sent again for when that attempt is due; the run
 * then takes the outcome. Waiting is not a failed attempt: it uses none of the run's retries.
 */
export async function waitForWebhooks(
  deps: Pick<RunDeliveryDeps, 'database' | 'queue' | 'now'>,
  row: RunRow,
  attemptId: string,
  round: DeliveryRound,
  log: Logger,
): Promise<void> {
  const until = round.waitUntil!;
  // A delay, not a date: the queue counts it on the database's clock.
  const seconds = Math.max(0.5, (until.getTime() - deps.now().getTime()) / 1000);
  await deps.queue.send(SCHEDULE_RUN_QUEUE, { id: row.id }, { startAfter: seconds });
  await scheduleRuns(deps.database).retrying(
    row.id,
    attemptId,
    { code: 'delivery_failed', message: round.reason },
    deps.now(),
  );
  log.info({ until: until.toISOString() }, 'scheduled run waits for the next attempt of a webhook message');
}

/**
 * Gives up the webhook messages of a run's deliveries that still wait for a retry: they
 * are failed and never sent again, so a run that ends (failed, or delivered without an
 * optional target) cannot have a file arrive after a later run's. The messages are
 * found by their keys, so one whose first attempt died before it was recorded is too.
 */
export async function giveUpWebhookDeliveries(
  deps: Pick<RunDeliveryDeps, 'database' | 'now'>,
  runId: string,
  why: string,
  log: Logger,
): Promise<void> {
  const run = await scheduleRuns(deps.database).load(runId);
  if (!run) return;
  const config = run.config as RunConfig;
  const ids = config.targets.flatMap(({ target }, index) =>
    target.type === 'webhook'
      ? run.files.map((f) =>
          keyedMessageId(run.tenant_id, target.endpoint_id, runDeliveryKey(f.export_id, index)),
        )
      : [],
  );
  const given = await giveUpMessages({ database: deps.database, now: deps.now }, ids, `given up: ${why}`);
  if (given.length) log.info({ messages: given }, 'webhook messages of the run given up');
}
