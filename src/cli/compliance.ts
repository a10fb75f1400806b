import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import { complianceReport, complianceReportCsv, complianceReportHtml } from '../privacy/compliance-report.ts';
import { selfAudit, selfAuditHtml, selfAuditMarkdown } from '../privacy/self-audit.ts';
import { withCommand } from './context.ts';

/** Writes the document to `--output`, or to standard output. */
function emit(text: string, output: string | undefined): void {
  if (output) writeFileSync(output, text);
  else process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** `ferry compliance report|self-audit` (docs/compliance.md). */
export function registerCompliance(program: Command): void {
  const compliance = program
    .command('compliance')
    .description('compliance reports and the data portability self-audit (docs/compliance.md)');

  compliance
    .command('report')
    .description('what Ferry recorded in one month: exports, requests, erasures, sweeps, holds')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--period <YYYY-MM>', "the calendar month, in the tenant's time zone")
    .addOption(
      new Option('--format <format>', 'output format').choices(['json', 'csv', 'html']).default('json'),
    )
    .option('--output <file>', 'write to a file instead of standard output')
    .action(async (options: { tenant: string; period: string; format: string; output?: string }) => {
      const report = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return complianceReport(command.database, tenant.id, options.period);
      });
      emit(
        options.format === 'csv'
          ? complianceReportCsv(report)
          : options.format === 'html'
            ? complianceReportHtml(report)
            : JSON.stringify(report, null, 2),
        options.output,
      );
    });

  compliance
    .command('self-audit')
    .description('the data portability self-audit, computed from the data map and the configuration')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .addOption(new Option('--format <format>', 'output format').choices(['md', 'json', 'html']).default('md'))
    .option('--output <file>', 'write to a file instead of standard output')
    .action(async (options: { tenant: string; format: string; output?: string }) => {
      const audit = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return selfAudit({ database: command.database, tenantId: tenant.id });
      });
      emit(
        options.format === 'json'
          ? JSON.stringify(audit, null, 2)
          : options.format === 'html'
            ? selfAuditHtml(audit)
            : selfAuditMarkdown(audit),
        options.output,
      );
    });
}
