import type { Command } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import { CONSENT_PURPOSES, LEGAL_BASES, listConsent, recordConsent } from '../privacy/consent.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

interface ConsentOptions {
  tenant: string;
  subject: string;
  purpose: string;
  basis?: string;
  source: string;
  policyVersion?: string;
  json?: boolean;
}

/** `ferry consent record|withdraw|list`: a subject's consents, as the operator records them (actor `cli`). */
export function registerConsent(program: Command): void {
  const consent = program
    .command('consent')
    .description("record, withdraw and list a data subject's consents (docs/consent.md)");

  for (const [name, granted] of [
    ['record', true],
    ['withdraw', false],
  ] as const)
    consent
      .command(name)
      .description(granted ? 'record consent given' : 'record consent withdrawn')
      .requiredOption('--tenant <id-or-slug>', 'the tenant')
      .requiredOption('--subject <email-or-customer-id>', 'the customer')
      .requiredOption('--purpose <purpose>', CONSENT_PURPOSES.join(', '))
      .requiredOption('--source <source>', 'where it was captured, e.g. widget_banner, email, phone')
      .option('--basis <legal-basis>', `${LEGAL_BASES.join(', ')} (default consent)`)
      .option('--policy-version <version>', 'the privacy policy version the person saw')
      .option('--json', 'print JSON')
      .action(async (options: ConsentOptions) => {
        const record = await withCommand(async (command) => {
          const tenant = await loadTenant(command.database, options.tenant);
          return recordConsent(
            command.database,
            tenant.id,
            {
              subject: options.subject,
              purpose: options.purpose,
              granted,
              legal_basis: options.basis,
              source: options.source,
              policy_version: options.policyVersion,
            },
            { actor: 'cli' },
          );
        });
        process.stdout.write(
          options.json
            ? `${JSON.stringify(record, null, 2)}\n`
            : `consent ${granted ? 'given' : 'withdrawn'}: ${record.purpose} for customer ${record.customer_id} at ${record.recorded_at}\n`,
        );
      });

  consent
    .command('list')
    .description("a subject's consents: each purpose's state, then the full history")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--subject <email-or-customer-id>', 'the customer')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; subject: string; json?: boolean }) => {
      const view = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return listConsent(command.database, tenant.id, options.subject);
      });
      if (options.json) {
        process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
        return;
      }
      if (!view.history.length) {
        process.stdout.write(`no consent records for customer ${view.subject.customer_id}\n`);
        return;
      }
      process.stdout.write(`customer ${view.subject.customer_id}\n`);
      printTable(
        ['PURPOSE', 'STATUS', 'BASIS', 'SINCE (UTC)', 'POLICY'],
        view.current.map((c) => [
          c.purpose,
          c.status,
          c.legal_basis,
          (c.given_at ?? c.withdrawn_at ?? '').slice(0, 19).replace('T', ' '),
          c.policy_version ?? '-',
        ]),
      );
      process.stdout.write('\nhistory, oldest first\n');
      printTable(
        ['RECORDED', 'PURPOSE', 'STATUS', 'BASIS', 'SOURCE', 'POLICY'],
        view.history.map((r) => [
          r.recorded_at,
          r.purpose,
          r.granted ? 'given' : 'withdrawn',
          r.legal_basis,
          r.source,
          r.policy_version ?? '-',
        ]),
      );
    });
}
