import { parse } from 'csv-parse/sync';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedOptionsFromFlags } from '../src/cli/seed.ts';
import type { Database } from '../src/db/database.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { CountDistribution, planConversation } from '../src/seed/conversation-plan.ts';
import { MESSAGE_COLUMNS, messageRows } from '../src/seed/conversation-rows.ts';
import { HOSTILE_TEXTS } from '../src/seed/phrases.ts';
import { luhnDigit, Rng } from '../src/seed/random.ts';
import { type SeedOptions, type SeedSummary, seed } from '../src/seed/seed.ts';
import { buildTenant } from '../src/seed/tenant.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { testSecrets } from './support/keyring.ts';

const KEY = 'seed-test-secret-key-0123456789abcdef';
const OPTIONS: SeedOptions = {
  tenants: 2,
  conversations: 50,
  messagesPerConversation: 8,
  seed: 42,
  since: new Date('2025-01-01T00:00:00Z'),
  until: new Date('2025-04-01T00:00:00Z'),
  secretKey: KEY,
};
const TABLES = [
  'tenants',
  'sites',
  'team_members',
  'customers',
  'consent_records',
  'conversations',
  'messages',
  'documents',
  'document_chunks',
  'revenue_events',
  'integrations',
  'settings',
  'activity_logs',
  'subscriptions',
  'invoices',
];

async function rows<T>(database: Database, sql: string): Promise<T[]> {
  const { sql: raw } = await import('kysely');
  const result = await raw.raw<T>(sql).execute(database.db);
  return result.rows;
}

/** SHA-256 of a table's rows in id order, as PostgreSQL prints them. */
async function tableHash(database: Database, table: string): Promise<string> {
  const hash = createHash('sha256');
  const out = database.copyOut({
    projection: '*',
    from: `FROM ${table} WHERE true{{KEY_RANGE}}`,
    key: ['id'],
    options: 'FORMAT csv',
  });
  for await (const chunk of out) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('seed generator (pure parts)', () => {
  it('draws message counts with the requested mean', () => {
    const counts = new CountDistribution(8);
    expect(counts.min).toBe(2);
    expect(counts.max).toBe(20);
    expect(counts.mean).toBeCloseTo(8, 6);
    const rng = new Rng(7);
    let sum = 0;
    for (let i = 0; i < 50_000; i++) sum += counts.draw(rng);
    expect(sum / 50_000).toBeGreaterThan(7.9);
    expect(sum / 50_000).toBeLessThan(8.1);
    expect(new CountDistribution(1).draw(rng)).toBe(1);
  });

  it('writes RFC 4180 rows that parse back to the generated text, in every language', () => {
    const window = { since: OPTIONS.since.getTime(), until: OPTIONS.until.getTime() };
    const counts = new CountDistribution(8);
    const languages = new Set<string>();
    const hostile = new Set<string>();
    let cards = 0;
    for (let ordinal = 1; ordinal <= 8; ordinal++) {
      const ctx = buildTenant(42, ordinal, 400, window);
      for (let i = 0; i < ctx.conversations; i++) {
        const plan = planConversation(ctx, i, counts);
        const records = parse(messageRows(ctx, plan), { relax_quotes: false }) as string[][];
        expect(records).toHaveLength(plan.senders.length);
        for (const record of records) {
          expect(record).toHaveLength(MESSAGE_COLUMNS.length);
          const content = record[6]!;
          languages.add(record[13]!);
          if (HOSTILE_TEXTS.includes(content)) hostile.add(content);
          for (const m of content.matchAll(/\b4\d{3}(?: ?\d{4}){3}\b/g)) {
            const digits = m[0].replaceAll(' ', '');
            expect(luhnDigit(digits.slice(0, -1))).toBe(Number(digits.at(-1)));
            cards++;
          }
          expect(Number(record[12])).toBe([...content].length);
        }
      }
    }
    expect([...languages].sort()).toEqual(['de', 'en', 'es', 'fr', 'ja', 'pt']);
    expect(hostile.size).toBeGreaterThan(5);
    expect(cards).toBeGreaterThan(0);
  });

  it('names the bad flag', () => {
    const flags = { tenants: '1', conversations: '300', messagesPerConversation: '8', seed: '42' };
    const message = (f: Partial<typeof flags> & { since?: string; until?: string }) => {
      try {
        seedOptionsFromFlags({ ...flags, ...f });
      } catch (err) {
        expect(err).toBeInstanceOf(FerryError);
        return (err as Error).message;
      }
      return 'no error';
    };
    expect(message({ tenants: '0' })).toMatch(/^--tenants: /);
    expect(message({ conversations: 'many' })).toMatch(/^--conversations: /);
    expect(message({ messagesPerConversation: '2.5' })).toMatch(/^--messages-per-conversation: /);
    expect(message({ seed: '-1' })).toMatch(/^--seed: /);
    expect(message({ since: '2025-02-30' })).toMatch(/^--since: /);
    expect(message({ since: '2025-03-01', until: '2025-02-01' })).toMatch(/^--since: must be before/);
    const now = Date.UTC(2025, 5, 15, 13, 45);
    const options = seedOptionsFromFlags(flags, now);
    expect(options.until.toISOString()).toBe('2025-06-15T00:00:00.000Z');
    expect(options.since.toISOString()).toBe('2025-03-17T00:00:00.000Z');
  });
});

for (const dialect of DIALECTS) {
  describe(`seed on ${dialect}`, () => {
    let t: TestDatabase;
    let summary: SeedSummary;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      summary = await seed(t.database, OPTIONS);
    });
    afterAll(() => t?.drop());

    it('reports the rows it wrote, table by table', async () => {
      expect(summary.tenants.map((x) => x.slug)).toEqual([
        expect.stringMatching(/-42-1$/),
        expect.stringMatching(/-42-2$/),
      ]);
      expect(summary.tenants.map((x) => x.plan)).toEqual(['pro', 'starter']);
      for (const table of TABLES) {
        const [row] = await rows<{ n: number }>(t.database, `SELECT count(*)::int AS n FROM ${table}`);
        expect(row!.n, table).toBe(summary.counts[table]);
        expect(row!.n, table).toBeGreaterThan(0);
      }
      expect(summary.counts['conversations']).toBe(100);
      const [m] = await rows<{ n: number }>(
        t.database,
        'SELECT sum(message_count)::int AS n FROM conversations',
      );
      expect(summary.counts['messages']).toBe(m!.n);
      const tenants = await rows<{ timezone: string; home_country: string }>(
        t.database,
        'SELECT timezone, home_country FROM tenants ORDER BY slug',
      );
      expect(tenants.map((x) => x.home_country).sort()).toEqual(['DE', 'US']);
    });

    it('keeps every conversation consistent with its messages', async () => {
      const bad = await rows(
        t.database,
        `SELECT c.id FROM conversations c
         JOIN (SELECT conversation_id,
                      count(*) AS total,
                      count(*) FILTER (WHERE sender_type = 'customer') AS customer,
                      count(*) FILTER (WHERE sender_type = 'ai') AS ai,
                      count(*) FILTER (WHERE sender_type = 'human') AS human,
                      avg(confidence_score) AS confidence,
                      max(created_at) AS last_message,
                      min(created_at) AS first_message,
                      bool_and(sender_type <> 'human' OR sender_id = (SELECT assigned_agent_id::text FROM conversations x WHERE x.id = conversation_id)) AS agent_ok
               FROM messages GROUP BY conversation_id) m ON m.conversation_id = c.id
         WHERE c.message_count <> m.total OR c.customer_message_count <> m.customer
            OR c.ai_message_count <> m.ai OR c.human_message_count <> m.human
            OR abs(coalesce(c.ai_confidence_avg, -1) - coalesce(m.confidence, -1)) > 1e-9
            OR c.start_timestamp <> m.first_message
            OR (c.status = 'in_progress') <> (c.end_timestamp IS NULL)
            OR c.end_timestamp < m.last_message
            OR c.last_updated < m.last_message
            OR (c.status = 'resolved') <> (c.resolution_time_minutes IS NOT NULL)
            OR c.resolution_time_minutes <> round(extract(epoch FROM c.end_timestamp - c.start_timestamp) / 60)
            OR c.escalated <> (m.human > 0)
            OR (c.assigned_agent_id IS NOT NULL) <> c.escalated
            OR NOT m.agent_ok
            OR c.start_timestamp < '${OPTIONS.since.toISOString()}' OR coalesce(c.end_timestamp, m.last_message) >= '${OPTIONS.until.toISOString()}'`,
      );
      expect(bad).toEqual([]);
      const [orphans] = await rows<{ n: number }>(
        t.database,
        'SELECT count(*)::int AS n FROM conversations c WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)',
      );
      expect(orphans!.n).toBe(0);
      const sources = await rows<{ n: number }>(
        t.database,
        `SELECT count(*)::int AS n FROM messages m, jsonb_array_elements_text(m.content_sources) s(id)
         WHERE m.sender_type = 'ai' AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id::text = s.id AND d.tenant_id = m.tenant_id)`,
      );
      expect(sources[0]!.n).toBe(0);
    });

    it('links revenue events to earlier conversations of the same customer, oldest first', async () => {
      const bad = await rows(
        t.database,
        `SELECT r.id, u.ord FROM revenue_events r
         CROSS JOIN LATERAL unnest(r.conversation_ids) WITH ORDINALITY u(cid, ord)
         LEFT JOIN conversations c ON c.id = u.cid
         WHERE c.id IS NULL OR c.customer_id IS DISTINCT FROM r.customer_id
            OR c.start_timestamp >= r.occurred_at OR coalesce(c.end_timestamp, c.last_updated) >= r.occurred_at
            OR EXISTS (SELECT 1 FROM unnest(r.conversation_ids) WITH ORDINALITY v(cid2, ord2)
                       JOIN conversations c2 ON c2.id = v.cid2
                       WHERE v.ord2 > u.ord AND c2.start_timestamp < c.start_timestamp)`,
      );
      expect(bad).toEqual([]);
      const [empty] = await rows<{ n: number }>(
        t.database,
        'SELECT count(*)::int AS n FROM revenue_events WHERE cardinality(conversation_ids) = 0',
      );
      expect(empty!.n).toBe(0);
    });

    it('seals integration credentials and hashes passwords', async () => {
      const integrations = await rows<{ credentials_encrypted: string; credentials_hint: string }>(
        t.database,
        'SELECT credentials_encrypted, credentials_hint FROM integrations',
      );
      const secrets = await testSecrets(t.database, KEY);
      for (const i of integrations) {
        expect(i.credentials_encrypted).toMatch(/^v2:/);
        const secret = JSON.parse(await secrets.open(i.credentials_encrypted)) as Record<string, string>;
        const token = Object.values(secret)[0]!;
        expect(token.length).toBeGreaterThan(12);
        expect(i.credentials_encrypted).not.toContain(token);
        expect(i.credentials_hint).toBe(`••••${token.slice(-4)}`);
      }
      const members = await rows<{ password_hash: string }>(
        t.database,
        'SELECT password_hash FROM team_members',
      );
      for (const m of members)
        expect(m.password_hash).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/);
      expect(new Set(members.map((m) => m.password_hash)).size).toBe(members.length);
    });

    it('writes timestamps with microseconds, as PostgreSQL now() does', async () => {
      for (const [table, column] of [
        ['messages', 'created_at'],
        ['conversations', 'start_timestamp'],
        ['documents', 'created_at'],
        ['customers', 'created_at'],
        ['revenue_events', 'occurred_at'],
      ] as const) {
        const [counts] = await rows<{ n: number; sub_ms: number; ms_only: number }>(
          t.database,
          `SELECT count(*)::int AS n,
                  count(*) FILTER (WHERE extract(microseconds FROM ${column})::bigint % 1000 <> 0)::int AS sub_ms,
                  count(*) FILTER (WHERE extract(microseconds FROM ${column})::bigint % 1000 = 0
                                     AND extract(microseconds FROM ${column})::bigint % 1000000 <> 0)::int AS ms_only
           FROM ${table}`,
        );
        expect(counts!.n, table).toBeGreaterThan(0);
        // Only whole seconds are left without digits below the millisecond.
        expect(counts!.ms_only, `${table}.${column} cut to milliseconds`).toBe(0);
        expect(counts!.sub_ms, `${table}.${column} with microseconds`).toBeGreaterThan(counts!.n * 0.9);
      }
    });

    it('stores hostile text byte for byte', async () => {
      const found = await rows<{ content: string }>(
        t.database,
        `SELECT DISTINCT content FROM messages WHERE content IN (${HOSTILE_TEXTS.map((h) => `'${h.replaceAll("'", "''")}'`).join(', ')})`,
      );
      expect(found.length).toBeGreaterThan(0);
      for (const f of found) expect(HOSTILE_TEXTS).toContain(f.content);
    });

    it('gives identical rows for the same seed and different rows for another seed', async () => {
      const again = await createTestDatabase(dialect);
      const other = await createTestDatabase(dialect);
      try {
        await seed(again.database, OPTIONS);
        await seed(other.database, { ...OPTIONS, seed: 43 });
        for (const table of ['conversations', 'messages', 'customers', 'revenue_events', 'document_chunks']) {
          const first = await tableHash(t.database, table);
          expect(await tableHash(again.database, table), table).toBe(first);
          expect(await tableHash(other.database, table), table).not.toBe(first);
        }
      } finally {
        await again.drop();
        await other.drop();
      }
    });

    it('adds new tenants when seeded again', async () => {
      const more = await seed(t.database, { ...OPTIONS, tenants: 1, conversations: 5 });
      expect(more.tenants[0]!.slug).toMatch(/-42-3$/);
      const [n] = await rows<{ n: number }>(t.database, 'SELECT count(*)::int AS n FROM tenants');
      expect(n!.n).toBe(3);
    });
  });
}

describe('seed ids', () => {
  it('gives every conversation of 3 × 20,000 a distinct id (item streams have 128-bit seeds)', async () => {
    const { buildTenant } = await import('../src/seed/tenant.ts');
    const { planConversation, CountDistribution } = await import('../src/seed/conversation-plan.ts');
    const window = { since: Date.parse('2026-06-01'), until: Date.parse('2026-11-01') };
    const counts = new CountDistribution(8);
    const ids = new Set<string>();
    for (let ordinal = 1; ordinal <= 3; ordinal++) {
      const tenant = buildTenant(7, ordinal, 20_000, window);
      for (let i = 0; i < 20_000; i++) ids.add(planConversation(tenant, i, counts).id);
    }
    expect(ids.size).toBe(60_000);
  });
});
