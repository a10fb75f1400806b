import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { invalid } from '../domain/ferry-error.ts';
import type { Database } from '../db/database.ts';
import { firstAdmin } from '../web/accounts.ts';
import { addOrganisationTenant, createOrganisation, setMember } from '../organisations/admin.ts';
import { defaultWindow, SEED_LIMITS, type SeedOptions, type SeedProgress, seed } from '../seed/seed.ts';
import { withCommand } from './context.ts';

interface SeedFlags {
  tenants: string;
  conversations: string;
  messagesPerConversation: string;
  seed: string;
  since?: string;
  until?: string;
  /** Make the first tenant an agency with this name, managing the others. */
  agency?: string;
}

const DAY = 86_400_000;

function integer(flag: string, value: string, min: number, max: number): number {
  const n = /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw invalid(flag, `must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

function date(flag: string, value: string): Date {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (!d || d.toISOString().slice(0, 10) !== value)
    throw invalid(flag, `must be a date as YYYY-MM-DD, got "${value}"`);
  return d;
}

/** Turns the command's flags into seed options, naming the flag of any bad value. */
export function seedOptionsFromFlags(flags: SeedFlags, now: number = Date.now()): SeedOptions {
  const until = flags.until ? date('--until', flags.until) : defaultWindow(now).until;
  const since = flags.since ? date('--since', flags.since) : new Date(until.getTime() - 90 * DAY);
  if (since.getTime() >= until.getTime())
    throw invalid('--since', `must be before --until (${until.toISOString().slice(0, 10)})`);
  return {
    tenants: integer('--tenants', flags.tenants, 1, SEED_LIMITS.tenants),
    conversations: integer('--conversations', flags.conversations, 0, SEED_LIMITS.conversations),
    messagesPerConversation: integer(
      '--messages-per-conversation',
      flags.messagesPerConversation,
      1,
      SEED_LIMITS.messagesPerConversation,
    ),
    seed: integer('--seed', flags.seed, 0, 0xffffffff),
    since,
    until,
  };
}

export function registerSeed(program: Command): void {
  program
    .command('seed')
    .description('generate realistic demo data (deterministic for a given --seed) and bulk-load it')
    .option('--tenants <n>', 'tenants to create', '1')
    .option('--conversations <n>', 'conversations per tenant', '300')
    .option('--messages-per-conversation <n>', 'mean messages per conversation', '8')
    .option('--seed <n>', 'seed of the generator: the same seed gives the same data', '42')
    .option('--since <date>', 'first day of activity, YYYY-MM-DD (default: 90 days before --until)')
    .option('--until <date>', 'day activity stops, exclusive, YYYY-MM-DD (default: today, UTC)')
    .option(
      '--agency <name>',
      'make the first tenant an agency (organisation <name>, agency plan) managing the other tenants',
    )
    .action(async (flags: SeedFlags) => {
      const options = seedOptionsFromFlags(flags);
      if (flags.agency !== undefined && options.tenants < 2)
        throw invalid(
          '--agency',
          'needs --tenants 2 or more: the first is the agency, the others its clients',
        );
      await withCommand(async ({ database, keys }) => {
        const started = performance.now();
        const bar = process.stderr.isTTY ? progressBar() : progressLines();
        let summary: Awaited<ReturnType<typeof seed>>;
        try {
          summary = await seed(database, { ...options, secrets: (await keys()).secrets }, bar.update);
        } finally {
          bar.stop();
        }
        const seconds = (performance.now() - started) / 1000;
        const messages = summary.counts['messages'] ?? 0;
        const tenants = summary.tenants.map((t) => `${t.slug} (${t.id}, ${t.plan})`).join(', ');
        const rows = Object.entries(summary.counts)
          .map(([table, n]) => `${table}=${n}`)
          .join(' ');
        process.stdout.write(
          `seeded ${summary.tenants.length} tenant${summary.tenants.length === 1 ? '' : 's'}: ${tenants}; ` +
            `rows: ${rows}; ${seconds.toFixed(1)} s, ${Math.round(messages / seconds)} messages/s\n`,
        );
        if (flags.agency !== undefined) await seedAgency(database, flags.agency, summary.tenants);
      });
    });
}

/**
 * Demo data for organisations (docs/organisations.md): the first seeded tenant becomes the
 * agency's home (on the agency plan), the others its client tenants, and the home tenant's first
 * admin an organisation admin with the manager role in every client tenant.
 */
async function seedAgency(
  database: Database,
  name: string,
  tenants: readonly { id: string; slug: string }[],
): Promise<void> {
  const [home, ...clients] = tenants;
  if (!home) return;
  const by = { actor: 'cli', ip: null, userAgent: null };
  const now = new Date();
  await database.db.updateTable('tenants').set({ plan: 'agency' }).where('id', '=', home.id).execute();
  const organisation = await createOrganisation(database, { name, homeTenant: home.id }, by, now);
  for (const client of clients) await addOrganisationTenant(database, organisation, client.id, by, now);
  const admin = await firstAdmin(database, home.id);
  if (admin)
    await setMember(database, organisation, admin.id, { admin: true, defaultRole: 'manager' }, by, now);
  process.stdout.write(
    `organisation "${organisation.name}" (${organisation.id}): home ${home.slug}, clients ` +
      `${clients.map((c) => c.slug).join(', ')}${admin ? `; organisation admin ${admin.email}` : ''}\n`,
  );
}

/** How often a log line repeats the progress of a phase that is still running. */
const LINE_INTERVAL_MS = 5_000;

/**
 * Progress for a log (stderr not a terminal): a line when a phase starts, and every few
 * seconds while the messages load, with the messages done of the total.
 */
function progressLines() {
  let phase = '';
  let last = 0;
  return {
    update(p: SeedProgress) {
      const now = performance.now();
      if (p.phase === phase && now - last < LINE_INTERVAL_MS) return;
      phase = p.phase;
      last = now;
      const percent = p.totalMessages > 0 ? Math.floor((100 * p.messages) / p.totalMessages) : 100;
      process.stderr.write(`seed: ${p.phase} (${p.messages}/${p.totalMessages} messages, ${percent}%)\n`);
    },
    stop() {},
  };
}

/** A progress bar on stderr: messages done of the total, with the rate. */
function progressBar() {
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: 'seed {phase} [{bar}] {value}/{total} messages | {rate} msg/s | {duration_formatted}',
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  let begun = false;
  return {
    update(p: SeedProgress) {
      const rate = Math.round(p.messages / Math.max(0.001, (performance.now() - started) / 1000));
      const payload = { phase: p.phase.padEnd(13), rate };
      if (!begun) {
        bar.start(p.totalMessages, p.messages, payload);
        begun = true;
      } else {
        bar.setTotal(p.totalMessages);
        bar.update(p.messages, payload);
      }
    },
    stop() {
      if (begun) bar.stop();
    },
  };
}
