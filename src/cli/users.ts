import { type Command, InvalidArgumentError } from 'commander';
import { ROLES, type Role } from '../auth/context.ts';
import { loadTenant } from '../collect/tenant.ts';
import { linkBase } from '../export-requests/links.ts';
import { inviteMember, resetLinkFor, tokenLink } from '../web/accounts.ts';
import { withDatabase } from './context.ts';

/**
 * `ferry users invite|reset`: an operator adds a team member to a tenant, or gives one a
 * new password, by a one-time link printed here (invitations work 7 days, resets 1 hour).
 */
export function registerUsers(program: Command): void {
  const users = program.command('users').description('dashboard accounts of team members: invite, reset');

  users
    .command('invite')
    .description('add a team member and print the one-time link that sets their password (valid 7 days)')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--email <email>', 'their work email (they sign in with it)')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`, (value: string) => {
      if (!(ROLES as readonly string[]).includes(value))
        throw new InvalidArgumentError(`--role must be one of ${ROLES.join(', ')}, got "${value}"`);
      return value as Role;
    })
    .option('--name <name>', 'their full name (default: the part of the email before @)')
    .option('--json', 'print JSON instead of text')
    .action(async (options: { tenant: string; email: string; role: Role; name?: string; json?: boolean }) => {
      await withDatabase(async (database, config) => {
        const tenant = await loadTenant(database, options.tenant);
        const name = options.name?.trim() || options.email.split('@')[0]!;
        const { memberId, token } = await inviteMember(
          database,
          { tenantId: tenant.id, email: options.email, name, role: options.role },
          new Date(),
        );
        const link = tokenLink(linkBase(config), 'invite', token);
        if (options.json) {
          process.stdout.write(
            `${JSON.stringify({ team_member_id: memberId, email: options.email.toLowerCase(), role: options.role, link })}\n`,
          );
          return;
        }
        process.stdout.write(
          `invited ${options.email} as ${options.role} of ${tenant.slug} (team member ${memberId})\n` +
            `send them this one-time link to choose a password (valid 7 days):\n  ${link}\n`,
        );
      });
    });

  users
    .command('reset')
    .description(
      "print a one-time link that sets a new password for a team member's dashboard account (valid 1 hour)",
    )
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--email <email>', 'the email they sign in with')
    .option('--json', 'print JSON instead of text')
    .action(async (options: { tenant: string; email: string; json?: boolean }) => {
      await withDatabase(async (database, config) => {
        const tenant = await loadTenant(database, options.tenant);
        const { member, token } = await resetLinkFor(database, tenant.id, options.email, new Date());
        const link = tokenLink(linkBase(config), 'reset', token);
        if (options.json) {
          process.stdout.write(
            `${JSON.stringify({ team_member_id: member.id, email: member.email, link })}\n`,
          );
          return;
        }
        process.stdout.write(
          `password reset for ${member.email} (${member.role} of ${tenant.slug}); open within 1 hour:\n  ${link}\n`,
        );
      });
    });
}
