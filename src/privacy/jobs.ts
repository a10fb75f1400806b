import { loadTenant } from '../collect/tenant.ts';
import type { JobContext, JobDefinition } from '../jobs/types.ts';
import { runDsar } from './dsar-job.ts';
// What each kind of request does, and the access package's rows: registered on import.
import './dsar-steps.ts';
import {
  DSAR_CODE_JOB,
  DSAR_NOTICE_JOB,
  DSAR_RUN_JOB,
  type DsarDeps,
  CODE_RESEND_GUARD_MS,
  issueVerificationCode,
  loadDsar,
  markCodeSent,
  markIdentityPending,
  notifyOverdue,
} from './dsar-service.ts';
import { statusLink } from './status-link.ts';
import { dsarDb } from './tables.ts';

export const DSAR_OVERDUE_JOB = 'dsar.overdue';

export function dsarDeps(ctx: JobContext): DsarDeps {
  return { database: ctx.database, config: ctx.config, queue: ctx.queue, now: ctx.now, logger: ctx.logger };
}

/** Loads a request by id alone (job payloads carry ids only); null when it is gone. */
async function requestById(ctx: JobContext, id: string | undefined) {
  if (!id) return null;
  const row = await dsarDb(ctx.database)
    .selectFrom('dsar_requests')
    .select('tenant_id')
    .where('id', '=', id)
    .executeTakeFirst();
  return row ? loadDsar(ctx.database, row.tenant_id, id) : null;
}

/** The data subject request jobs (docs/dsar.md). */
export const DSAR_JOBS: readonly JobDefinition[] = [
  {
    name: DSAR_RUN_JOB,
    // Retries outlast a crashed runner's lease (30 minutes): 1, 2, 4, 8, 16, 32 minutes.
    queue: () => ({ retryLimit: 6, retryDelay: 60, retryBackoff: true, expireInSeconds: 6 * 3600 }),
    async handle(job, ctx) {
      const row = await requestById(ctx, job.data.id);
      if (!row) return;
      // Another process holds the request: try again later, when it has finished or its lease ran out.
      if ((await runDsar(dsarDeps(ctx), ctx, row)) === 'busy')
        throw new Error(`data subject request ${row.id} is being run by another process`);
    },
  },
  {
    name: DSAR_CODE_JOB,
    queue: () => ({ retryLimit: 3, retryDelay: 10, retryBackoff: true }),
    async handle(job, ctx) {
      const row = await requestById(ctx, job.data.id);
      if (!row?.subject?.email || !ctx.mailer) return;
      if (row.stage !== 'received' && row.stage !== 'identity_pending') return;
      const deps = dsarDeps(ctx);
      // A retry of a job whose email already went out (it failed afterwards) sends no second code.
      const sentAt = row.verification_sent_at?.getTime();
      if (sentAt !== undefined && ctx.now().getTime() - sentAt < CODE_RESEND_GUARD_MS) {
        await markIdentityPending(deps, row);
        return;
      }
      const tenant = await loadTenant(ctx.database, row.tenant_id);
      const code = await issueVerificationCode(deps, row);
      await ctx.mailer.send({
        to: [row.subject.email],
        subject: `${tenant.name}: your verification code ${code}`,
        text:
          `Someone asked ${tenant.name} for a ${row.type.replace('_', '-')} request about the data held on ${row.subject.email}.\n\n` +
          `If it was you, enter this code to confirm it is you:\n\n    ${code}\n\n` +
          'The code works for 30 minutes and three tries. If you did not ask, ignore this email: nothing happens without the code.\n\n' +
          (row.source === 'privacy_center'
            ? `Enter it, and follow your request, here:\n${statusLink(ctx.config, tenant.slug, row.id)}\n\n`
            : '') +
          `Request: ${row.id}\n`,
      });
      await markCodeSent(deps, row);
      await markIdentityPending(deps, row);
    },
  },
  {
    name: DSAR_NOTICE_JOB,
    queue: () => ({ retryLimit: 5, retryDelay: 30, retryBackoff: true }),
    async handle(job, ctx) {
      const row = await requestById(ctx, job.data.id);
      if (!row?.subject?.email || !ctx.mailer || !row.extension_reason) return;
      const tenant = await loadTenant(ctx.database, row.tenant_id);
      await ctx.mailer.send({
        to: [row.subject.email],
        subject: `${tenant.name}: more time is needed for your request`,
        text:
          `${tenant.name} needs more time to answer your ${row.type.replace('_', '-')} request ${row.id}, ` +
          `received ${row.received_at.toISOString().slice(0, 10)}.\n\nReason: ${row.extension_reason}\n\n` +
          `The answer is now due by ${row.due_at.toISOString().slice(0, 10)}.\n`,
      });
    },
  },
  {
    name: DSAR_OVERDUE_JOB,
    schedule: { cron: '15 * * * *' },
    queue: () => ({ retryLimit: 2, retryDelay: 60 }),
    work: () => ({ localConcurrency: 1 }),
    async handle(_job, ctx) {
      await notifyOverdue(dsarDeps(ctx));
    },
  },
];
