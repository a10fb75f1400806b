import { loadConfig } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { invalid } from '../domain/ferry-error.ts';
import { openKeyring } from '../crypto/open-keyring.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { CountDistribution, planConversation } from './conversation-plan.ts';
import { CONVERSATION_COLUMNS, conversationRow, MESSAGE_COLUMNS, messageRows } from './conversation-rows.ts';
import { batched } from './csv.ts';
import { REVENUE_COLUMNS, revenueRows } from './revenue.ts';
import { buildTenant, hashPassword } from './tenant.ts';
import { DAY, slice, type TenantContext } from './tenant-context.ts';
import {
  ACTIVITY_TABLE,
  CHUNK_TABLE,
  CONSENT_TABLE,
  CUSTOMER_TABLE,
  DOCUMENT_TABLE,
  INVOICE_TABLE,
  integrationTable,
  SETTING_TABLE,
  SITE_TABLE,
  SUBSCRIPTION_TABLE,
  type TableRows,
  TENANT_TABLE,
  teamTable,
} from './tenant-rows.ts';

export interface SeedOptions {
  tenants: number;
  /** Conversations per tenant. */
  conversations: number;
  /** Mean messages per conversation. */
  messagesPerConversation: number;
  seed: number;
  since: Date;
  until: Date;
  /** Seals integration credentials. When absent, the keyring of `database` is opened. */
  secrets?: SecretBox;
  /**
   * Without `secrets`: the FERRY_SECRET_KEY the keyring's master key is derived from (when no
   * FERRY_ENCRYPTION_KEY is configured); the configured one when absent.
   */
  secretKey?: string;
}

export interface SeedProgress {
  phase: string;
  messages: number;
  totalMessages: number;
}

export interface SeedSummary {
  tenants: { id: string; slug: string; name: string; plan: string }[];
  /** Rows written per table. */
  counts: Record<string, number>;
}

/** The default window: the 90 days before today (UTC midnight). */
export function defaultWindow(now: number = Date.now()): { since: Date; until: Date } {
  const until = Math.floor(now / DAY) * DAY;
  return { since: new Date(until - 90 * DAY), until: new Date(until) };
}

/** One demo tenant with ~300 conversations: what `ferry serve` seeds into an empty database. */
export const DEMO_SEED: SeedOptions = {
  tenants: 1,
  conversations: 300,
  messagesPerConversation: 8,
  seed: 42,
  ...defaultWindow(),
};

export const SEED_LIMITS = {
  tenants: 10_000,
  conversations: 10_000_000,
  messagesPerConversation: 1000,
} as const;

export function validateSeedOptions(options: SeedOptions): void {
  const int = (name: keyof typeof SEED_LIMITS, min: number) => {
    const v = options[name];
    if (!Number.isInteger(v) || v < min || v > SEED_LIMITS[name])
      throw invalid(name, `must be an integer from ${min} to ${SEED_LIMITS[name]}, got ${v}`);
  };
  int('tenants', 1);
  int('conversations', 0);
  const mean = options.messagesPerConversation;
  if (!Number.isFinite(mean) || mean < 1 || mean > SEED_LIMITS.messagesPerConversation)
    throw invalid(
      'messagesPerConversation',
      `must be a number from 1 to ${SEED_LIMITS.messagesPerConversation}, got ${mean}`,
    );
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff)
    throw invalid('seed', `must be an integer from 0 to 4294967295, got ${options.seed}`);
  for (const name of ['since', 'until'] as const) {
    if (!(options[name] instanceof Date) || Number.isNaN(options[name].getTime()))
      throw invalid(name, 'must be a valid date');
  }
  if (options.since.getTime() >= options.until.getTime()) throw invalid('since', 'must be before until');
}

/** The first free tenant ordinal for this seed: earlier runs with the same seed keep their tenants. */
async function firstOrdinal(database: Database, seed: number): Promise<number> {
  const rows = await database.db
    .selectFrom('tenants')
    .select('slug')
    .where('slug', 'like', `%-${seed}-%`)
    .execute();
  let max = 0;
  for (const { slug } of rows) {
    const m = /-(\d+)-(\d+)$/.exec(slug);
    if (m && Number(m[1]) === seed) max = Math.max(max, Number(m[2]));
  }
  return max + 1;
}

/**
 * Generates realistic demo data and bulk-loads it with COPY, parents before
 * children. Rows are produced by generators in chunks, so memory stays flat
 * however many messages are asked for. Same options into an empty database give
 * byte-identical rows (except sealed credentials, which use a random IV).
 */
export async function seed(
  database: Database,
  options: SeedOptions,
  onProgress?: (p: SeedProgress) => void,
): Promise<SeedSummary> {
  validateSeedOptions(options);
  const config = loadConfig();
  const secrets =
    options.secrets ??
    (await openKeyring(database, options.secretKey ? { ...config, secretKey: options.secretKey } : config))
      .secrets;
  const seal = await secrets.sealer();
  const window = { since: options.since.getTime(), until: options.until.getTime() };
  const counts = new CountDistribution(options.messagesPerConversation);
  const first = await firstOrdinal(database, options.seed);
  const tenants: TenantContext[] = [];
  for (let i = 0; i < options.tenants; i++)
    tenants.push(buildTenant(options.seed, first + i, options.conversations, window));

  const progress: SeedProgress = {
    phase: 'accounts',
    messages: 0,
    totalMessages: Math.round(options.tenants * options.conversations * counts.mean),
  };
  const report = (phase: string) => {
    progress.phase = phase;
    onProgress?.({ ...progress });
  };
  report('accounts');

  const hashes = new Map<string, string>();
  await Promise.all(
    tenants.flatMap((t) => t.team.map(async (m) => hashes.set(m.id, await hashPassword(m.password, m.salt)))),
  );

  // PostgreSQL loads the big tables over two connections: COPY is CPU-bound in the
  // server, and generating rows takes this process a small fraction of that time.
  const streams = database.kind === 'postgres' ? 2 : 1;
  const rowCounts: Record<string, number> = {};
  const load = async (
    table: string,
    columns: readonly string[],
    rows: (part: number, parts: number) => Iterable<string>,
    parts = 1,
  ) => {
    rowCounts[table] = 0;
    function* counted(part: number) {
      for (const row of rows(part, parts)) {
        rowCounts[table]!++;
        yield row;
      }
    }
    await all(
      Array.from({ length: parts }, (_, part) => database.copyIn(table, columns, batched(counted(part)))),
    );
  };
  const perTenant = (spec: TableRows, parts = 1) =>
    load(
      spec.table,
      spec.columns,
      function* (part, of) {
        for (const t of tenants) yield* spec.rows(t, part, of);
      },
      parts,
    );

  try {
    for (const spec of [
      TENANT_TABLE,
      SITE_TABLE,
      teamTable(hashes),
      SETTING_TABLE,
      integrationTable(seal),
      SUBSCRIPTION_TABLE,
      INVOICE_TABLE,
      DOCUMENT_TABLE,
      CHUNK_TABLE,
    ])
      await perTenant(spec);
    report('customers');
    await perTenant(CUSTOMER_TABLE, streams);
    await perTenant(CONSENT_TABLE, streams);

    report('conversations');
    let total = 0;
    await load(
      'conversations',
      CONVERSATION_COLUMNS,
      function* (part, parts) {
        for (const t of tenants) {
          const [from, to] = slice(t.conversations, part, parts);
          for (let i = from; i < to; i++) {
            const plan = planConversation(t, i, counts);
            total += plan.senders.length;
            yield conversationRow(t, plan);
          }
        }
      },
      streams,
    );
    progress.totalMessages = total;

    report('messages');
    await all(
      Array.from({ length: streams }, (_, part) =>
        database.copyIn(
          'messages',
          MESSAGE_COLUMNS,
          messageChunks(tenants, counts, part, streams, progress, onProgress),
        ),
      ),
    );
    rowCounts['messages'] = progress.messages;

    report('revenue');
    await perTenant({
      table: 'revenue_events',
      columns: REVENUE_COLUMNS,
      rows: (t) => revenueRows(t, counts),
    });
    report('activity');
    await perTenant(ACTIVITY_TABLE);
  } catch (err) {
    // Leave no half-seeded tenant behind: deleting the tenants cascades to every table.
    await database.db
      .deleteFrom('tenants')
      .where(
        'id',
        'in',
        tenants.map((t) => t.id),
      )
      .execute()
      .catch(() => {}); // the original error matters more than a failed cleanup
    throw err;
  }
  report('done');
  return {
    tenants: tenants.map((t) => ({ id: t.id, slug: t.slug, name: t.name, plan: t.plan })),
    counts: rowCounts,
  };
}

/** Waits for every load; the first failure is rethrown once all have stopped. */
async function all(loads: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(loads);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Message rows of one partition of the conversations, in chunks of whole rows. */
async function* messageChunks(
  tenants: TenantContext[],
  counts: CountDistribution,
  part: number,
  parts: number,
  progress: SeedProgress,
  onProgress: ((p: SeedProgress) => void) | undefined,
): AsyncGenerator<string> {
  let buffer = '';
  let pending = 0;
  for (const t of tenants) {
    const [from, to] = slice(t.conversations, part, parts);
    for (let i = from; i < to; i++) {
      const plan = planConversation(t, i, counts);
      buffer += messageRows(t, plan);
      pending += plan.senders.length;
      if (buffer.length >= 256 * 1024) {
        yield buffer;
        buffer = '';
        progress.messages += pending;
        pending = 0;
        onProgress?.({ ...progress });
      }
    }
  }
  if (buffer) yield buffer;
  progress.messages += pending;
  onProgress?.({ ...progress });
}
