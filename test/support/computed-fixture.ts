import type { Database } from '../../src/db/database.ts';

/**
 * A small hand-built tenant for the computed datasets (analytics, revenue attribution):
 * every value in it is chosen so the expected metrics can be worked out by hand. The
 * worked numbers are in test/analytics.test.ts, test/revenue-attribution.test.ts and
 * docs/metrics.md. Tenant: home country DE, time zone Europe/Berlin (UTC+1 in January).
 */

const uuid = (prefix: number, n: number) =>
  `${String(prefix).repeat(8)}-0000-4000-8000-${String(n).padStart(12, '0')}`;

export const TENANT = uuid(1, 1);
export const OTHER_TENANT = uuid(1, 2);
export const SITE_A = uuid(2, 1);
export const SITE_B = uuid(2, 2);
export const OTHER_SITE = uuid(2, 3);
export const SITE_A_URL = 'https://shop.example.com';
/** A quote in the URL proves the site filter is inlined as an escaped literal. */
export const SITE_B_URL = "https://help.example.com/o'brien";

export const K1 = uuid(3, 1);
export const K2 = uuid(3, 2);
export const K3 = uuid(3, 3);
const OTHER_CUSTOMER = uuid(3, 9);

/** Conversation ids c0..c8 and cx (another tenant's). */
export const C = {
  c0: uuid(4, 0),
  c1: uuid(4, 1),
  c2: uuid(4, 2),
  c3: uuid(4, 3),
  c4: uuid(4, 4),
  c5: uuid(4, 5),
  c6: uuid(4, 6),
  c7: uuid(4, 7),
  c8: uuid(4, 8),
  cx: uuid(4, 99),
};
/** Revenue events; r3 and r4 share an instant (r3 sorts first by id). */
export const R = {
  r0: uuid(6, 0),
  r1: uuid(6, 1),
  r2: uuid(6, 2),
  r3: uuid(6, 3),
  r4: uuid(6, 4),
  r5: uuid(6, 5),
};
export const UNKNOWN_CONVERSATION = uuid(4, 77);

const DESKTOP = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36';
const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148';
const ANDROID = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36';

interface Conv {
  id: string;
  site: string;
  customer: string | null;
  session: string;
  start: string;
  end?: string;
  country?: string | null;
  ua?: string | null;
  status: 'resolved' | 'unresolved' | 'in_progress';
  escalated?: boolean;
  resolution?: number;
  rating?: number;
  topics?: string[];
  /** [sender, time (UTC), confidence, tokens, processing ms] */
  messages?: [string, string, number | null, number | null, number | null][];
  counts?: [number, number, number, number];
}

const cust = (time: string): [string, string, null, null, null] => ['customer', time, null, null, null];

const CONVERSATIONS: Conv[] = [
  {
    // Saturday 2025-12-20 11:00 Berlin: earlier visit of K2 on site A.
    id: C.c0,
    site: SITE_A,
    customer: K2,
    session: 's0',
    start: '2025-12-20T10:00:00Z',
    end: '2025-12-20T10:05:00Z',
    country: 'DE',
    ua: DESKTOP,
    status: 'resolved',
    resolution: 5,
    messages: [cust('2025-12-20T10:00:00Z'), ['ai', '2025-12-20T10:00:05Z', null, 10, null]],
  },
  {
    // Monday 2026-01-05 09:00 Berlin (office hours).
    id: C.c1,
    site: SITE_A,
    customer: K1,
    session: 's1',
    start: '2026-01-05T08:00:00Z',
    end: '2026-01-05T08:20:00Z',
    country: 'DE',
    ua: DESKTOP,
    status: 'resolved',
    resolution: 10,
    rating: 5,
    topics: ['billing', 'shipping'],
    messages: [
      cust('2026-01-05T08:00:00Z'),
      ['ai', '2026-01-05T08:00:30Z', 0.9, 100, 400],
      cust('2026-01-05T08:02:00Z'),
      cust('2026-01-05T08:02:30Z'),
      ['human', '2026-01-05T08:03:00Z', null, null, null],
    ],
  },
  {
    // Monday 17:30 Berlin (after hours), anonymous, from France, on an iPhone, escalated.
    id: C.c2,
    site: SITE_A,
    customer: null,
    session: 's2',
    start: '2026-01-05T16:30:00Z',
    end: '2026-01-05T17:00:00Z',
    country: 'FR',
    ua: IPHONE,
    status: 'unresolved',
    escalated: true,
    rating: 2,
    topics: ['billing', 'refund'],
    messages: [
      cust('2026-01-05T16:30:00Z'),
      ['ai', '2026-01-05T16:30:10Z', 0.3, 50, 1200],
      cust('2026-01-05T16:31:00Z'),
    ],
  },
  {
    // Monday 23:30 UTC = Tuesday 2026-01-06 00:30 Berlin; K1 again; a bounce.
    id: C.c3,
    site: SITE_A,
    customer: K1,
    session: 's3',
    start: '2026-01-05T23:30:00Z',
    country: 'DE',
    ua: DESKTOP,
    status: 'unresolved',
    messages: [cust('2026-01-05T23:30:00Z')],
  },
  {
    // Tuesday 13:00 Berlin: the anonymous session s2 returns, on Android, escalated.
    id: C.c6,
    site: SITE_A,
    customer: null,
    session: 's2',
    start: '2026-01-06T12:00:00Z',
    end: '2026-01-06T12:30:00Z',
    country: 'DE',
    ua: ANDROID,
    status: 'resolved',
    escalated: true,
    resolution: 20,
    rating: 3,
    topics: ['refund'],
    messages: [
      cust('2026-01-06T12:00:00Z'),
      ['ai', '2026-01-06T12:01:00Z', 0.6, 70, 800],
      ['human', '2026-01-06T12:02:00Z', null, null, null],
      cust('2026-01-06T12:05:00Z'),
      ['human', '2026-01-06T12:05:45Z', null, null, null],
    ],
  },
  {
    // Saturday 2026-01-10 11:00 Berlin: K2 returns to site A.
    id: C.c4,
    site: SITE_A,
    customer: K2,
    session: 's4',
    start: '2026-01-10T10:00:00Z',
    end: '2026-01-10T10:10:00Z',
    country: 'DE',
    ua: DESKTOP,
    status: 'resolved',
    resolution: 30,
    rating: 4,
    topics: ['shipping'],
    messages: [cust('2026-01-10T10:00:00Z'), ['human', '2026-01-10T10:01:00Z', null, null, null]],
  },
  {
    // Monday 10:00 Berlin on site B: K2's first visit there; 12 unanswered messages.
    id: C.c5,
    site: SITE_B,
    customer: K2,
    session: 's5',
    start: '2026-01-05T09:00:00Z',
    country: null,
    ua: null,
    status: 'in_progress',
    topics: ['pricing'],
    messages: Array.from({ length: 12 }, (_, i) => cust(`2026-01-05T09:${String(i).padStart(2, '0')}:00Z`)),
  },
  {
    // Sunday 2026-01-11 23:30 UTC = Monday 2026-01-12 00:30 Berlin (week boundary).
    id: C.c7,
    site: SITE_B,
    customer: null,
    session: 's7',
    start: '2026-01-11T23:30:00Z',
    country: 'DE',
    status: 'in_progress',
  },
  {
    // Saturday 2026-01-31 23:30 UTC = Sunday 2026-02-01 00:30 Berlin (month boundary).
    id: C.c8,
    site: SITE_B,
    customer: null,
    session: 's8',
    start: '2026-01-31T23:30:00Z',
    country: 'DE',
    status: 'in_progress',
  },
];

/** Inserts the fixture (both tenants) into a migrated database. */
export async function insertComputedFixture(database: Database): Promise<void> {
  const db = database.db;
  await db
    .insertInto('tenants')
    .values([
      { id: TENANT, name: 'Acme', slug: 'acme', plan: 'pro', timezone: 'Europe/Berlin', home_country: 'DE' },
      { id: OTHER_TENANT, name: 'Other', slug: 'other', plan: 'pro', timezone: 'UTC', home_country: 'US' },
    ])
    .execute();
  await db
    .insertInto('sites')
    .values([
      { id: SITE_A, tenant_id: TENANT, url: SITE_A_URL, name: 'Shop' },
      { id: SITE_B, tenant_id: TENANT, url: SITE_B_URL, name: 'Help' },
      { id: OTHER_SITE, tenant_id: OTHER_TENANT, url: SITE_A_URL, name: 'Other shop' },
    ])
    .execute();
  await db
    .insertInto('customers')
    .values([
      {
        id: K1,
        tenant_id: TENANT,
        email: 'k1@example.com',
        name: 'K One',
        phone: null,
        country: 'DE',
        segment: 'smb',
      },
      {
        id: K2,
        tenant_id: TENANT,
        email: 'k2@example.com',
        name: 'K Two',
        phone: null,
        country: 'DE',
        segment: 'mid_market',
      },
      { id: K3, tenant_id: TENANT, email: null, name: null, phone: null, country: null, segment: 'consumer' },
      {
        id: OTHER_CUSTOMER,
        tenant_id: OTHER_TENANT,
        email: null,
        name: null,
        phone: null,
        country: null,
        segment: 'smb',
      },
    ])
    .execute();

  const all = [
    ...CONVERSATIONS.map((c) => ({ ...c, tenant: TENANT })),
    // Another tenant's conversation, named in one of our revenue events: never credited.
    {
      id: C.cx,
      site: OTHER_SITE,
      customer: OTHER_CUSTOMER,
      session: 'sx',
      start: '2026-01-05T07:00:00Z',
      status: 'resolved' as const,
      tenant: OTHER_TENANT,
      messages: [cust('2026-01-05T07:00:00Z')],
    },
  ];
  let messageNo = 0;
  for (const c of all) {
    const messages = c.messages ?? [];
    const count = (sender: string) => messages.filter((m) => m[0] === sender).length;
    await db
      .insertInto('conversations')
      .values({
        id: c.id,
        tenant_id: c.tenant,
        site_id: c.site,
        customer_id: c.customer,
        session_id: c.session,
        start_timestamp: c.start,
        end_timestamp: c.end ?? null,
        country: c.country ?? null,
        language: 'en',
        user_agent: c.ua ?? null,
        status: c.status,
        escalated: c.escalated ?? false,
        escalation_reason: c.escalated ? 'asked for a person' : null,
        resolution_time_minutes: c.resolution ?? null,
        satisfaction_score: c.rating ?? null,
        message_count: messages.length,
        customer_message_count: count('customer'),
        ai_message_count: count('ai'),
        human_message_count: count('human'),
        topics_detected: c.topics ?? [],
      })
      .execute();
    for (const [sender, at, confidence, tokens, processing] of messages) {
      messageNo++;
      await db
        .insertInto('messages')
        .values({
          id: uuid(5, messageNo),
          tenant_id: c.tenant,
          conversation_id: c.id,
          created_at: at,
          sender_type: sender as 'customer' | 'ai' | 'human',
          content: `${sender} message ${messageNo}`,
          confidence_score: confidence,
          tokens_used: tokens,
          processing_time_ms: processing,
          message_length: 20,
        })
        .execute();
    }
  }

  const event = (
    id: string,
    customer: string,
    conversations: string[],
    amount: string,
    currency: string,
    at: string,
    extra: {
      segment: string;
      type: 'purchase' | 'subscription' | 'upgrade' | 'renewal';
      category: string;
      referral?: string;
      campaign?: string;
      lead?: number;
    },
  ) => ({
    id,
    tenant_id: TENANT,
    customer_id: customer,
    conversation_ids: conversations,
    amount,
    currency,
    occurred_at: at,
    customer_segment: extra.segment,
    transaction_type: extra.type,
    product_category: extra.category,
    referral_source: extra.referral ?? null,
    campaign: extra.campaign ?? null,
    lead_score: extra.lead ?? null,
  });
  await db
    .insertInto('revenue_events')
    .values([
      // c4 started after this event: not credited. c5 is listed twice.
      event(R.r0, K2, [C.c5, C.c4, C.c5], '30.00', 'EUR', '2026-01-08T12:00:00Z', {
        segment: 'mid_market',
        type: 'subscription',
        category: 'plans',
        lead: 55,
      }),
      event(R.r1, K1, [C.c1, C.c3, C.cx], '100.00', 'EUR', '2026-01-07T10:00:00Z', {
        segment: 'smb',
        type: 'purchase',
        category: 'shoes',
        referral: 'google',
        campaign: 'winter',
        lead: 80,
      }),
      event(R.r2, K1, [C.c1, UNKNOWN_CONVERSATION], '50.00', 'EUR', '2026-02-20T09:00:00Z', {
        segment: 'smb',
        type: 'upgrade',
        category: 'shoes',
        referral: 'newsletter',
        lead: 90,
      }),
      event(R.r3, K3, [], '20.00', 'EUR', '2026-01-09T18:00:00Z', {
        segment: 'consumer',
        type: 'purchase',
        category: 'socks',
      }),
      event(R.r4, K3, [C.c6], '5.00', 'EUR', '2026-01-09T18:00:00Z', {
        segment: 'consumer',
        type: 'purchase',
        category: 'socks',
      }),
      // 23:30 UTC = next day in Berlin; another currency keeps its own lifetime value.
      event(R.r5, K1, [], '10.00', 'USD', '2026-01-20T23:30:00Z', {
        segment: 'smb',
        type: 'renewal',
        category: 'shoes',
      }),
    ])
    .execute();
}
