import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { loadTenant } from '../collect/tenant.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { outboundPolicy } from '../lib/ssrf.ts';
import {
  createProcessor,
  DELETION_CHANNELS,
  deleteProcessor,
  PROCESSOR_CATEGORIES,
  tenantProcessors,
} from '../privacy/processors.ts';
import { recordOfProcessing, ropaCsv, ropaJson } from '../privacy/ropa.ts';
import { checkEndpointUrl } from '../webhooks/endpoints.ts';
import { withCommand } from './context.ts';
import { printTable } from './tenants.ts';

const list = (value: string, previous: string[] = []) => [
  ...previous,
  ...value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean),
];

/** `ferry processors add|list|remove` and `ferry ropa export` (docs/processors.md). */
export function registerProcessors(program: Command): void {
  const processors = program
    .command('processors')
    .description(
      'the third-party processors registry: who else holds the tenant’s data (docs/processors.md)',
    );

  processors
    .command('add')
    .description('register a processor')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .requiredOption('--name <name>', 'e.g. Stripe')
    .requiredOption('--purpose <text>', 'what they do with the data')
    .requiredOption('--categories <list>', `data categories (${PROCESSOR_CATEGORIES.join(', ')})`, list)
    .requiredOption('--location <where>', 'country or region, e.g. US')
    .requiredOption('--retention <text>', 'how long they keep it')
    .addOption(
      new Option('--deletion <channel>', 'how erasure reaches them')
        .choices([...DELETION_CHANNELS])
        .makeOptionMandatory(),
    )
    .option('--contact <email-or-url>', 'email: the address; webhook: the https URL')
    .option('--instructions <text>', 'manual: what the team does')
    .option('--included-in-exports', 'their data is part of Ferry’s exports')
    .option('--export-instructions <url>', 'how a person gets their data out of this processor')
    .option('--json', 'print JSON')
    .action(
      async (options: {
        tenant: string;
        name: string;
        purpose: string;
        categories: string[];
        location: string;
        retention: string;
        deletion: string;
        contact?: string;
        instructions?: string;
        includedInExports?: boolean;
        exportInstructions?: string;
        json?: boolean;
      }) => {
        const processor = await withCommand(async (command) => {
          const tenant = await loadTenant(command.database, options.tenant);
          // A webhook address passes the same outbound guard as in the API (FERRY_OUTBOUND_ALLOW).
          if (options.deletion === 'webhook' && options.contact)
            await checkEndpointUrl(options.contact, outboundPolicy(command.config.outboundAllow)).catch(
              (err: unknown) => {
                if (err instanceof FerryError && err.code === 'invalid_parameter')
                  throw invalid('--contact', err.message.replace(/^url: /, ''));
                throw err;
              },
            );
          return createProcessor(
            command.database,
            tenant.id,
            {
              name: options.name,
              purpose: options.purpose,
              data_categories: options.categories,
              location: options.location,
              retention: options.retention,
              deletion_channel: options.deletion,
              deletion_contact: options.contact ?? null,
              deletion_instructions: options.instructions ?? null,
              included_in_exports: Boolean(options.includedInExports),
              export_instructions_url: options.exportInstructions ?? null,
            },
            { actor: 'cli' },
          );
        });
        process.stdout.write(
          options.json
            ? `${JSON.stringify(processor, null, 2)}\n`
            : `processor ${processor.name} registered (${processor.id})\n`,
        );
      },
    );

  processors
    .command('list')
    .description('the registered processors')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; json?: boolean }) => {
      const rows = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return tenantProcessors(command.database, tenant.id);
      });
      if (options.json) return void process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      if (!rows.length) return void process.stdout.write('no processors registered\n');
      printTable(
        ['ID', 'NAME', 'CATEGORIES', 'LOCATION', 'DELETION'],
        rows.map((p) => [p.id, p.name, p.data_categories.join(','), p.location, p.channel]),
      );
    });

  processors
    .command('remove')
    .description('remove a processor from the registry')
    .argument('<processor-id>', 'the processor')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .action(async (id: string, options: { tenant: string }) => {
      const removed = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return deleteProcessor(command.database, tenant.id, id, { actor: 'cli' });
      });
      process.stdout.write(`processor ${removed.name} removed\n`);
    });

  program
    .command('ropa')
    .description('the record of processing activities, GDPR Art. 30 (docs/processors.md)')
    .command('export')
    .description('write the record as JSON or CSV')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .addOption(new Option('--format <format>', 'output format').choices(['json', 'csv']).default('json'))
    .option('--output <file>', 'write to a file instead of standard output')
    .action(async (options: { tenant: string; format: string; output?: string }) => {
      const ropa = await withCommand(async (command) => {
        const tenant = await loadTenant(command.database, options.tenant);
        return recordOfProcessing(command.database, tenant.id);
      });
      const text = options.format === 'csv' ? ropaCsv(ropa) : ropaJson(ropa);
      if (options.output) writeFileSync(options.output, text);
      else process.stdout.write(text);
    });
}
