import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { chatwootSource } from '../src/imports/sources/chatwoot.ts';
import {
  countryCode,
  htmlToText,
  isBotName,
  isoTime,
  languageTag,
} from '../src/imports/sources/competitor.ts';
import { freshdeskSource } from '../src/imports/sources/freshdesk.ts';
import { helpscoutSource } from '../src/imports/sources/helpscout.ts';
import { intercomSource } from '../src/imports/sources/intercom.ts';
import { zendeskSource } from '../src/imports/sources/zendesk.ts';
import {
  DEFAULT_IMPORT_LIMITS,
  IMPORT_ENTITIES,
  type ImportEntity,
  type ImportInput,
  type ImportItem,
  type ImportSource,
} from '../src/imports/types.ts';

/**
 * The competitor importers (docs/migration/) over hand-written, hostile exports in the shapes
 * the vendors' APIs return (test/fixtures/imports/<source>/): every item is compared field by
 * field with what the mapping tables of the docs promise. No database is involved: the
 * sources are iterated entity by entity, as the engine does.
 */

const FIXTURES = new URL('./fixtures/imports/', import.meta.url).pathname;

function inputOf(name: string): ImportInput {
  const root = path.join(FIXTURES, name);
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((f) => {
      const full = path.join(dir, f);
      return statSync(full).isDirectory()
        ? walk(full)
        : [path.relative(root, full).split(path.sep).join('/')];
    });
  return { root, files: walk(root).sort() };
}

type Items = Record<ImportEntity, ImportItem[]>;

async function run(source: ImportSource): Promise<Items> {
  const out = {} as Items;
  for (const entity of IMPORT_ENTITIES) {
    out[entity] = [];
    for await (const item of source.items(entity)) out[entity].push(item);
  }
  return out;
}

/** What the engine reads from an item, less where it is and the raw record (checked apart). */
function view(item: ImportItem) {
  const { entity, sourceType, sourceId, values, refs, soft, updatedAt, errors } = item;
  return { entity, sourceType, sourceId, values, refs, soft, updatedAt, errors };
}

const options = { limits: DEFAULT_IMPORT_LIMITS };

type Ref = readonly [ImportEntity, string, string];
const r = ([entity, sourceType, sourceId]: Ref) => ({ entity, sourceType, sourceId });

/** The conversation columns no competitor export fills. */
const UNKNOWN_CONVERSATION = {
  page_url: null,
  referrer: null,
  ip_address: null,
  country: null,
  user_agent: null,
  escalation_reason: null,
  ai_confidence_avg: null,
  topics_detected: [],
  internal_notes: null,
};

interface ExpectedMessage {
  sourceType: string;
  sourceId: string;
  conversation: Ref | null;
  createdAt: string | null;
  updatedAt?: string | null;
  sender: 'customer' | 'ai' | 'human';
  senderId: string | null;
  senderRef?: Ref;
  content: string;
  length: number;
  metadata: Record<string, unknown>;
  edited?: boolean;
  errors?: string[];
}

function message(m: ExpectedMessage) {
  const updated = m.updatedAt === undefined ? m.createdAt : m.updatedAt;
  return {
    entity: 'messages',
    sourceType: m.sourceType,
    sourceId: m.sourceId,
    values: {
      created_at: m.createdAt,
      sender_type: m.sender,
      sender_id: m.senderId,
      content: m.content,
      message_length: m.length,
      confidence_score: null,
      processing_time_ms: null,
      tokens_used: null,
      content_sources: [],
      source_relevance_scores: [],
      language_detected: null,
      sentiment_score: null,
      intent_classification: null,
      entities_extracted: [],
      custom_metadata: m.metadata,
      edited: m.edited ?? false,
      updated_at: updated,
    },
    refs: { conversation_id: m.conversation ? r(m.conversation) : null },
    soft: m.senderRef ? { sender_id: r(m.senderRef) } : undefined,
    updatedAt: updated,
    errors: m.errors,
  };
}

function expectUniqueKeys(items: Items): void {
  for (const entity of IMPORT_ENTITIES) {
    const keys = items[entity].filter((i) => i.sourceId !== '').map((i) => `${i.sourceType}/${i.sourceId}`);
    expect(new Set(keys).size, `${entity} keys are unique`).toBe(keys.length);
  }
}

describe('Zendesk', () => {
  const site: Ref = ['sites', 'site', 'acme'];
  const ticket = (id: string): Ref => ['conversations', 'ticket', id];

  it('maps users, tickets and comments (both comment layouts) field by field', async () => {
    const source = zendeskSource(inputOf('zendesk'), options);
    expect(source.system).toBe('zendesk');
    expect(source.deriveCounts).toBe(true);
    const items = await run(source);
    expectUniqueKeys(items);

    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'acme',
        values: { url: 'https://acme.zendesk.com', name: 'acme.zendesk.com', created_at: null },
        updatedAt: null,
      },
    ]);

    // Agents and admins, in page order (users.json, then users-2.json); the bot (tags ["AI"]) is not a person.
    expect(items.team_members.map(view)).toEqual([
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '9007199254740993',
        values: {
          name: 'Ana Admin',
          email: 'ana@acme.example',
          role: 'admin',
          created_at: '2021-06-01T08:00:00Z',
          last_login_at: '2024-03-01T07:59:59Z',
        },
        updatedAt: '2024-02-01T08:00:00Z',
      },
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '372001',
        values: {
          name: 'Ömer "Oz" Yıldız',
          email: 'omer@acme.example',
          role: 'agent',
          created_at: '2022-01-10T09:30:00Z',
          last_login_at: null,
        },
        updatedAt: '2024-01-10T09:30:00Z',
      },
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '372003',
        values: {
          name: 'Light Agent Without Mail',
          email: null,
          role: 'agent',
          created_at: '2023-09-09T09:09:09Z',
          last_login_at: '2023-10-01T10:00:00Z',
        },
        updatedAt: '2023-09-09T09:09:09Z',
        errors: ['the agent has no email'],
      },
    ]);

    expect(items.customers.map(view)).toEqual([
      {
        entity: 'customers',
        sourceType: 'user',
        sourceId: '9007199254740995',
        values: {
          email: 'maryam@example.com',
          name: '\u200fمريم الحسن',
          phone: '+49 30 1234567',
          country: null,
          segment: 'consumer',
          created_at: '2024-02-28T18:00:00Z',
          updated_at: '2024-03-01T09:00:00Z',
        },
        updatedAt: '2024-03-01T09:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'user',
        sourceId: '481516',
        values: {
          email: null,
          name: "=cmd|' /C calc'!A0",
          phone: null,
          country: null,
          segment: 'consumer',
          created_at: '2024-03-02T07:59:00Z',
          updated_at: '2024-03-02T07:59:00Z',
        },
        updatedAt: '2024-03-02T07:59:00Z',
      },
    ]);
    expect(items.consent_records).toEqual([]);
    expect(items.documents).toEqual([]);

    const refsOf = (customer: string, agent: string | null) => ({
      site_id: r(site),
      customer_id: r(['customers', 'user', customer]),
      assigned_agent_id: agent ? r(['team_members', 'user', agent]) : null,
    });
    expect(items.conversations.map(view)).toEqual([
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '1001',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'zendesk:ticket:1001',
          start_timestamp: '2024-03-01T09:00:00Z',
          end_timestamp: '2024-03-01T10:30:00Z',
          customer_email: 'maryam@example.com',
          customer_name: '\u200fمريم الحسن',
          // From the first customer comment's metadata.
          ip_address: '203.0.113.7',
          user_agent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0',
          language: 'ar',
          status: 'resolved',
          // The bot answered at 09:00:05, an agent publicly at 10:00.
          escalated: true,
          resolution_time_minutes: 90,
          satisfaction_score: 5,
          satisfaction_feedback: 'Quick "and" kind\nthanks 🎉',
          tags: ['refund', 'vip'],
          custom_fields: {
            'Order number': '=SUM(A1:A2)',
            'Plan (360002)': 'pro',
            'Plan (360003)': true,
            _zendesk: {
              subject: 'Refund for order #A-1 "urgent"',
              priority: 'high',
              type: 'question',
              channel: 'web',
              external_id: 'shop-A-1',
              organization: 'Acme "Holdings" GmbH 🏢',
            },
          },
          created_at: '2024-03-01T09:00:00Z',
          last_updated: '2024-03-01T10:30:00Z',
        },
        refs: refsOf('9007199254740995', '372001'),
        updatedAt: '2024-03-01T10:30:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '1002',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'zendesk:ticket:1002',
          start_timestamp: '2024-03-02T08:00:00Z',
          end_timestamp: null,
          customer_email: null,
          customer_name: "=cmd|' /C calc'!A0",
          // The event's system.client (the mail client had no IP address).
          user_agent: 'Mail Client',
          language: 'de-DE',
          status: 'in_progress',
          // Answer Bot replied, no agent did.
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _zendesk: {
              subject: 'Wo ist meine Bestellung?',
              priority: null,
              type: null,
              channel: 'email',
              external_id: null,
            },
          },
          created_at: '2024-03-02T08:00:00Z',
          last_updated: '2024-03-02T08:05:00Z',
        },
        refs: refsOf('481516', null),
        updatedAt: '2024-03-02T08:05:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '1003',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'zendesk:ticket:1003',
          start_timestamp: null,
          end_timestamp: null,
          customer_email: null,
          customer_name: "=cmd|' /C calc'!A0",
          language: 'de-DE',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _zendesk: {
              subject: 'No creation time',
              priority: null,
              type: null,
              channel: 'api',
              external_id: null,
            },
          },
          created_at: null,
          last_updated: '2024-03-03T12:00:00Z',
        },
        refs: refsOf('481516', null),
        updatedAt: '2024-03-03T12:00:00Z',
        errors: ['the ticket has no created_at'],
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '1004',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'zendesk:ticket:1004',
          start_timestamp: '2024-03-03T13:00:00Z',
          end_timestamp: null,
          customer_email: null,
          customer_name: "=cmd|' /C calc'!A0",
          language: 'de-DE',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: ['spam'],
          custom_fields: {
            _zendesk: { subject: 'Spam', priority: null, type: null, channel: 'web', external_id: null },
          },
          created_at: '2024-03-03T13:00:00Z',
          last_updated: '2024-03-03T13:05:00Z',
        },
        refs: refsOf('481516', null),
        updatedAt: '2024-03-03T13:05:00Z',
        errors: ['the ticket is deleted in Zendesk'],
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '1005',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'zendesk:ticket:1005',
          start_timestamp: '2024-03-04T16:00:00Z',
          end_timestamp: null,
          customer_email: 'maryam@example.com',
          customer_name: '\u200fمريم الحسن',
          // The first customer comment's audit metadata.
          ip_address: '2001:db8::7',
          user_agent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)',
          language: 'ar',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          // satisfaction_ratings.json: the newest rating (bad) wins over the ticket's "offered" and the older "good".
          satisfaction_score: 1,
          satisfaction_feedback: 'Zu langsam =(\nnächstes Mal schneller',
          tags: ['login'],
          custom_fields: {
            // A field missing from ticket_fields.json keeps its id.
            '360099': 'orphan field',
            _zendesk: {
              subject: 'Passwort "vergessen"',
              priority: 'low',
              type: null,
              channel: 'web',
              external_id: null,
            },
          },
          created_at: '2024-03-04T16:00:00Z',
          last_updated: '2024-03-04T17:00:00Z',
        },
        refs: refsOf('9007199254740995', '9007199254740993'),
        updatedAt: '2024-03-04T17:00:00Z',
      },
    ]);

    // comments/1001.json first, then audits/1005.json; then ticket_events.json, whose copy of
    // ticket 1001's comment is skipped, and ticket_events-2.json, which repeats comment 6003 at
    // the page boundary.
    expect(items.messages.map(view)).toEqual([
      message({
        sourceType: 'ticket_comment',
        sourceId: '9007199254740997',
        conversation: ticket('1001'),
        createdAt: '2024-03-01T09:00:00Z',
        sender: 'customer',
        senderId: '9007199254740995',
        senderRef: ['customers', 'user', '9007199254740995'],
        content: 'Hello,\nmy order "A-1" arrived broken 😞\u0001',
        length: 39,
        metadata: { internal_note: false, source_part_type: 'Comment', channel: 'web', attachments: [] },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '5002',
        conversation: ticket('1001'),
        createdAt: '2024-03-01T09:00:05Z',
        sender: 'ai',
        senderId: '372002',
        content: 'I can help with refunds. Our policy: 30 days — no questions asked.',
        length: 66,
        metadata: { internal_note: false, source_part_type: 'Comment', channel: 'api', attachments: [] },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '5003',
        conversation: ticket('1001'),
        createdAt: '2024-03-01T09:10:00Z',
        sender: 'human',
        senderId: '372001',
        senderRef: ['team_members', 'user', '372001'],
        content: '=IMPORTXML("http://x") check warehouse first',
        length: 44,
        metadata: { internal_note: true, source_part_type: 'Comment', channel: 'web', attachments: [] },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '5004',
        conversation: ticket('1001'),
        createdAt: '2024-03-01T10:00:00Z',
        sender: 'human',
        senderId: '372001',
        senderRef: ['team_members', 'user', '372001'],
        content: 'Refund issued.\n\nRegards, Ömer',
        length: 29,
        metadata: {
          internal_note: false,
          source_part_type: 'Comment',
          channel: 'web',
          attachments: ['refund receipt.pdf'],
        },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '8101',
        conversation: ticket('1005'),
        // The audit's time: audit events carry none of their own.
        createdAt: '2024-03-04T16:00:00Z',
        sender: 'customer',
        senderId: '9007199254740995',
        senderRef: ['customers', 'user', '9007199254740995'],
        // The plain body, markup and tab as written.
        content: 'Ich kann mich nicht anmelden.\n\t<b>nicht fett</b>',
        length: 48,
        metadata: { internal_note: false, source_part_type: 'Comment', channel: 'web', attachments: [] },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '8103',
        conversation: ticket('1005'),
        createdAt: '2024-03-04T16:30:00Z',
        sender: 'human',
        senderId: '9007199254740993',
        senderRef: ['team_members', 'user', '9007199254740993'],
        content: 'Rückruf: Passwort zurückgesetzt.',
        length: 32,
        metadata: {
          internal_note: false,
          source_part_type: 'VoiceComment',
          channel: 'web',
          attachments: ['aufnahme.mp3'],
        },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '6001',
        conversation: ticket('1002'),
        createdAt: '2024-03-02T08:00:00Z',
        sender: 'customer',
        senderId: '481516',
        senderRef: ['customers', 'user', '481516'],
        content: 'Wo ist meine Bestellung?\r\nDanke',
        length: 31,
        metadata: { internal_note: false, source_part_type: 'Comment', channel: 'Mail', attachments: [] },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '6003',
        conversation: ticket('1002'),
        createdAt: '2024-03-02T08:05:00Z',
        sender: 'ai',
        senderId: '-1',
        content: 'Diese Artikel könnten helfen: »Versand«',
        length: 39,
        metadata: {
          internal_note: false,
          source_part_type: 'Comment',
          channel: 'Answer Bot for Web Widget',
          attachments: [],
        },
      }),
      message({
        sourceType: 'ticket_comment',
        sourceId: '',
        conversation: ticket('1002'),
        createdAt: '2024-03-02T08:05:00Z',
        sender: 'customer',
        senderId: '481516',
        senderRef: ['customers', 'user', '481516'],
        content: 'a comment without an id',
        length: 23,
        metadata: { internal_note: false, source_part_type: 'Comment', channel: 'Web form', attachments: [] },
        errors: ['the comment has no id'],
      }),
    ]);

    expect(source.warnings).toEqual([
      '1 file(s) are not read by the Zendesk import: notes.txt',
      '1 bot user(s) are not imported as team members; their comments are imported as AI messages',
    ]);

    // Where each record is, and the original record for the rejected-items file (ids beyond 2^53 exact).
    const first = items.messages[0]!;
    expect(first.location).toMatch(/^comments\/1001\.json at byte \d+$/);
    expect(first.raw.kind).toBe('json');
    expect((first.raw as { value: { id: unknown; audit_id: unknown } }).value).toMatchObject({
      id: '9007199254740997',
      audit_id: '9007199254740999',
    });
    expect(items.messages[4]!.location).toMatch(/^audits\/1005\.json at byte \d+ \(comment 8101\)$/);
    expect(items.messages[6]!.location).toMatch(/^ticket_events\.json at byte \d+ \(comment 6001\)$/);
    expect(items.team_members[2]!.location).toMatch(/^users-2\.json at byte \d+$/);
  });

  it('reads the files again on every call, with the same items', async () => {
    const source = zendeskSource(inputOf('zendesk'), options);
    const once = [];
    for await (const item of source.items('messages')) once.push(view(item));
    const twice = [];
    for await (const item of source.items('messages')) twice.push(view(item));
    expect(twice).toEqual(once);
    expect(once).toHaveLength(9);
  });

  it('without files: one site named after the system, and warnings that say what is missing', async () => {
    const source = zendeskSource({ root: path.join(FIXTURES, 'zendesk'), files: [] }, options);
    const items = await run(source);
    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'zendesk',
        values: { url: 'import://zendesk', name: 'Zendesk', created_at: null },
        updatedAt: null,
      },
    ]);
    expect(items.conversations).toEqual([]);
    expect(source.warnings).toEqual([
      'no tickets.json: no tickets are imported',
      "no users.json: agents and end users are not imported, and a comment's author is taken as the customer (public comment) or an agent (internal note)",
      'no comments/<ticket id>.json, audits/<ticket id>.json or ticket_events.json: tickets are imported without their comments',
    ]);
  });
});

describe('Intercom', () => {
  const conversation = (id: string): Ref => ['conversations', 'conversation', id];
  const jo = '65f1c0a4b7e9d1a2c3000001';
  const lead = '65f1c0a4b7e9d1a2c3000002';

  it('maps admins, contacts, conversations, their source message and parts field by field', async () => {
    const source = intercomSource(inputOf('intercom'), options);
    expect(source.system).toBe('intercom');
    expect(source.deriveCounts).toBe(true);
    const items = await run(source);
    expectUniqueKeys(items);

    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'xy12ab34',
        values: {
          url: 'https://app.intercom.com/a/apps/xy12ab34',
          name: 'Intercom workspace xy12ab34',
          created_at: null,
        },
        updatedAt: null,
      },
    ]);
    expect(items.team_members.map(view)).toEqual([
      {
        entity: 'team_members',
        sourceType: 'admin',
        sourceId: '814860',
        values: {
          name: 'Lena Löwe',
          email: 'lena@acme.example',
          role: 'agent',
          created_at: null,
          last_login_at: null,
        },
        updatedAt: null,
      },
      {
        entity: 'team_members',
        sourceType: 'admin',
        sourceId: '814861',
        values: {
          name: 'Shared Inbox Teammate',
          email: null,
          role: 'agent',
          created_at: null,
          last_login_at: null,
        },
        updatedAt: null,
        errors: ['the admin has no email'],
      },
    ]);
    expect(items.customers.map(view)).toEqual([
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: jo,
        values: {
          email: 'jo@example.org',
          name: 'Jo "JJ" O\'Neil',
          phone: '+44 20 7946 0000',
          // location.country is an English name.
          country: 'GB',
          segment: 'consumer',
          created_at: '2024-03-01T09:00:00Z',
          updated_at: '2024-03-04T11:00:00Z',
        },
        updatedAt: '2024-03-04T11:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: lead,
        values: {
          email: null,
          name: null,
          phone: null,
          country: 'DE',
          segment: 'consumer',
          created_at: '2024-03-05T09:00:00Z',
          updated_at: '2024-03-05T09:00:00Z',
        },
        updatedAt: '2024-03-05T09:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '',
        values: {
          email: 'no-id@example.org',
          name: 'Contact Without Id',
          phone: null,
          country: null,
          segment: 'consumer',
          created_at: '2024-03-05T09:01:40Z',
          updated_at: '2024-03-05T09:01:40Z',
        },
        updatedAt: '2024-03-05T09:01:40Z',
        errors: ['the contact has no id'],
      },
    ]);

    // conversations/<id>.json first; its copy in the list page (without parts) is skipped; then the NDJSON lines.
    expect(items.conversations.map(view)).toEqual([
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '215469519493912',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'intercom:conversation:215469519493912',
          start_timestamp: '2024-03-04T09:00:00Z',
          // statistics.last_close_at
          end_timestamp: '2024-03-04T10:50:00Z',
          page_url: 'https://shop.example.com/billing?x=1&y="2"',
          customer_email: 'jo@example.org',
          customer_name: 'Jo "JJ" O\'Neil',
          country: 'GB',
          language: 'en-GB',
          status: 'resolved',
          escalated: true,
          escalation_reason: 'routed_to_team',
          resolution_time_minutes: 110,
          satisfaction_score: 4,
          satisfaction_feedback: 'ok\u200f but slow',
          tags: ['billing', 'double-charge 💳'],
          custom_fields: {
            'Order ID': 'A-99',
            'Copilot used': false,
            _intercom: {
              title: 'Billing "question"',
              priority: 'not_priority',
              source_type: 'conversation',
              delivered_as: 'customer_initiated',
              team_assignee_id: '5017691',
              ai_agent_participated: true,
              ai_resolution_state: 'routed_to_team',
            },
          },
          created_at: '2024-03-04T09:00:00Z',
          last_updated: '2024-03-04T11:00:00Z',
        },
        refs: {
          site_id: r(['sites', 'site', 'xy12ab34']),
          customer_id: r(['customers', 'contact', jo]),
          assigned_agent_id: r(['team_members', 'admin', '814860']),
        },
        updatedAt: '2024-03-04T11:00:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '215469519493913',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'intercom:conversation:215469519493913',
          start_timestamp: '2024-03-05T09:00:00Z',
          end_timestamp: null,
          customer_email: null,
          customer_name: null,
          country: 'DE',
          // language_override wins over browser_language.
          language: 'de',
          status: 'in_progress',
          // Fin answered (an admin author flagged from_ai_agent), nobody took over.
          escalated: false,
          resolution_time_minutes: null,
          // No teammate rating: the AI agent's.
          satisfaction_score: 5,
          satisfaction_feedback: 'Danke!',
          tags: [],
          custom_fields: {
            _intercom: {
              title: null,
              priority: 'priority',
              source_type: 'conversation',
              delivered_as: 'customer_initiated',
              team_assignee_id: null,
              ai_agent_participated: true,
              ai_resolution_state: 'assumed_resolution',
            },
          },
          created_at: '2024-03-05T09:00:00Z',
          last_updated: '2024-03-05T09:05:00Z',
        },
        refs: {
          site_id: r(['sites', 'site', 'xy12ab34']),
          customer_id: r(['customers', 'contact', lead]),
          assigned_agent_id: null,
        },
        updatedAt: '2024-03-05T09:05:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '215469519493914',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'intercom:conversation:215469519493914',
          start_timestamp: null,
          end_timestamp: null,
          customer_email: 'jo@example.org',
          customer_name: 'Jo "JJ" O\'Neil',
          country: 'GB',
          language: 'en-GB',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _intercom: {
              title: null,
              priority: null,
              source_type: 'conversation',
              delivered_as: 'customer_initiated',
              team_assignee_id: null,
              ai_agent_participated: false,
              ai_resolution_state: null,
            },
          },
          created_at: null,
          last_updated: '2024-03-05T09:06:40Z',
        },
        refs: {
          site_id: r(['sites', 'site', 'xy12ab34']),
          customer_id: r(['customers', 'contact', jo]),
          assigned_agent_id: null,
        },
        updatedAt: '2024-03-05T09:06:40Z',
        errors: ['the conversation has no created_at'],
      },
    ]);

    expect(items.messages.map(view)).toEqual([
      message({
        sourceType: 'conversation_source',
        sourceId: '215469519493912',
        conversation: conversation('215469519493912'),
        createdAt: '2024-03-04T09:00:00Z',
        sender: 'customer',
        senderId: jo,
        senderRef: ['customers', 'contact', jo],
        content: 'Hi, I was charged twice & need help 💳',
        length: 37,
        metadata: {
          internal_note: false,
          source_part_type: 'source',
          delivered_as: 'customer_initiated',
          attachments: [],
        },
      }),
      message({
        sourceType: 'conversation_part',
        sourceId: '9001',
        conversation: conversation('215469519493912'),
        createdAt: '2024-03-04T09:00:30Z',
        sender: 'ai',
        senderId: '1234567',
        content: 'I can see two charges. Let me check.',
        length: 36,
        metadata: { internal_note: false, source_part_type: 'comment', attachments: [] },
      }),
      // 9002 (assignment) has no body: not a message.
      message({
        sourceType: 'conversation_part',
        sourceId: '9003',
        conversation: conversation('215469519493912'),
        createdAt: '2024-03-04T10:00:00Z',
        sender: 'human',
        senderId: '814860',
        senderRef: ['team_members', 'admin', '814860'],
        content: 'Customer is VIP, refund both?',
        length: 29,
        metadata: { internal_note: true, source_part_type: 'note', attachments: [] },
      }),
      message({
        sourceType: 'conversation_part',
        sourceId: '9004',
        conversation: conversation('215469519493912'),
        createdAt: '2024-03-04T10:26:40Z',
        updatedAt: '2024-03-04T10:28:20Z',
        sender: 'human',
        senderId: '814860',
        senderRef: ['team_members', 'admin', '814860'],
        content: 'Refunded both charges.\nSorry!\n\n- Charge 1\n- Charge 2',
        length: 52,
        metadata: { internal_note: false, source_part_type: 'comment', attachments: [] },
      }),
      message({
        sourceType: 'conversation_part',
        sourceId: '9005',
        conversation: conversation('215469519493912'),
        createdAt: '2024-03-04T10:36:40Z',
        sender: 'customer',
        senderId: jo,
        senderRef: ['customers', 'contact', jo],
        content: '=HYPERLINK("http://evil")',
        length: 25,
        metadata: { internal_note: false, source_part_type: 'comment', attachments: ['screenshot 1.png'] },
      }),
      // 9006 (close) has no body either.
      message({
        sourceType: 'conversation_source',
        sourceId: '215469519493913',
        conversation: conversation('215469519493913'),
        createdAt: '2024-03-05T09:00:00Z',
        sender: 'customer',
        senderId: lead,
        senderRef: ['customers', 'contact', lead],
        content: "Hallo\n\nWie geht's?\u0001 😀 <script>",
        length: 30,
        metadata: {
          internal_note: false,
          source_part_type: 'source',
          delivered_as: 'customer_initiated',
          attachments: [],
        },
      }),
      message({
        sourceType: 'conversation_part',
        sourceId: '9101',
        conversation: conversation('215469519493913'),
        createdAt: '2024-03-05T09:00:05Z',
        sender: 'ai',
        senderId: '814999',
        content: 'Mir geht es gut. Wie kann ich helfen?',
        length: 37,
        metadata: { internal_note: false, source_part_type: 'comment', attachments: [] },
      }),
      message({
        sourceType: 'conversation_source',
        sourceId: '215469519493914',
        conversation: conversation('215469519493914'),
        createdAt: null,
        sender: 'customer',
        senderId: jo,
        senderRef: ['customers', 'contact', jo],
        content: 'no time',
        length: 7,
        metadata: {
          internal_note: false,
          source_part_type: 'source',
          delivered_as: 'customer_initiated',
          attachments: [],
        },
        errors: ['the conversation has no created_at'],
      }),
    ]);

    expect(source.warnings).toEqual([
      '3 conversation part(s) without text (assignments, state changes) are not messages and were not imported',
    ]);
    expect(items.conversations[1]!.location).toBe('conversations.ndjson line 1');
    expect(items.conversations[2]!.location).toBe('conversations.ndjson line 3');
    expect(items.messages[1]!.location).toMatch(
      /^conversations\/215469519493912\.json at byte \d+ \(part 9001\)$/,
    );
    expect((items.messages[1]!.raw as { value: { id: string } }).value.id).toBe('9001');
  });
});

describe('Chatwoot', () => {
  const site: Ref = ['sites', 'site', 'account-7'];
  const conversation = (id: string): Ref => ['conversations', 'conversation', id];

  it('maps agents, contacts, conversations and messages field by field', async () => {
    const source = chatwootSource(inputOf('chatwoot'), options);
    expect(source.system).toBe('chatwoot');
    expect(source.deriveCounts).toBe(true);
    const items = await run(source);
    expectUniqueKeys(items);

    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'account-7',
        values: { url: 'import://chatwoot/accounts/7', name: 'Chatwoot account 7', created_at: null },
        updatedAt: null,
      },
    ]);
    expect(items.team_members.map(view)).toEqual([
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '1',
        values: {
          name: 'Sam Rivera',
          email: 'sam@acme.example',
          role: 'admin',
          created_at: null,
          last_login_at: null,
        },
        updatedAt: null,
      },
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '2',
        values: {
          name: 'Kim Lee',
          email: 'kim@acme.example',
          role: 'agent',
          created_at: null,
          last_login_at: null,
        },
        updatedAt: null,
      },
    ]);
    expect(items.customers.map(view)).toEqual([
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '31',
        values: {
          email: 'zoe@example.fr',
          name: 'Zoé « Z » Dupont',
          phone: '+33612345678',
          country: 'FR',
          segment: 'consumer',
          created_at: '2024-03-04T08:13:20Z',
          updated_at: null,
        },
        updatedAt: '2024-03-05T11:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '32',
        values: {
          email: null,
          name: 'Visitor\u0001',
          phone: null,
          country: null,
          segment: 'consumer',
          created_at: '2024-03-06T10:00:00Z',
          updated_at: null,
        },
        updatedAt: null,
      },
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '',
        values: {
          email: 'orphan@example.org',
          name: 'No Id',
          phone: null,
          country: null,
          segment: 'consumer',
          created_at: '2024-03-06T10:01:40Z',
          updated_at: null,
        },
        updatedAt: null,
        errors: ['the contact has no id'],
      },
    ]);

    expect(items.conversations.map(view)).toEqual([
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '12',
        values: {
          ...UNKNOWN_CONVERSATION,
          // The widget session: contact_inbox.source_id.
          session_id: 'a6f5c1e2-8d3b-4c9a-9f00-1234567890ab',
          start_timestamp: '2024-03-05T09:00:00Z',
          // Resolved: its last activity.
          end_timestamp: '2024-03-05T11:00:00Z',
          page_url: 'https://shop.example.fr/panier?utm_source="news"',
          customer_email: 'zoe@example.fr',
          customer_name: 'Zoé « Z » Dupont',
          ip_address: '198.51.100.23',
          country: 'FR',
          language: 'fr',
          status: 'resolved',
          // The AgentBot answered at 09:00:10, Kim publicly at 09:30.
          escalated: true,
          resolution_time_minutes: 120,
          // From the CSAT survey message.
          satisfaction_score: 2,
          satisfaction_feedback: 'Trop lent =(',
          tags: ['livraison', 'urgent'],
          custom_fields: {
            order: '=A1',
            montant: 42.5,
            _chatwoot: {
              uuid: '5d0f3b2e-7c1a-4f55-9a41-0c6e2b9d8f10',
              inbox_id: '3',
              channel: 'Channel::WebWidget',
              priority: 'high',
              team: 'livraison',
              browser: {
                device_name: 'Macbook',
                browser_name: 'Firefox',
                platform_name: 'macOS',
                browser_version: '123.0',
                platform_version: '14.3',
              },
            },
          },
          created_at: '2024-03-05T09:00:00Z',
          // updated_at is a float of seconds: its microseconds are kept.
          last_updated: '2024-03-05T11:13:20.123456Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'contact', '31']),
          assigned_agent_id: r(['team_members', 'user', '2']),
        },
        updatedAt: '2024-03-05T11:13:20.123456Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '13',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'chatwoot:conversation:9b2c6a1d-0e4f-4c3b-8a7d-5f1e2d3c4b5a',
          start_timestamp: '2024-03-10T12:00:00Z',
          end_timestamp: null,
          customer_email: null,
          customer_name: 'Visitor\u0001',
          language: 'und',
          // pending: the bot still has it.
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _chatwoot: {
              uuid: '9b2c6a1d-0e4f-4c3b-8a7d-5f1e2d3c4b5a',
              inbox_id: '5',
              channel: 'Channel::Api',
              priority: null,
              team: null,
              browser: null,
            },
          },
          created_at: '2024-03-10T12:00:00Z',
          last_updated: '2024-03-10T12:30:00Z',
        },
        refs: { site_id: r(site), customer_id: r(['customers', 'contact', '32']), assigned_agent_id: null },
        updatedAt: '2024-03-10T12:30:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '14',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'chatwoot:conversation:00000000-0000-4000-8000-000000000014',
          start_timestamp: '2024-03-10T12:01:40Z',
          end_timestamp: null,
          customer_email: null,
          customer_name: null,
          language: 'und',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _chatwoot: {
              uuid: '00000000-0000-4000-8000-000000000014',
              inbox_id: null,
              channel: 'Channel::Api',
              priority: null,
              team: null,
              browser: null,
            },
          },
          created_at: '2024-03-10T12:01:40Z',
          last_updated: '2024-03-10T12:01:40Z',
        },
        refs: { site_id: r(site), customer_id: r(['customers', 'contact', '32']), assigned_agent_id: null },
        updatedAt: '2024-03-10T12:01:40Z',
        errors: ['unknown conversation status "archived"'],
      },
    ]);

    expect(items.messages.map(view)).toEqual([
      message({
        sourceType: 'message',
        sourceId: '101',
        conversation: conversation('12'),
        createdAt: '2024-03-05T09:00:00Z',
        updatedAt: '2024-03-05T09:00:00.123456Z',
        sender: 'customer',
        senderId: '31',
        senderRef: ['customers', 'contact', '31'],
        content: 'Bonjour, où est mon colis ? 📦\n« urgent »',
        length: 40,
        metadata: {
          internal_note: false,
          source_part_type: 'incoming',
          content_type: 'text',
          sender_type: 'Contact',
          attachments: [],
        },
      }),
      message({
        sourceType: 'message',
        sourceId: '102',
        conversation: conversation('12'),
        createdAt: '2024-03-05T09:00:10Z',
        updatedAt: '2024-03-05T09:00:10.000001Z',
        sender: 'ai',
        senderId: '5',
        content: 'Je vérifie pour vous… **un instant**',
        length: 36,
        metadata: {
          internal_note: false,
          source_part_type: 'outgoing',
          content_type: 'text',
          sender_type: 'AgentBot',
          attachments: [],
        },
      }),
      // 103 is an activity message.
      message({
        sourceType: 'message',
        sourceId: '104',
        conversation: conversation('12'),
        createdAt: '2024-03-05T09:13:20Z',
        sender: 'human',
        senderId: '2',
        senderRef: ['team_members', 'user', '2'],
        content: '\u200fNote interne : cliente fidèle, =rembourser si besoin',
        length: 53,
        metadata: {
          internal_note: true,
          source_part_type: 'outgoing',
          content_type: 'text',
          sender_type: 'User',
          attachments: [],
        },
      }),
      message({
        sourceType: 'message',
        sourceId: '105',
        conversation: conversation('12'),
        createdAt: '2024-03-05T09:30:00Z',
        updatedAt: '2024-03-05T09:45:00.654321Z',
        sender: 'human',
        senderId: '2',
        senderRef: ['team_members', 'user', '2'],
        content: 'Votre colis arrive demain.',
        length: 26,
        metadata: {
          internal_note: false,
          source_part_type: 'outgoing',
          content_type: 'text',
          sender_type: 'User',
          attachments: ['suivi colis.pdf'],
        },
      }),
      // 106 is the CSAT survey (a template message).
      message({
        sourceType: 'message',
        sourceId: '201',
        conversation: conversation('13'),
        createdAt: '2024-03-10T12:00:00Z',
        sender: 'customer',
        senderId: '32',
        senderRef: ['customers', 'contact', '32'],
        content: 'Hi\u0001, is anyone there?',
        length: 21,
        metadata: {
          internal_note: false,
          source_part_type: 'incoming',
          content_type: 'text',
          sender_type: 'Contact',
          attachments: [],
        },
      }),
      message({
        sourceType: 'message',
        sourceId: '202',
        conversation: conversation('13'),
        createdAt: '2024-03-10T12:00:05Z',
        sender: 'ai',
        senderId: '1',
        content: 'Hello! I am Captain, the AI assistant.',
        length: 38,
        metadata: {
          internal_note: false,
          source_part_type: 'outgoing',
          content_type: 'text',
          sender_type: 'Captain::Assistant',
          attachments: [],
        },
      }),
      message({
        sourceType: 'message',
        sourceId: '',
        conversation: conversation('13'),
        createdAt: null,
        sender: 'customer',
        senderId: '32',
        senderRef: ['customers', 'contact', '32'],
        content: 'a message without id or time',
        length: 28,
        metadata: {
          internal_note: false,
          source_part_type: 'incoming',
          content_type: null,
          sender_type: 'Contact',
          attachments: [],
        },
        errors: ['the message has no id', 'the message has no created_at'],
      }),
    ]);

    expect(source.warnings).toEqual([
      '1 activity message(s) (written by Chatwoot, not by a person or a bot) were not imported',
      '1 template message(s) (written by Chatwoot, not by a person or a bot) were not imported',
    ]);
    expect(items.messages[0]!.location).toMatch(/^messages\/12\.json at byte \d+$/);
    expect(items.messages[4]!.location).toMatch(/^messages\.json at byte \d+$/);
  });
});

describe('Freshdesk', () => {
  const site: Ref = ['sites', 'site', 'freshdesk'];
  const ticket = (id: string): Ref => ['conversations', 'ticket', id];

  it('maps agents, contacts, tickets, descriptions and conversations field by field', async () => {
    const source = freshdeskSource(inputOf('freshdesk'), options);
    expect(source.system).toBe('freshdesk');
    expect(source.deriveCounts).toBe(true);
    const items = await run(source);
    expectUniqueKeys(items);

    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'freshdesk',
        values: { url: 'import://freshdesk', name: 'Freshdesk', created_at: null },
        updatedAt: null,
      },
    ]);
    // Freddy AI is a bot, not a person; Raj holds the Account Administrator role.
    expect(items.team_members.map(view)).toEqual([
      {
        entity: 'team_members',
        sourceType: 'agent',
        sourceId: '43000000001',
        values: {
          name: 'Raj Patel',
          email: 'raj@acme.example',
          role: 'admin',
          created_at: '2023-01-10T08:00:00Z',
          last_login_at: '2024-03-07T07:00:00Z',
        },
        updatedAt: '2024-01-10T08:00:00Z',
      },
      {
        entity: 'team_members',
        sourceType: 'agent',
        sourceId: '43000000003',
        values: {
          name: 'Inês Duarte',
          email: 'ines@acme.example',
          role: 'agent',
          created_at: '2023-03-03T03:03:03Z',
          last_login_at: null,
        },
        updatedAt: '2024-02-02T02:02:02Z',
      },
    ]);
    expect(items.customers.map(view)).toEqual([
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '43000000501',
        values: {
          email: 'li.wei@example.cn',
          name: '李伟',
          phone: '+86 10 5555 0000',
          country: null,
          segment: 'consumer',
          created_at: '2024-02-01T00:00:00Z',
          updated_at: '2024-02-02T00:00:00Z',
        },
        updatedAt: '2024-02-02T00:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'contact',
        sourceId: '43000000502',
        values: {
          email: 'quoted@example.com',
          name: '"Quoted" Name, Jr.',
          phone: '=1+2',
          country: null,
          segment: 'consumer',
          created_at: '2024-02-03T00:00:00Z',
          updated_at: '2024-02-04T00:00:00Z',
        },
        updatedAt: '2024-02-04T00:00:00Z',
      },
    ]);

    const freshdesk = (over: Record<string, unknown>) => ({
      subject: null,
      priority: null,
      source: null,
      channel: null,
      type: null,
      group_id: null,
      is_escalated: false,
      fr_escalated: false,
      nr_escalated: false,
      ...over,
    });
    expect(items.conversations.map(view)).toEqual([
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '5001',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'freshdesk:ticket:5001',
          start_timestamp: '2024-03-06T02:00:00Z',
          // stats.resolved_at
          end_timestamp: '2024-03-06T04:30:00Z',
          customer_email: 'li.wei@example.cn',
          customer_name: '李伟',
          language: 'zh-CN',
          status: 'resolved',
          // Freddy at 02:01, Inês publicly at 02:10 (her 02:05 note does not count).
          escalated: true,
          resolution_time_minutes: 150,
          // The newest answer (103: the best), not the older -103.
          satisfaction_score: 5,
          satisfaction_feedback: 'Fast, "thanks"',
          tags: ['refund', 'chat'],
          custom_fields: {
            cf_order_number: '=9',
            cf_reason: null,
            _freshdesk: freshdesk({
              subject: 'Chat: 退款',
              priority: 3,
              source: 7,
              channel: 'chat',
              type: 'Refund',
              group_id: '43000000701',
              is_escalated: true,
            }),
          },
          created_at: '2024-03-06T02:00:00Z',
          last_updated: '2024-03-06T05:00:00Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'contact', '43000000501']),
          assigned_agent_id: r(['team_members', 'agent', '43000000003']),
        },
        updatedAt: '2024-03-06T05:00:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '5002',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'freshdesk:ticket:5002',
          start_timestamp: '2024-03-07T09:00:00Z',
          end_timestamp: null,
          // No embedded requester: from contacts.json.
          customer_email: 'quoted@example.com',
          customer_name: '"Quoted" Name, Jr.',
          language: 'en',
          // Open, but marked as spam.
          status: 'unresolved',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: 2,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _freshdesk: freshdesk({
              subject: 'RE: =HYPERLINK("x")',
              priority: 1,
              source: 1,
              channel: 'email',
              fr_escalated: true,
            }),
          },
          created_at: '2024-03-07T09:00:00Z',
          last_updated: '2024-03-07T10:30:00Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'contact', '43000000502']),
          assigned_agent_id: null,
        },
        updatedAt: '2024-03-07T10:30:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'freshdesk:ticket:',
          start_timestamp: '2024-03-08T09:00:00Z',
          end_timestamp: null,
          customer_email: 'quoted@example.com',
          customer_name: '"Quoted" Name, Jr.',
          language: 'en',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: { _freshdesk: freshdesk({ subject: 'No id', source: 2, channel: 'portal' }) },
          created_at: '2024-03-08T09:00:00Z',
          last_updated: '2024-03-08T09:00:00Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'contact', '43000000502']),
          assigned_agent_id: null,
        },
        updatedAt: '2024-03-08T09:00:00Z',
        errors: ['the ticket has no id'],
      },
      {
        entity: 'conversations',
        sourceType: 'ticket',
        sourceId: '5004',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'freshdesk:ticket:5004',
          start_timestamp: '2024-03-08T10:00:00Z',
          // No resolved_at: closed_at.
          end_timestamp: '2024-03-08T11:00:00Z',
          customer_email: 'li.wei@example.cn',
          customer_name: '李伟',
          language: 'zh-CN',
          status: 'resolved',
          escalated: false,
          resolution_time_minutes: 60,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _freshdesk: freshdesk({
              subject: 'Outbound: your invoice',
              source: 10,
              channel: 'outbound_email',
            }),
          },
          created_at: '2024-03-08T10:00:00Z',
          last_updated: '2024-03-08T11:00:00Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'contact', '43000000501']),
          assigned_agent_id: r(['team_members', 'agent', '43000000001']),
        },
        updatedAt: '2024-03-08T11:00:00Z',
        errors: ['the ticket is deleted in Freshdesk'],
      },
    ]);

    const description = { internal_note: false, source_part_type: 'description', attachments: [] };
    expect(items.messages.map(view)).toEqual([
      message({
        sourceType: 'ticket_description',
        sourceId: '5001',
        conversation: ticket('5001'),
        createdAt: '2024-03-06T02:00:00Z',
        sender: 'customer',
        senderId: '43000000501',
        senderRef: ['customers', 'contact', '43000000501'],
        content: '我要退款 <订单 #9>\n谢谢',
        length: 15,
        metadata: description,
      }),
      // Ticket 5002 was exported without its description.
      message({
        sourceType: 'ticket_description',
        sourceId: '',
        conversation: null,
        createdAt: '2024-03-08T09:00:00Z',
        sender: 'customer',
        senderId: '43000000502',
        senderRef: ['customers', 'contact', '43000000502'],
        content: 'a ticket without an id',
        length: 22,
        metadata: description,
        errors: ['the ticket has no id'],
      }),
      // An outbound email: the agent wrote the description.
      message({
        sourceType: 'ticket_description',
        sourceId: '5004',
        conversation: ticket('5004'),
        createdAt: '2024-03-08T10:00:00Z',
        sender: 'human',
        senderId: null,
        content: 'Your invoice is attached.',
        length: 25,
        metadata: description,
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009001',
        conversation: ticket('5001'),
        createdAt: '2024-03-06T02:01:00Z',
        sender: 'ai',
        senderId: '43000000002',
        content: '您好，我是 Freddy。',
        length: 13,
        metadata: { internal_note: false, source_part_type: 'reply', freshdesk_source: 0, attachments: [] },
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009002',
        conversation: ticket('5001'),
        createdAt: '2024-03-06T02:05:00Z',
        updatedAt: '2024-03-06T02:06:00Z',
        sender: 'human',
        senderId: '43000000003',
        senderRef: ['team_members', 'agent', '43000000003'],
        content: 'Customer asked twice — refund & close',
        length: 37,
        metadata: { internal_note: true, source_part_type: 'note', freshdesk_source: 2, attachments: [] },
        edited: true,
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009003',
        conversation: ticket('5001'),
        createdAt: '2024-03-06T02:10:00Z',
        sender: 'human',
        senderId: '43000000003',
        senderRef: ['team_members', 'agent', '43000000003'],
        // No body_text: the HTML body as text.
        content: 'Refund done.\nBye! 👋',
        length: 19,
        metadata: {
          internal_note: false,
          source_part_type: 'reply',
          freshdesk_source: 0,
          attachments: ['receipt "final".pdf'],
        },
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009004',
        conversation: ticket('5001'),
        createdAt: '2024-03-06T02:20:00Z',
        sender: 'customer',
        senderId: '43000000501',
        senderRef: ['customers', 'contact', '43000000501'],
        content: '谢谢',
        length: 2,
        metadata: { internal_note: false, source_part_type: 'reply', freshdesk_source: 7, attachments: [] },
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009101',
        conversation: ticket('5002'),
        createdAt: '2024-03-07T10:00:00Z',
        sender: 'customer',
        senderId: '43000000502',
        senderRef: ['customers', 'contact', '43000000502'],
        content: 'Follow-up: "still waiting"\u0001',
        length: 27,
        metadata: { internal_note: false, source_part_type: 'reply', freshdesk_source: 0, attachments: [] },
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009102',
        conversation: ticket('5002'),
        createdAt: '2024-03-07T10:30:00Z',
        sender: 'human',
        senderId: '43000000001',
        senderRef: ['team_members', 'agent', '43000000001'],
        content: 'On it.',
        length: 6,
        metadata: { internal_note: false, source_part_type: 'reply', freshdesk_source: 0, attachments: [] },
      }),
      message({
        sourceType: 'conversation',
        sourceId: '43000009103',
        conversation: ticket('5002'),
        createdAt: null,
        sender: 'customer',
        senderId: '43000000502',
        senderRef: ['customers', 'contact', '43000000502'],
        content: 'no time',
        length: 7,
        metadata: {
          internal_note: false,
          source_part_type: 'reply',
          freshdesk_source: null,
          attachments: [],
        },
        errors: ['the conversation has no created_at'],
      }),
    ]);

    expect(source.warnings).toEqual([
      '1 bot agent(s) are not imported as team members; their replies are imported as AI messages',
      '1 ticket(s) have no description (export them with include=description): their first message is not imported',
    ]);
    expect(items.messages[0]!.location).toMatch(/^tickets\.json at byte \d+ \(description\)$/);
    expect(items.messages[3]!.location).toMatch(/^conversations\/5001\.json at byte \d+$/);
  });
});

describe('Help Scout', () => {
  const site: Ref = ['sites', 'site', 'helpscout'];
  const conversation = (id: string): Ref => ['conversations', 'conversation', id];

  it('maps users, customers, conversations and threads field by field', async () => {
    const source = helpscoutSource(inputOf('helpscout'), options);
    expect(source.system).toBe('helpscout');
    expect(source.deriveCounts).toBe(true);
    const items = await run(source);
    expectUniqueKeys(items);

    expect(items.sites.map(view)).toEqual([
      {
        entity: 'sites',
        sourceType: 'site',
        sourceId: 'helpscout',
        values: { url: 'import://helpscout', name: 'Help Scout', created_at: null },
        updatedAt: null,
      },
    ]);
    // The team "Billing Team" is not a person.
    expect(items.team_members.map(view)).toEqual([
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '4',
        values: {
          name: 'Noa Ben-David',
          email: 'noa@acme.example',
          role: 'admin',
          created_at: '2022-05-01T10:00:00Z',
          last_login_at: null,
        },
        updatedAt: '2024-01-01T10:00:00Z',
      },
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '5',
        values: {
          name: "Tom O'Hart",
          email: 'tom@acme.example',
          role: 'agent',
          created_at: '2023-02-01T10:00:00Z',
          last_login_at: null,
        },
        updatedAt: '2023-02-01T10:00:00Z',
      },
      {
        entity: 'team_members',
        sourceType: 'user',
        sourceId: '6',
        values: {
          name: 'Mailless User',
          email: null,
          role: 'admin',
          created_at: '2023-02-03T10:00:00Z',
          last_login_at: null,
        },
        updatedAt: null,
        errors: ['the user has no email'],
      },
    ]);
    expect(items.customers.map(view)).toEqual([
      {
        entity: 'customers',
        sourceType: 'customer',
        sourceId: '700',
        values: {
          email: 'ava@example.com',
          name: 'Ava "Ace" Stone',
          phone: '+1 512 555 0100',
          country: 'US',
          segment: 'consumer',
          created_at: '2024-01-05T12:00:00Z',
          updated_at: '2024-02-05T12:00:00Z',
        },
        updatedAt: '2024-02-05T12:00:00Z',
      },
      {
        entity: 'customers',
        sourceType: 'customer',
        sourceId: '701',
        values: {
          email: 'uri@example.co.il',
          name: 'אורי',
          phone: null,
          country: null,
          segment: 'consumer',
          created_at: '2024-03-09T07:59:00Z',
          updated_at: '2024-03-09T07:59:00Z',
        },
        updatedAt: '2024-03-09T07:59:00Z',
      },
    ]);

    expect(items.conversations.map(view)).toEqual([
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '3001',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'helpscout:conversation:3001',
          start_timestamp: '2024-03-08T15:00:00Z',
          end_timestamp: '2024-03-08T15:45:00Z',
          customer_email: 'ava@example.com',
          customer_name: 'Ava "Ace" Stone',
          language: 'und',
          status: 'resolved',
          // The system user (AI) answered at 15:01, Tom publicly at 15:20.
          escalated: true,
          resolution_time_minutes: 45,
          // The rating on Tom's reply: great.
          satisfaction_score: 5,
          satisfaction_feedback: 'Super "fast" 👍',
          tags: ['shipping', 'ai-answered'],
          custom_fields: {
            Order: 'A-7',
            Plan: 'Premium',
            _helpscout: {
              number: 101,
              subject: 'Beacon chat — order 😀',
              mailbox_id: '11',
              type: 'chat',
              source_type: 'beacon-v2',
              source_via: 'customer',
            },
          },
          created_at: '2024-03-08T15:00:00Z',
          last_updated: '2024-03-08T15:45:00Z',
        },
        refs: {
          site_id: r(site),
          customer_id: r(['customers', 'customer', '700']),
          assigned_agent_id: r(['team_members', 'user', '5']),
        },
        updatedAt: '2024-03-08T15:45:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '3002',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'helpscout:conversation:3002',
          start_timestamp: '2024-03-09T08:00:00Z',
          end_timestamp: null,
          customer_email: 'uri@example.co.il',
          customer_name: 'אורי',
          language: 'und',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _helpscout: {
              number: 102,
              subject: 'ההזמנה לא הגיעה',
              mailbox_id: '11',
              type: 'email',
              source_type: 'email',
              source_via: 'customer',
            },
          },
          created_at: '2024-03-09T08:00:00Z',
          last_updated: '2024-03-09T09:00:00Z',
        },
        refs: { site_id: r(site), customer_id: r(['customers', 'customer', '701']), assigned_agent_id: null },
        updatedAt: '2024-03-09T09:00:00Z',
      },
      {
        entity: 'conversations',
        sourceType: 'conversation',
        sourceId: '3003',
        values: {
          ...UNKNOWN_CONVERSATION,
          session_id: 'helpscout:conversation:3003',
          start_timestamp: '2024-03-09T10:00:00Z',
          end_timestamp: null,
          customer_email: 'ava@example.com',
          customer_name: 'Ava',
          language: 'und',
          status: 'in_progress',
          escalated: false,
          resolution_time_minutes: null,
          satisfaction_score: null,
          satisfaction_feedback: null,
          tags: [],
          custom_fields: {
            _helpscout: {
              number: 103,
              subject: 'unsent draft',
              mailbox_id: '11',
              type: 'email',
              source_type: 'web',
              source_via: 'user',
            },
          },
          created_at: '2024-03-09T10:00:00Z',
          last_updated: '2024-03-09T10:00:00Z',
        },
        refs: { site_id: r(site), customer_id: r(['customers', 'customer', '700']), assigned_agent_id: null },
        updatedAt: '2024-03-09T10:00:00Z',
        errors: ['the conversation is a draft that was never sent'],
      },
    ]);

    // threads/3001.json (newest first, as the API lists them) replaces the embedded copy; then 3002's embedded threads.
    expect(items.messages.map(view)).toEqual([
      message({
        sourceType: 'thread',
        sourceId: '8004',
        conversation: conversation('3001'),
        createdAt: '2024-03-08T15:30:00Z',
        sender: 'customer',
        senderId: '700',
        senderRef: ['customers', 'customer', '700'],
        content: 'Thanks! Great service',
        length: 21,
        metadata: {
          internal_note: false,
          source_part_type: 'chat',
          source_type: 'beacon-v2',
          attachments: [],
        },
      }),
      message({
        sourceType: 'thread',
        sourceId: '8003',
        conversation: conversation('3001'),
        createdAt: '2024-03-08T15:20:00Z',
        sender: 'human',
        senderId: '5',
        senderRef: ['team_members', 'user', '5'],
        content: 'Your order ships today.',
        length: 23,
        metadata: {
          internal_note: false,
          source_part_type: 'chat',
          source_type: 'beacon-v2',
          attachments: ['label.pdf'],
        },
      }),
      message({
        sourceType: 'thread',
        sourceId: '8002',
        conversation: conversation('3001'),
        createdAt: '2024-03-08T15:10:00Z',
        sender: 'human',
        senderId: '5',
        senderRef: ['team_members', 'user', '5'],
        content: 'Check warehouse <B> first',
        length: 25,
        metadata: { internal_note: true, source_part_type: 'note', source_type: 'web', attachments: [] },
      }),
      message({
        sourceType: 'thread',
        sourceId: '8001',
        conversation: conversation('3001'),
        createdAt: '2024-03-08T15:01:00Z',
        sender: 'ai',
        senderId: '99',
        content: "Hi! I'm the AI assistant. How can I help?",
        length: 41,
        metadata: {
          internal_note: false,
          source_part_type: 'chat',
          source_type: 'beacon-v2',
          attachments: [],
        },
      }),
      message({
        sourceType: 'thread',
        sourceId: '8000',
        conversation: conversation('3001'),
        createdAt: '2024-03-08T15:00:00Z',
        sender: 'customer',
        senderId: '700',
        senderRef: ['customers', 'customer', '700'],
        // Plain text, not HTML: kept as written.
        content: 'Where is my order?\u200f\n=1+1',
        length: 24,
        metadata: {
          internal_note: false,
          source_part_type: 'customer',
          source_type: 'beacon-v2',
          attachments: [],
        },
      }),
      message({
        sourceType: 'thread',
        sourceId: '8103',
        conversation: conversation('3002'),
        createdAt: null,
        sender: 'human',
        senderId: '4',
        senderRef: ['team_members', 'user', '4'],
        content: 'A reply without a time',
        length: 22,
        metadata: {
          internal_note: false,
          source_part_type: 'message',
          source_type: 'email',
          attachments: [],
        },
        errors: ['the thread has no createdAt'],
      }),
      // 8102 is a draft.
      message({
        sourceType: 'thread',
        sourceId: '8101',
        conversation: conversation('3002'),
        createdAt: '2024-03-09T08:00:00Z',
        sender: 'customer',
        senderId: '701',
        senderRef: ['customers', 'customer', '701'],
        content: 'שלום,\nההזמנה לא הגיעה "עדיין"',
        length: 29,
        metadata: {
          internal_note: false,
          source_part_type: 'customer',
          source_type: 'email',
          attachments: [],
        },
      }),
    ]);

    expect(source.warnings).toEqual([
      '1 team(s) are not people and were not imported as team members',
      '2 thread(s) that are not messages (line items, drafts) were not imported',
    ]);
    expect(items.messages[0]!.location).toMatch(/^threads\/3001\.json at byte \d+$/);
    expect(items.messages[6]!.location).toMatch(/^conversations\.json at byte \d+ \(thread 8101\)$/);
  });
});

describe('shared conversions', () => {
  it('turns HTML bodies into text with their line breaks, and leaves plain text alone', () => {
    expect(htmlToText('<p>One &amp; two</p><p>Three<br/>four</p>')).toBe('One & two\n\nThree\nfour');
    expect(htmlToText('<div>a\n   b</div><div>c</div>')).toBe('a b\nc');
    expect(htmlToText('<ol><li>x</li><li>y</li></ol>')).toBe('- x\n- y');
    expect(htmlToText('<p>code:</p><pre>  a\n    b</pre><p>end</p>')).toBe('code:\n  a\n    b\nend');
    expect(htmlToText('<style>p{}</style><script>alert(1)</script><p>&#x1F600;&#0;&nope;</p>')).toBe(
      '😀\uFFFD&nope;',
    );
    expect(htmlToText('2 < 3 and a\n  line')).toBe('2 < 3 and a\n  line');
    expect(htmlToText('=SUM(A1)\u0001')).toBe('=SUM(A1)\u0001');
  });

  it('reads unix seconds (with their fraction) and ISO times (as written)', () => {
    expect(isoTime(1709629200)).toBe('2024-03-05T09:00:00Z');
    expect(isoTime(1709637200.123456)).toBe('2024-03-05T11:13:20.123456Z');
    expect(isoTime('1709629200')).toBe('2024-03-05T09:00:00Z');
    expect(isoTime('2024-03-05 09:00:00.123456')).toBe('2024-03-05 09:00:00.123456');
    expect(isoTime('2024-03-05T09:00:00+01:00')).toBe('2024-03-05T09:00:00+01:00');
    expect(isoTime('yesterday')).toBeNull();
    expect(isoTime(1e15)).toBeNull();
    expect(isoTime(-1)).toBeNull();
    expect(isoTime(null)).toBeNull();
  });

  it('finds countries by code or English name, languages as BCP 47, and bots by name', () => {
    expect(countryCode('fr')).toBe('FR');
    expect(countryCode('United Kingdom')).toBe('GB');
    expect(countryCode('UK')).toBe('GB');
    expect(countryCode('Germany')).toBe('DE');
    expect(countryCode('Atlantis')).toBeNull();
    expect(countryCode('EU')).toBeNull();
    expect(languageTag('pt_BR')).toBe('pt-BR');
    expect(languageTag('not a tag!')).toBe('und');
    expect(languageTag(null)).toBe('und');
    expect(isBotName('Answer Bot')).toBe(true);
    expect(isBotName('Freddy AI')).toBe(true);
    expect(isBotName('support-bot')).toBe(true);
    expect(isBotName('Ai Tanaka')).toBe(false);
    expect(isBotName('Robotics Team')).toBe(false);
    expect(isBotName('Abbott')).toBe(false);
  });
});
