import { setTimeout as delay } from 'node:timers/promises';
import type { ErrorCode } from '../domain/error-catalog.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { deliverByEmail } from './email-target.ts';
import { deliverToFolder } from './folder-target.ts';
import { deliverToS3 } from './s3-target.ts';
import { deliverBySftp } from './sftp-target.ts';
import { openTarget, targetLabel, targetSecrets } from './targets.ts';
import type {
  DeliveryArtifact,
  DeliveryContext,
  DeliveryOutcome,
  DeliveryResult,
  DeliveryTarget,
  DeliveryTargetInput,
  TargetType,
} from './types.ts';

/** Waits before the 2nd, 3rd and 4th attempt. */
export const DEFAULT_RETRY_DELAYS: readonly number[] = [1_000, 4_000, 16_000];

type Adapter<K extends TargetType> = (
  target: Extract<DeliveryTargetInput, { type: K }>,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
) => Promise<DeliveryOutcome>;

interface AdapterEntry<K extends TargetType> {
  readonly send: Adapter<K>;
  /**
   * Whether `deliver` retries failures itself. Webhook messages follow their own,
   * day-long schedule (src/webhooks/), so their adapter makes one attempt here.
   */
  readonly retries: boolean;
}

const ADAPTERS: { readonly [K in TargetType]: AdapterEntry<K> } = {
  s3: { send: deliverToS3, retries: true },
  folder: { send: deliverToFolder, retries: true },
  sftp: { send: deliverBySftp, retries: true },
  email: { send: deliverByEmail, retries: true },
  webhook: { send: (target, artifact, ctx) => ctx.clients.webhook(target, artifact, ctx), retries: false },
};

/**
 * Delivery failures (error codes) that another attempt cannot fix: a refused address, a
 * host key that does not match, a configuration problem. They end the retries at once,
 * and a scheduled run whose missing deliveries all failed so fails without retrying.
 */
export const PERMANENT_DELIVERY_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'outbound_blocked',
  'host_key_mismatch',
  'invalid_parameter',
  'email_not_configured',
  'secret_unreadable',
  'secret_key_invalid',
  'not_found',
]);

/**
 * Delivers one artifact to one stored target, retrying failures with backoff
 * (`ctx.retryDelays`, default 1 s, 4 s, 16 s). Every attempt writes to the same path:
 * placeholders are filled from `ctx.pathTime`, or the time of the first attempt. Never
 * throws: the result says `delivered` or `failed`, with the last error (scrubbed of the
 * target's secrets), whether it is `permanent`, and for a webhook message that the
 * outbox retries, `retryAt`.
 */
export async function deliver(
  target: DeliveryTarget,
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryResult> {
  const summary = { type: target.type, name: target.name ?? null, label: targetLabel(target) };
  const entry = ADAPTERS[target.type] as AdapterEntry<TargetType>;
  const delays = entry.retries ? (ctx.retryDelays ?? DEFAULT_RETRY_DELAYS) : [];
  const sleep = ctx.sleep ?? ((ms: number) => delay(ms).then(() => undefined));
  const fixed: DeliveryContext = ctx.pathTime ? ctx : { ...ctx, pathTime: (ctx.now ?? (() => new Date()))() };
  let secrets: string[] = [];
  let attempts = 0;
  let failure: { message: string; code: ErrorCode };
  let details: Record<string, unknown> | undefined;
  for (;;) {
    attempts++;
    try {
      const opened = await openTarget(target, ctx.secrets);
      secrets = targetSecrets(opened);
      const { attempts: counted, ...outcome } = await (entry.send as Adapter<TargetType>)(
        opened as never,
        artifact,
        fixed,
      );
      return { target: summary, status: 'delivered', attempts: counted ?? attempts, ...outcome };
    } catch (err) {
      failure = describeFailure(err, secrets);
      details = err instanceof FerryError ? err.details : undefined;
      ctx.logger?.warn(
        { target: summary.label, attempt: attempts, code: failure.code, error: failure.message },
        'delivery attempt failed',
      );
      if (isPermanent(failure.code, details) || attempts > delays.length) break;
      await sleep(delays[attempts - 1]!);
    }
  }
  const retryAt = details?.retryAt instanceof Date ? details.retryAt : undefined;
  return {
    target: summary,
    status: 'failed',
    attempts: typeof details?.attempts === 'number' ? details.attempts : attempts,
    location: null,
    error: failure.message,
    errorCode: failure.code,
    bytesSent: 0,
    checksumVerified: false,
    ...(isPermanent(failure.code, details) ? { permanent: true } : {}),
    ...(retryAt ? { retryAt } : {}),
  };
}

function isPermanent(code: ErrorCode, details: Record<string, unknown> | undefined): boolean {
  return PERMANENT_DELIVERY_CODES.has(code) || details?.permanent === true;
}

/**
 * Delivers one artifact to every target, concurrently; one failing target does not
 * stop the others. Returns one result per target, in the order given; never throws.
 */
export async function deliverAll(
  targets: readonly DeliveryTarget[],
  artifact: DeliveryArtifact,
  ctx: DeliveryContext,
): Promise<DeliveryResult[]> {
  return Promise.all(
    targets.map((target) =>
      deliver(target, artifact, ctx).catch(
        (err): DeliveryResult => ({
          // deliver() catches everything; this only guards against a bug in it.
          target: { type: target.type, name: target.name ?? null, label: targetLabel(target) },
          status: 'failed',
          attempts: 0,
          location: null,
          error: describeFailure(err, []).message,
          errorCode: 'internal',
          bytesSent: 0,
          checksumVerified: false,
        }),
      ),
    ),
  );
}

function describeFailure(err: unknown, secrets: readonly string[]): { message: string; code: ErrorCode } {
  const code = err instanceof FerryError ? err.code : 'delivery_failed';
  let message = err instanceof Error ? err.message : String(err);
  if (!message) message = err instanceof Error ? err.name : 'unknown error';
  for (const secret of secrets) message = message.split(secret).join('••••');
  return { code, message: message.slice(0, 1000) };
}
