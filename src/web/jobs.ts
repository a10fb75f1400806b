import { linkBase } from '../export-requests/links.ts';
import type { JobDefinition } from '../jobs/types.ts';
import { markLinkSent, prepareEmailedLink, tokenLink } from './accounts.ts';

/** Emails a password-reset link: the token is made here, so the queue never holds it. */
export const SEND_LINK_JOB = 'web.send-link';

export const WEB_JOBS: readonly JobDefinition[] = [
  {
    name: SEND_LINK_JOB,
    queue: () => ({ retryLimit: 3, retryDelay: 10, retryBackoff: true }),
    async handle(job, ctx) {
      if (!job.data.id || !ctx.mailer) {
        if (!ctx.mailer)
          ctx.logger.warn('a password reset was asked for, but FERRY_SMTP_URL is not set: no email sent');
        return;
      }
      const link = await prepareEmailedLink(ctx.database, job.data.id, ctx.now());
      if (!link) return;
      const url = tokenLink(linkBase(ctx.config), link.purpose, link.token);
      await ctx.mailer.send({
        to: [link.email],
        subject: `Ferry: set a new password for ${link.tenantName}`,
        text:
          `Hello ${link.name},\n\nSomeone asked to reset the password of your Ferry account for ${link.tenantName}. ` +
          `If it was you, open this link within one hour to choose a new password:\n\n    ${url}\n\n` +
          'If it was not you, ignore this email: your password stays as it is.\n',
      });
      await markLinkSent(ctx.database, job.data.id, ctx.now());
    },
  },
];
