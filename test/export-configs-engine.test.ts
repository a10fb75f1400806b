import { parse as parseCsv } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateXML } from 'xmllint-wasm';
import { selectedFields } from '../src/collect/query.ts';
import { acceptedExportRequest, type ExportRequest } from '../src/collect/request.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { xsdFor } from '../src/format/xml-schema.ts';
import type { ExportConfig } from '../src/domain/export-config.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { compileDefinition, parseDefinition } from '../src/export-configs/definition.ts';
import { fileRequest } from '../src/export-requests/config.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';
import { MARKETING, TECHNICAL, VIP } from './support/fixtures/export-configs.ts';

/**
 * The product documentation's three export configurations, as written, compiled and run by
 * the engine; every output is compared with values computed here from the raw rows, in
 * JavaScript, not by the SQL under test.
 */

/** A note with everything a CSV or JSON writer can get wrong. */
const HOSTILE_NOTE = 'Customer said "it\'s broken",\nthen 🔥 — retried; =SUM(A1:A2) next';

interface Conversation {
  id: string;
  start: bigint;
  day: string;
  customer_id: string | null;
  segment: string | null;
  customer_name: string | null;
  satisfaction: number | null;
  escalated: boolean;
  status: string;
  confidence: number | null;
  topics: string[];
  tags: string[];
  notes: string | null;
  referrer: string | null;
  message_count: number;
}

interface RevenueEvent {
  id: string;
  cents: number;
  occurred: bigint;
  conversation_ids: string[];
  campaign: string | null;
  currency: string;
  customer_id: string | null;
}

/** Conversation value and last-touch credit per conversation, in cents, from the raw rows. */
function revenueOf(conversations: Map<string, Conversation>, events: RevenueEvent[]) {
  const value = new Map<string, number>();
  const credit = new Map<string, number>();
  const touchedEvents = new Map<string, RevenueEvent[]>();
  for (const event of events) {
    const touches = event.conversation_ids
      .map((id) => conversations.get(id))
      .filter((c): c is Conversation => !!c && c.start < event.occurred);
    if (touches.length === 0) continue;
    for (const c of touches) {
      value.set(c.id, (value.get(c.id) ?? 0) + event.cents);
      touchedEvents.set(c.id, [...(touchedEvents.get(c.id) ?? []), event]);
    }
    const last = touches.reduce((a, b) =>
      b.start > a.start || (b.start === a.start && b.id > a.id) ? b : a,
    );
    credit.set(last.id, (credit.get(last.id) ?? 0) + event.cents);
  }
  return { value, credit, touchedEvents };
}

const cents = (text: string) => Math.round(Number(text) * 100);

async function run(t: TestDatabase, request: ExportRequest) {
  const { out, bytes } = sink();
  const outcome = await exportDataset(t.database, request, out);
  return { outcome, text: bytes().toString('utf8') };
}

/** The files a compiled configuration writes, by path, each with its engine request. */
function filesOf(tenantId: string, config: ExportConfig): Map<string, ExportRequest> {
  if (!config.files?.length) return new Map([[config.datasets[0]!, acceptedExportRequest(tenantId, config)]]);
  return new Map(config.files.map((file) => [file.path, fileRequest(tenantId, config, file)]));
}

for (const dialect of DIALECTS) {
  describe(`saved export configurations on ${dialect}`, () => {
    let t: TestDatabase;
    let tenantId: string;
    let tenantZone: string;
    let conversations: Map<string, Conversation>;
    let events: RevenueEvent[];
    let messagesByConversation: Map<string, string[]>;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 240,
        messagesPerConversation: 5,
        seed: 23,
        since: new Date('2026-06-01T00:00:00Z'),
        until: new Date('2026-09-01T00:00:00Z'),
      });
      tenantId = summary.tenants[0]!.id;
      const db = t.database.db;
      // Shape the seeded tenant so each example chooses some rows and leaves others: the
      // topics of the example on a third of the conversations, low confidence and escalation
      // on some of those, large orders, and notes with quotes, newlines, emoji and a formula.
      await sql`UPDATE conversations SET topics_detected = CASE (abs(hashtext(id::text)) % 3)
          WHEN 0 THEN ARRAY['technical_support', 'billing'] WHEN 1 THEN ARRAY['bug_report'] ELSE topics_detected END,
        ai_confidence_avg = CASE WHEN abs(hashtext(id::text || 'c')) % 2 = 0 THEN 0.35 ELSE ai_confidence_avg END,
        escalated = CASE WHEN abs(hashtext(id::text || 'e')) % 3 = 0 THEN true ELSE escalated END,
        internal_notes = CASE WHEN abs(hashtext(id::text || 'n')) % 4 = 0 THEN ${HOSTILE_NOTE} ELSE internal_notes END
        WHERE tenant_id = ${tenantId}`.execute(db);
      await sql`UPDATE customers SET segment = 'enterprise' WHERE tenant_id = ${tenantId} AND abs(hashtext(id::text)) % 3 = 0`.execute(
        db,
      );
      await sql`UPDATE revenue_events SET amount = amount * 40 WHERE tenant_id = ${tenantId} AND abs(hashtext(id::text)) % 2 = 0`.execute(
        db,
      );
      tenantZone = (
        await sql<{ timezone: string }>`SELECT timezone FROM tenants WHERE id = ${tenantId}`.execute(db)
      ).rows[0]!.timezone;

      const rows = await sql<Omit<Conversation, 'start'> & { start: string; confidence: string | null }>`
        SELECT c.id::text AS id, (extract(epoch FROM c.start_timestamp) * 1000000)::bigint::text AS start,
          to_char(c.start_timestamp AT TIME ZONE ${tenantZone}, 'YYYY-MM-DD') AS day,
          c.customer_id::text AS customer_id, cu.segment, c.customer_name, c.satisfaction_score AS satisfaction,
          c.escalated, c.status, c.ai_confidence_avg::text AS confidence, c.topics_detected AS topics, c.tags,
          c.internal_notes AS notes, c.referrer, c.message_count
        FROM conversations c LEFT JOIN customers cu ON cu.id = c.customer_id
        WHERE c.tenant_id = ${tenantId}`.execute(db);
      conversations = new Map(
        rows.rows.map((r) => [
          r.id,
          {
            ...r,
            start: BigInt(r.start),
            confidence: r.confidence === null ? null : Number(r.confidence),
            topics: r.topics ?? [],
            tags: r.tags ?? [],
          },
        ]),
      );
      const ev = await sql<{
        id: string;
        amount: string;
        occurred: string;
        conversation_ids: string[];
        campaign: string | null;
        currency: string;
        customer_id: string | null;
      }>`SELECT id::text AS id, amount::text AS amount, (extract(epoch FROM occurred_at) * 1000000)::bigint::text AS occurred,
          conversation_ids::text[] AS conversation_ids, campaign, currency, customer_id::text AS customer_id
        FROM revenue_events WHERE tenant_id = ${tenantId}`.execute(db);
      events = ev.rows.map((r) => ({ ...r, cents: cents(r.amount), occurred: BigInt(r.occurred) }));
      const messages = await sql<{ id: string; conversation_id: string }>`
        SELECT id::text AS id, conversation_id::text AS conversation_id FROM messages
        WHERE tenant_id = ${tenantId} ORDER BY created_at, id`.execute(db);
      messagesByConversation = new Map();
      for (const m of messages.rows)
        messagesByConversation.set(m.conversation_id, [
          ...(messagesByConversation.get(m.conversation_id) ?? []),
          m.id,
        ]);
    }, 120_000);
    afterAll(() => t.drop());

    it('VIP Customer Conversations: one CSV of the six columns, the rows and revenue computed from the raw rows', async () => {
      const config = compileDefinition(tenantId, parseDefinition(VIP));
      expect(config.package).toBe('none');
      const { value, credit } = revenueOf(conversations, events);
      const expected = [...conversations.values()].filter(
        (c) =>
          (c.segment === 'enterprise' || c.segment === 'vip') &&
          c.satisfaction !== null &&
          c.satisfaction >= 4 &&
          (value.get(c.id) ?? 0) >= 100_000,
      );
      // The shaped fixture must make the example choose rows and leave others.
      expect(expected.length).toBeGreaterThan(0);
      expect(expected.length).toBeLessThan(conversations.size);

      const { text } = await run(t, acceptedExportRequest(tenantId, config));
      const rows = parseCsv(text, { columns: true }) as Record<string, string>[];
      expect(text.split('\n')[0]).toBe(VIP.columns.join(','));
      expect(rows.map((r) => r.conversation_id).sort()).toEqual(expected.map((c) => c.id).sort());
      for (const row of rows) {
        const c = conversations.get(row.conversation_id!)!;
        expect(cents(row.attributed_revenue!)).toBe(credit.get(c.id) ?? 0);
        expect(row.escalated).toBe(String(c.escalated));
        expect(Number(row.satisfaction_score)).toBe(c.satisfaction);
      }
    });

    it('Technical Escalation Analysis: CSV is a package of the conversations with annotations and their messages', async () => {
      // Full personal data, so the notes can be compared as stored (the default level scrubs names in them).
      const config = compileDefinition(tenantId, parseDefinition({ ...TECHNICAL, pii: 'full' }));
      expect(config.package).toBe('zip');
      const files = filesOf(tenantId, config);
      expect([...files.keys()]).toEqual(['conversations', 'messages']);
      const chosen = [...conversations.values()].filter(
        (c) =>
          c.escalated &&
          c.topics.some((x) => TECHNICAL.filters.topics.includes(x)) &&
          c.confidence !== null &&
          c.confidence <= 0.5,
      );
      expect(chosen.length).toBeGreaterThan(0);
      expect(chosen.length).toBeLessThan(conversations.size);

      const convs = parseCsv((await run(t, files.get('conversations')!)).text, { columns: true }) as Record<
        string,
        string
      >[];
      expect(convs.map((r) => r.conversation_id).sort()).toEqual(chosen.map((c) => c.id).sort());
      const header = Object.keys(convs[0]!);
      expect(header.slice(-2)).toEqual(['resolution_notes', 'follow_up_required']);
      for (const row of convs) {
        const c = conversations.get(row.conversation_id!)!;
        expect(row.follow_up_required).toBe(String(c.tags.includes('follow-up')));
        expect(row.resolution_notes).toBe(c.notes ?? '');
      }
      expect(convs.some((r) => r.resolution_notes === HOSTILE_NOTE)).toBe(true);

      const messages = parseCsv((await run(t, files.get('messages')!)).text, { columns: true }) as Record<
        string,
        string
      >[];
      const expectedMessages = chosen.flatMap((c) => messagesByConversation.get(c.id) ?? []);
      expect(messages.map((m) => m.message_id).sort()).toEqual(expectedMessages.sort());
    });

    it('Technical Escalation Analysis as JSON: one file, each conversation with its messages nested in order', async () => {
      const config = compileDefinition(
        tenantId,
        parseDefinition({ ...TECHNICAL, format: 'json', pii: 'full' }),
      );
      expect(config.package).toBe('none');
      const { text } = await run(t, acceptedExportRequest(tenantId, config));
      const doc = JSON.parse(text) as {
        data: {
          conversation_id: string;
          messages: { message_id: string; message_content: string | null }[];
          resolution_notes: string | null;
        }[];
      };
      expect(doc.data.length).toBeGreaterThan(0);
      for (const row of doc.data) {
        expect(row.messages.map((m) => m.message_id)).toEqual(
          messagesByConversation.get(row.conversation_id) ?? [],
        );
        const c = conversations.get(row.conversation_id)!;
        expect(row.resolution_notes).toBe(c.notes);
      }
      // Anonymized, the nested messages follow the messages dataset's own rules: their text is
      // what an export of the messages dataset at the same level writes.
      const anonymized = compileDefinition(
        tenantId,
        parseDefinition({ ...TECHNICAL, format: 'json', pii: 'complete' }),
      );
      const hidden = JSON.parse(
        (await run(t, acceptedExportRequest(tenantId, anonymized))).text,
      ) as typeof doc;
      const nested = hidden.data.flatMap((r) => r.messages);
      expect(nested.length).toBeGreaterThan(0);
      const messagesExport = JSON.parse(
        (
          await run(
            t,
            acceptedExportRequest(tenantId, {
              ...anonymized,
              datasets: ['messages'],
              columns: null,
              filters: {},
            }),
          )
        ).text,
      ) as { data: { message_id: string; message_content: string | null }[] };
      const contentById = new Map(messagesExport.data.map((m) => [m.message_id, m.message_content]));
      for (const m of nested) expect(m.message_content).toBe(contentById.get(m.message_id));
      const plain = new Map(
        doc.data.flatMap((r) => r.messages).map((m) => [m.message_id, m.message_content]),
      );
      expect(nested.some((m) => m.message_content !== plain.get(m.message_id))).toBe(true);
    });

    it('Technical Escalation Analysis as XML: messages nested as elements, valid against the XSD of the export', async () => {
      const config = compileDefinition(
        tenantId,
        parseDefinition({ ...TECHNICAL, format: 'xml', pii: 'full' }),
      );
      const request = acceptedExportRequest(tenantId, config);
      const { text } = await run(t, request);
      const xsd = xsdFor({
        dataset: 'conversations',
        fields: selectedFields(REFERENCE_DATAMAP.datasets.conversations!, request),
      });
      const validation = await validateXML({
        xml: [{ fileName: 'conversations.xml', contents: text }],
        schema: [{ fileName: 'conversations.xsd', contents: xsd }],
      });
      expect(validation.errors).toEqual([]);
      const records = text.split('<record>').slice(1);
      expect(records.length).toBeGreaterThan(0);
      for (const record of records) {
        const id = /<conversation_id>([^<]+)<\/conversation_id>/.exec(record)![1]!;
        const nested = /<messages>([\s\S]*?)<\/messages>/.exec(record)?.[1] ?? '';
        const ids = [...nested.matchAll(/<message_id>([^<]+)<\/message_id>/g)].map((m) => m[1]);
        expect(ids).toEqual(messagesByConversation.get(id) ?? []);
      }
    });

    it('Marketing Attribution Data: a package of the selection, its revenue, its campaigns and two aggregations', async () => {
      const config = compileDefinition(tenantId, parseDefinition(MARKETING));
      const files = filesOf(tenantId, config);
      expect([...files.keys()]).toEqual([
        'conversations',
        'revenue_attribution',
        'marketing_campaigns',
        'aggregations/daily_totals',
        'aggregations/channel_performance',
      ]);
      const { value, credit, touchedEvents } = revenueOf(conversations, events);
      const hosts = MARKETING.filters.referrer_contains;
      const chosen = [...conversations.values()].filter(
        (c) => value.has(c.id) && !!c.referrer && hosts.some((h) => c.referrer!.toLowerCase().includes(h)),
      );
      expect(chosen.length).toBeGreaterThan(0);
      const chosenIds = new Set(chosen.map((c) => c.id));

      const convs = parseCsv((await run(t, files.get('conversations')!)).text, { columns: true }) as Record<
        string,
        string
      >[];
      expect(convs.map((r) => r.conversation_id).sort()).toEqual([...chosenIds].sort());
      // join_with marketing_campaigns: each conversation names the campaign of its latest event.
      for (const row of convs) {
        const latest = touchedEvents
          .get(row.conversation_id!)!
          .filter((e) => e.campaign !== null)
          .sort((a, b) =>
            a.occurred === b.occurred ? (a.id < b.id ? 1 : -1) : a.occurred < b.occurred ? 1 : -1,
          )[0];
        expect(row.campaign).toBe(latest?.campaign ?? '');
      }

      // Revenue attribution: the events one of the chosen conversations preceded.
      const chosenEvents = events.filter((e) =>
        e.conversation_ids.some((id) => chosenIds.has(id) && conversations.get(id)!.start < e.occurred),
      );
      const attribution = parseCsv((await run(t, files.get('revenue_attribution')!)).text, {
        columns: true,
      }) as Record<string, string>[];
      expect(attribution.length).toBe(chosenEvents.length);
      expect(attribution.map((r) => cents(r.total_revenue!)).sort((a, b) => a - b)).toEqual(
        chosenEvents.map((e) => e.cents).sort((a, b) => a - b),
      );

      // Campaigns: per campaign and currency over the same events.
      const campaigns = parseCsv((await run(t, files.get('marketing_campaigns')!)).text, {
        columns: true,
      }) as Record<string, string>[];
      const perCampaign = new Map<string, { conversions: number; cents: number; customers: Set<string> }>();
      for (const e of chosenEvents) {
        const key = `${e.campaign ?? '(none)'}|${e.currency}`;
        const entry = perCampaign.get(key) ?? { conversions: 0, cents: 0, customers: new Set<string>() };
        entry.conversions += 1;
        entry.cents += e.cents;
        if (e.customer_id) entry.customers.add(e.customer_id);
        perCampaign.set(key, entry);
      }
      expect(campaigns.map((r) => `${r.campaign}|${r.currency}`).sort()).toEqual(
        [...perCampaign.keys()].sort(),
      );
      for (const row of campaigns) {
        const expected = perCampaign.get(`${row.campaign}|${row.currency}`)!;
        expect(Number(row.conversions)).toBe(expected.conversions);
        expect(cents(row.revenue!)).toBe(expected.cents);
        expect(Number(row.customers)).toBe(expected.customers.size);
      }

      // daily_totals: per day of the start in the tenant's zone.
      const daily = parseCsv((await run(t, files.get('aggregations/daily_totals')!)).text, {
        columns: true,
      }) as Record<string, string>[];
      const perDay = new Map<string, { n: number; value: number; credit: number }>();
      for (const c of chosen) {
        const entry = perDay.get(c.day) ?? { n: 0, value: 0, credit: 0 };
        entry.n += 1;
        entry.value += value.get(c.id) ?? 0;
        entry.credit += credit.get(c.id) ?? 0;
        perDay.set(c.day, entry);
      }
      expect(daily.map((r) => r.date)).toEqual([...perDay.keys()].sort());
      for (const row of daily) {
        const expected = perDay.get(row.date!)!;
        expect(Number(row.conversations)).toBe(expected.n);
        expect(Number(row.conversations_with_revenue)).toBe(expected.n);
        expect(cents(row.conversation_value!)).toBe(expected.value);
        expect(cents(row.attributed_revenue!)).toBe(expected.credit);
      }

      // channel_performance: per referrer host, read with the WHATWG URL parser.
      const channels = parseCsv((await run(t, files.get('aggregations/channel_performance')!)).text, {
        columns: true,
      }) as Record<string, string>[];
      const perChannel = new Map<string, number>();
      for (const c of chosen) {
        const host = new URL(c.referrer!).hostname.replace(/^www\./, '');
        perChannel.set(host, (perChannel.get(host) ?? 0) + 1);
      }
      expect(Object.fromEntries(channels.map((r) => [r.channel, Number(r.conversations)]))).toEqual(
        Object.fromEntries(perChannel),
      );
      for (const row of channels) expect(Number(row.conversion_rate)).toBe(100);
    });

    it('passes output shaping through to a configuration of one file, and refuses it for a package', async () => {
      const config = compileDefinition(
        tenantId,
        parseDefinition({
          ...VIP,
          rename: { attributed_revenue: 'Revenue' },
          convert: { escalated: 'yes_no' },
        }),
      );
      const { text } = await run(t, acceptedExportRequest(tenantId, config));
      const rows = parseCsv(text, { columns: true }) as Record<string, string>[];
      expect(Object.keys(rows[0]!)).toEqual([...VIP.columns.slice(0, 4), 'Revenue', 'escalated']);
      for (const row of rows)
        expect(row.escalated).toBe(conversations.get(row.conversation_id!)!.escalated ? 'yes' : 'no');
      expect(() =>
        compileDefinition(tenantId, parseDefinition({ ...MARKETING, rename: { referrer: 'Source' } })),
      ).toThrow(/rename: output shaping applies to a configuration of one file/);
    });

    it('names what is unknown and lists what is allowed', () => {
      const refused = (def: unknown) => {
        try {
          compileDefinition(tenantId, parseDefinition(def));
        } catch (err) {
          expect(err).toBeInstanceOf(FerryError);
          return (err as FerryError).message;
        }
        throw new Error('accepted');
      };
      expect(refused({ ...VIP, filters: { mood: 'happy' } })).toMatch(/filters\.mood.*customer_segments/);
      expect(refused({ ...VIP, filters: { satisfaction_score: { least: 4 } } })).toMatch(/min, max/);
      expect(refused({ ...VIP, columns: ['conversation_id', 'shoe_size'] })).toMatch(
        /shoe_size.*attributed_revenue/,
      );
      expect(refused({ ...MARKETING, join_with: 'weather' })).toMatch(/join_with.*marketing_campaigns/);
      expect(refused({ ...MARKETING, aggregations: ['daily_totals', 'hourly_vibes'] })).toMatch(
        /aggregations\[1\].*hourly_vibes.*channel_performance/,
      );
      expect(refused({ ...VIP, shoe: 1 })).toMatch(/shoe.*export_name/);
      expect(refused({ ...MARKETING, data_types: ['conversations', 'team_members'] })).toMatch(
        /team_members/,
      );
    });
  });
}
