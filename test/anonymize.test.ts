import { countries } from 'countries-list';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { REFERENCE_TABLES } from '../src/datamap/reference-tables.ts';
import type { DatasetDeclaration, DatasetField } from '../src/datamap/types.ts';
import { literal, quoteIdent } from '../src/db/database.ts';
import { CONTINENTS } from '../src/db/migrations/0002-privacy-functions.ts';
import { PII_LEVELS, type PiiLevel, parsePiiLevel } from '../src/domain/pii-level.ts';
import {
  type AnonymizeContext,
  anonymizeSql,
  describeTreatment,
  fieldIsRemoved,
  fieldTreatment,
} from '../src/transform/anonymize.ts';
import { pseudonymToken, pseudonymUuid } from '../src/transform/pseudonym.ts';
import { isPhoneNumber, luhnOk, scrubJson, scrubText } from '../src/transform/scrub.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const KEY_A = '0123456789abcdef0123456789abcdef';
const KEY_B = 'fedcba9876543210fedcba9876543210';
const datasets = REFERENCE_DATAMAP.datasets as Record<string, DatasetDeclaration>;
const field = (dataset: string, name: string): DatasetField => {
  const found = datasets[dataset]?.fields.find((f) => f.name === name);
  if (!found) throw new Error(`no field ${dataset}.${name}`);
  return found;
};
const removedAt = (dataset: string, level: PiiLevel) =>
  datasets[dataset]!.fields.filter((f) => fieldIsRemoved(f, level)).map((f) => f.name);

// ---- Planted personal data -------------------------------------------------------------

const CARDS_VALID = ['4111 1111 1111 1111', '5500-0055-5555-5559', '378282246310005', '6011 1111 1111 1117'];
const CARD_INVALID = '4111 1111 1111 1112';
const PHONES = ['+49 30 901820', '(415) 555-2671', '0171 1234567', '+1 415.555.2671', '030/901820'];
const EMAILS = ['jonathan.doe@example.com', 'maria.garcia@example.org'];
const IPS = ['203.0.113.77', '2001:db8:abcd:1234:5678:9abc:def0:1234', '198.51.100.23'];

/** Phone heuristic at level basic: input → output. */
const PHONE_CASES: [string, string][] = [
  ['call +49 30 901820 today', 'call [phone] today'],
  ['call +1 (415) 555-2671.', 'call [phone].'],
  ['(415) 555-2671', '[phone]'],
  ['415-555-2671 or 415.555.2671', '[phone] or [phone]'],
  ['tel: 0171 1234567', 'tel: [phone]'],
  ['030/901820', '[phone]'],
  ['01711234567', '[phone]'],
  ['020 7946 0958', '[phone]'],
  ['0049 30 901820', '[phone]'],
  ['+4930901820', '[phone]'],
  ['01 23 45 67 89', '[phone]'],
  // Errs towards removing: a zero-padded code with a non-zero second digit looks national.
  ['code 0123456789', 'code [phone]'],
  // Kept: order numbers, years, dates, times, decimals, versions, short or glued numbers.
  ['order #48213 and #0171234567', 'order #48213 and #0171234567'],
  ['order 48213', 'order 48213'],
  ['in 2024, from 2019-2024', 'in 2024, from 2019-2024'],
  ['on 2024-05-01 at 10:30', 'on 2024-05-01 at 10:30'],
  ['on 05.01.2024 10:30 or 1/5/2024 14', 'on 05.01.2024 10:30 or 1/5/2024 14'],
  ['pi is 3.14159265, ratio 0.123456789', 'pi is 3.14159265, ratio 0.123456789'],
  ['version 1.2.3.4.5', 'version 1.2.3.4.5'],
  ['ticket 1234567', 'ticket 1234567'],
  ['short national 089 12345', 'short national 089 12345'],
  ['ref A1234567890 and 0171234567abc', 'ref A1234567890 and 0171234567abc'],
  ['see https://shop.example.com/orders/01711234567', 'see https://shop.example.com/orders/01711234567'],
  [`luhn-invalid ${CARD_INVALID}`, `luhn-invalid ${CARD_INVALID}`],
];

/** Card detection at level basic. */
const CARD_CASES: [string, string][] = [
  ['card 4111 1111 1111 1111 exp 12/27', 'card [card] exp 12/27'],
  ['card 4111-1111-1111-1111.', 'card [card].'],
  ['5500005555555559', '[card]'],
  ['amex 3782 822463 10005 ok', 'amex [card] ok'],
  ['card 4111 1111 1111 1111 12/27', 'card [card] 12/27'],
  [`${CARD_INVALID} stays`, `${CARD_INVALID} stays`],
  ['twenty digits 12345678901234567890 stay', 'twenty digits 12345678901234567890 stay'],
];

/** Level-specific text cases: input → [basic, enhanced, complete]. */
const LEVEL_CASES: [string, [string, string, string]][] = [
  [
    'mail jonathan.doe@example.com or al@x.co.uk now',
    [
      'mail jona***@example.com or al***@x.co.uk now',
      'mail jona***@example.com or al***@x.co.uk now',
      'mail [email] or [email] now',
    ],
  ],
  [
    'from 203.0.113.77:8080 and 2001:db8::1, fe80::1ff:fe23:4567:890a',
    [
      'from 203.0.113.77:8080 and 2001:db8::1, fe80::1ff:fe23:4567:890a',
      'from [ip]:8080 and [ip], [ip]',
      'from [ip]:8080 and [ip], [ip]',
    ],
  ],
  [
    'at 12:30:45, MAC 00:1A:2B:3C:4D:5E, std::vector, v1.2.3.4.5',
    [
      'at 12:30:45, MAC 00:1A:2B:3C:4D:5E, std::vector, v1.2.3.4.5',
      'at 12:30:45, MAC 00:1A:2B:3C:4D:5E, std::vector, v1.2.3.4.5',
      'at 12:30:45, MAC 00:1A:2B:3C:4D:5E, std::vector, v1.2.3.4.5',
    ],
  ],
  [
    'mapped ::ffff:203.0.113.77, unspecified :: and a::b::c',
    [
      'mapped ::ffff:203.0.113.77, unspecified :: and a::b::c',
      'mapped ::ffff:[ip], unspecified :: and a::b::c',
      'mapped ::ffff:[ip], unspecified :: and a::b::c',
    ],
  ],
  [
    'jörg@müller.de and ＠ sign, 4111 1111 1111 1111 + 0171 1234567',
    [
      'jörg***@müller.de and ＠ sign, [card] + [phone]',
      'jörg***@müller.de and ＠ sign, [card] + [phone]',
      '[email] and ＠ sign, [card] + [phone]',
    ],
  ],
];

const SUBJECT = { name: 'Jonathan van Doe', email: 'Jon.D@mail.example' };
const SUBJECT_TEXT =
  'Thanks JONATHAN! This is jonathan van doe (jon.d@mail.example); the Doe family; Jonathanson; van Gogh';

/** Names with regular-expression characters, apostrophes, hyphens and digits. */
const MORE_SUBJECTS = [
  { name: "Dr. Sean O'Brien (Jr.)", email: 'sean+obrien@mail.example' },
  { name: 'Mary-Ann Smith-Jones 3rd', email: null },
];
const MORE_SUBJECT_TEXTS = [
  "Hello SEAN o'brien (jr.), dr. sean O'BRIEN (JR.) asked; Seanna; obrien; SEAN+OBRIEN@MAIL.EXAMPLE",
  'MARY-ANN smith-jones 3RD and mary-ann; SMITH-jones; Smithers; Ann; 3rd',
];

/** JSON made of strings only (keys included), as entity lists are. */
const STRING_DOCS: unknown[] = [
  [
    { type: 'email', value: 'maria.garcia@example.org' },
    { type: 'phone', value: '+49 30 901820' },
    { type: 'credit_card', value: '4111 1111 1111 1111' },
  ],
  {
    'call 0171 1234567': 'card 4111-1111-1111-1111 from 203.0.113.9 and 2001:db8::1',
    name: 'Jonathan van Doe',
    mail: 'JON.D@mail.example',
    '(415) 555-2671': ['12:30:45', 'a::b::c', '::ffff:203.0.113.77'],
  },
  { a: { b: ['the Doe family', 'Jonathanson', 'jörg@müller.de', 'v1.2.3.4.5'] }, c: [] },
  ['Jonathan', 'Doe', 'Jonathan, Doe', '0049 30 901820', '05.01.2024 10'],
];

const JSON_DOC = {
  phone: '0171 1234567',
  note: 'mail maria.garcia@example.org from 203.0.113.9',
  card: 5500005555555559,
  count: 42,
  nested: [{ 'call +49 30 901820': true }, 'plain', null],
};

describe('anonymization levels (pure)', () => {
  it('removes exactly the contract fields of the conversations dataset at each level', () => {
    expect(removedAt('conversations', 'full')).toEqual([]);
    expect(removedAt('conversations', 'basic')).toEqual([]);
    // ip_region: a location without a kind; device_class, browser, os: parsed from the user agent.
    expect(removedAt('conversations', 'enhanced')).toEqual(['customer_email', 'customer_name', 'ip_region']);
    expect(removedAt('conversations', 'complete')).toEqual([
      'customer_email',
      'customer_name',
      'ip_address',
      'user_agent',
      'device_class',
      'browser',
      'os',
      'ip_region',
    ]);
    expect(removedAt('customers', 'basic')).toEqual(['phone']);
    expect(removedAt('customers', 'complete')).toEqual(['email', 'name', 'phone']);
  });

  it('treats each field by its pii kind, then by its class', () => {
    const treat = (dataset: string, name: string) =>
      PII_LEVELS.map((level) => fieldTreatment(field(dataset, name), level));
    expect(treat('conversations', 'customer_email')).toEqual(['kept', 'masked_email', 'removed', 'removed']);
    expect(treat('conversations', 'customer_name')).toEqual(['kept', 'first_name', 'removed', 'removed']);
    expect(treat('conversations', 'ip_address')).toEqual(['kept', 'ip_truncated', 'ip_truncated', 'removed']);
    expect(treat('conversations', 'user_agent')).toEqual(['kept', 'kept', 'browser_family', 'removed']);
    expect(treat('conversations', 'country')).toEqual(['kept', 'kept', 'kept', 'continent']);
    expect(treat('conversations', 'ip_country')).toEqual(['kept', 'kept', 'kept', 'continent']);
    expect(treat('conversations', 'ip_region')).toEqual(['kept', 'kept', 'removed', 'removed']);
    for (const name of ['device_class', 'browser', 'os'])
      expect(treat('conversations', name)).toEqual(['kept', 'kept', 'kept', 'removed']);
    expect(treat('conversations', 'session_id')).toEqual(['kept', 'kept', 'kept', 'pseudonymized']);
    expect(treat('messages', 'sender_id')).toEqual(['kept', 'kept', 'kept', 'pseudonymized']);
    expect(treat('conversations', 'full_transcript')).toEqual(['kept', 'scrubbed', 'scrubbed', 'scrubbed']);
    expect(treat('conversations', 'custom_fields')).toEqual(['kept', 'scrubbed', 'scrubbed', 'scrubbed']);
    expect(treat('conversations', 'start_timestamp')).toEqual(['kept', 'kept', 'kept', 'rounded_to_hour']);
    // Identifiers that point at no person stay, at every level.
    for (const [dataset, name] of [
      ['conversations', 'conversation_id'],
      ['conversations', 'tenant_id'],
      ['messages', 'message_id'],
      ['messages', 'conversation_id'],
    ] as const) {
      expect(treat(dataset, name)).toEqual(['kept', 'kept', 'kept', 'kept']);
    }
    // Without a pii kind, personal classes are removed rather than guessed at.
    const location = { type: 'string', class: 'location' } as const;
    expect(PII_LEVELS.map((l) => fieldTreatment(location, l))).toEqual([
      'kept',
      'kept',
      'removed',
      'removed',
    ]);
    const contact = { type: 'string', class: 'contact' } as const;
    expect(PII_LEVELS.map((l) => fieldTreatment(contact, l))).toEqual([
      'kept',
      'removed',
      'removed',
      'removed',
    ]);
  });

  it('refuses secret fields at every level, even full', () => {
    const secrets = [
      { name: 'password_hash', ...REFERENCE_TABLES.team_members.columns.password_hash },
      { name: 'credentials_encrypted', ...REFERENCE_TABLES.integrations.columns.credentials_encrypted },
    ];
    for (const secret of secrets) {
      for (const level of PII_LEVELS) {
        expect(() => anonymizeSql(secret, 't.x', { level, key: KEY_A })).toThrow(/secret.*never be exported/);
        expect(() => fieldIsRemoved(secret, level)).toThrow(/secret/);
      }
    }
  });

  it('builds an expression for every field of every dataset at every level', () => {
    for (const dataset of Object.values(datasets)) {
      for (const f of dataset.fields) {
        for (const level of PII_LEVELS) {
          const expr = anonymizeSql(f, f.sql, { level, key: KEY_A });
          expect(expr.length).toBeGreaterThan(0);
          if (fieldIsRemoved(f, level)) expect(expr).toMatch(/^NULL::/);
          expect(describeTreatment(f, level)).toMatch(/\.$/);
        }
      }
    }
  });

  it('keeps full level byte-identical to the source expression', () => {
    for (const f of datasets.conversations!.fields) {
      expect(anonymizeSql(f, f.sql, { level: 'full', key: '' })).toBe(f.sql);
    }
  });

  it('validates the level and the key', () => {
    expect(parsePiiLevel('enhanced')).toBe('enhanced');
    expect(() => parsePiiLevel('strict')).toThrow(
      /anonymization: .*accepted: full, basic, enhanced, complete/,
    );
    expect(() =>
      anonymizeSql(field('conversations', 'session_id'), 't.session_id', { level: 'complete', key: 'abc' }),
    ).toThrow(/key: .*32 hexadecimal/);
    expect(() =>
      anonymizeSql(field('conversations', 'session_id'), 't.session_id', {
        level: "x'" as PiiLevel,
        key: KEY_A,
      }),
    ).toThrow(/level/);
  });

  it('refuses a treatment on a type it cannot handle', () => {
    const odd = { name: 'odd', type: 'integer', class: 'contact', pii: 'email' } as const;
    expect(() => anonymizeSql(odd, 't.odd', { level: 'basic', key: KEY_A })).toThrow(/odd: masked_email/);
  });

  it('embeds the continent of every country of the countries-list package', () => {
    const embedded = new Map(
      Object.entries(CONTINENTS).flatMap(([continent, codes]) => codes.split(',').map((c) => [c, continent])),
    );
    const expected = new Map(Object.entries(countries).map(([code, c]) => [code, c.continent]));
    expect(embedded).toEqual(expected);
  });

  it('checks Luhn and the phone heuristic in JavaScript', () => {
    for (const card of CARDS_VALID) expect(luhnOk(card)).toBe(true);
    expect(luhnOk(CARD_INVALID)).toBe(false);
    expect(luhnOk('4111 1111 1111 111x')).toBe(false);
    expect(isPhoneNumber('+49 30 901820')).toBe(true);
    expect(isPhoneNumber('05.01.2024 10')).toBe(false);
  });

  it('scrubs text in JavaScript by the documented rules', () => {
    for (const [input, expected] of [...PHONE_CASES, ...CARD_CASES]) {
      expect(scrubText(input, 'basic'), input).toBe(expected);
    }
    for (const [input, expected] of LEVEL_CASES) {
      expect(
        (['basic', 'enhanced', 'complete'] as const).map((l) => scrubText(input, l)),
        input,
      ).toEqual(expected);
      expect(scrubText(input, 'full')).toBe(input);
    }
    expect(scrubText(SUBJECT_TEXT, 'complete', SUBJECT)).toBe(
      'Thanks [name]! This is [name] ([email]); the [name] family; Jonathanson; van Gogh',
    );
    expect(scrubText(SUBJECT_TEXT, 'basic', SUBJECT)).toBe(
      'Thanks [name]! This is [name] ([email]); the [name] family; Jonathanson; van Gogh',
    );
    expect(scrubText(SUBJECT_TEXT, 'basic')).toBe(
      SUBJECT_TEXT.replace('jon.d@mail.example', 'jon.***@mail.example'),
    );
  });

  it('scrubs JSON values in JavaScript, keys included', () => {
    expect(scrubJson(JSON_DOC, 'complete')).toEqual({
      phone: '[phone]',
      note: 'mail [email] from [ip]',
      card: '[card]',
      count: 42,
      nested: [{ 'call [phone]': true }, 'plain', null],
    });
  });

  it('derives stable keyed pseudonyms that differ between keys', () => {
    expect(pseudonymToken('sess-1', KEY_A)).toBe(pseudonymToken('sess-1', KEY_A.toUpperCase()));
    expect(pseudonymToken('sess-1', KEY_A)).toMatch(/^anon_[0-9a-f]{16}$/);
    expect(pseudonymToken('sess-1', KEY_A)).not.toBe(pseudonymToken('sess-1', KEY_B));
    expect(pseudonymToken('sess-1', KEY_A)).not.toBe(pseudonymToken('sess-2', KEY_A));
    expect(pseudonymUuid('x', KEY_A)).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
  });
});

// ---- Database: the SQL functions and the projections built by anonymizeSql --------------

const TENANT = '10000000-0000-4000-8000-000000000001';
const SITE = '20000000-0000-4000-8000-000000000001';
const AGENT = '30000000-0000-4000-8000-000000000001';
const CUSTOMER_1 = '40000000-0000-4000-8000-000000000001';
const CUSTOMER_2 = '40000000-0000-4000-8000-000000000002';
const CONV = (n: number) => `50000000-0000-4000-8000-00000000000${n}`;
const MSG = (n: number) => `60000000-0000-4000-8000-00000000000${n}`;
const UA_CHROME =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';
const UA_SAFARI_IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1';

const MESSAGE_1 = `Hi, I'm Jonathan Doe, mail me at ${EMAILS[0]} or call ${PHONES[0]} / ${PHONES[1]}. Card ${CARDS_VALID[0]}, old ${CARD_INVALID}. My IP is ${IPS[0]} or ${IPS[1]}. Order #48213 from 2024.`;
const MESSAGE_2 = `Maria here: ${PHONES[2]}, ${PHONES[3]}, card ${CARDS_VALID[1]} and ${CARDS_VALID[2]}, ${EMAILS[1]}, ${IPS[2]}`;

const SEED = `
INSERT INTO tenants (id, name, slug, plan, timezone, home_country) VALUES ('${TENANT}', 'Acme', 'acme', 'pro', 'UTC', 'DE');
INSERT INTO sites (id, tenant_id, url, name) VALUES ('${SITE}', '${TENANT}', 'https://shop.example.com', 'Shop');
INSERT INTO team_members (id, tenant_id, name, email, role, password_hash)
  VALUES ('${AGENT}', '${TENANT}', 'Alex Agent', 'alex@acme.example', 'agent', 'hash-never-exported');
INSERT INTO customers (id, tenant_id, email, name, phone, country, segment) VALUES
  ('${CUSTOMER_1}', '${TENANT}', ${literal(EMAILS[0]!)}, 'Jonathan Doe', '+4930901820', 'DE', 'smb'),
  ('${CUSTOMER_2}', '${TENANT}', ${literal(EMAILS[1]!)}, 'Maria Garcia Lopez', '+14155552671', 'BR', 'consumer');
INSERT INTO conversations (id, tenant_id, site_id, customer_id, assigned_agent_id, session_id, start_timestamp, end_timestamp,
  customer_email, customer_name, ip_address, country, language, user_agent, status, satisfaction_feedback, internal_notes, custom_fields) VALUES
  ('${CONV(1)}', '${TENANT}', '${SITE}', '${CUSTOMER_1}', '${AGENT}', 'sess-aaaa-1', '2024-05-01T10:47:12Z', '2024-05-01T11:02:03Z',
   ${literal(EMAILS[0]!)}, 'Jonathan Doe', ${literal(IPS[0]!)}, 'DE', 'en', ${literal(UA_CHROME)}, 'resolved',
   ${literal(`Great! Reach me on ${PHONES[4]}, Jonathan`)}, ${literal(`Customer card ${CARDS_VALID[3]}`)},
   ${literal(JSON.stringify({ phone: PHONES[2], email: EMAILS[0] }))}),
  ('${CONV(2)}', '${TENANT}', '${SITE}', '${CUSTOMER_2}', NULL, 'sess-bbbb-2', '2024-05-02T23:59:59+05:30', NULL,
   ${literal(EMAILS[1]!)}, 'Maria Garcia Lopez', ${literal(IPS[1]!)}, 'BR', 'pt', ${literal(UA_SAFARI_IPHONE)}, 'unresolved',
   NULL, NULL, '{}'),
  ('${CONV(3)}', '${TENANT}', '${SITE}', '${CUSTOMER_1}', '${AGENT}', 'sess-aaaa-1', '2024-05-03T08:00:00Z', NULL,
   ${literal(EMAILS[0]!)}, 'Jonathan Doe', ${literal(`::ffff:${IPS[2]}`)}, 'JP', 'en', 'curl/8.5.0', 'in_progress',
   NULL, NULL, '{}');
INSERT INTO messages (id, tenant_id, conversation_id, created_at, sender_type, sender_id, content, message_length) VALUES
  ('${MSG(1)}', '${TENANT}', '${CONV(1)}', '2024-05-01T10:47:12Z', 'customer', NULL, ${literal(MESSAGE_1)}, 10),
  ('${MSG(2)}', '${TENANT}', '${CONV(1)}', '2024-05-01T10:48:00Z', 'human', '${AGENT}', 'Thanks Jonathan, noted.', 10),
  ('${MSG(3)}', '${TENANT}', '${CONV(2)}', '2024-05-02T18:30:00Z', 'customer', NULL, ${literal(MESSAGE_2)}, 10);
INSERT INTO consent_records (id, tenant_id, customer_id, purpose, granted, source, ip_address, recorded_at) VALUES
  ('70000000-0000-4000-8000-000000000001', '${TENANT}', '${CUSTOMER_1}', 'analytics', true, 'widget', ${literal(IPS[0]!)}, '2024-05-01T10:47:12Z');
`;

const PLANTED_EVERYWHERE = [
  ...CARDS_VALID,
  ...CARDS_VALID.map((c) => c.replace(/[ -]/g, '')),
  ...PHONES,
  '4930901820',
  '4155552671',
  '01711234567',
];
const PLANTED_ENHANCED = [...PLANTED_EVERYWHERE, ...EMAILS, ...IPS, 'Doe', 'Garcia', 'Lopez'];
const PLANTED_COMPLETE = [
  ...PLANTED_ENHANCED,
  'Jonathan',
  'Maria',
  'sess-aaaa',
  'sess-bbbb',
  CUSTOMER_1,
  CUSTOMER_2,
  AGENT,
  'Chrome',
  'Safari',
];

for (const dialect of DIALECTS) {
  describe(`anonymization in SQL on ${dialect}`, () => {
    let t: TestDatabase;
    const query = async <R = Record<string, unknown>>(text: string) =>
      (await sql.raw<R>(text).execute(t.database.db)).rows;

    async function exportRows(dataset: string, ctx: AnonymizeContext) {
      const d = datasets[dataset]!;
      const projection = d.fields
        .map((f) => `${anonymizeSql(f, f.sql, ctx)} AS ${quoteIdent(f.name)}`)
        .join(', ');
      return query(`SELECT ${projection} ${d.from} ORDER BY ${d.key.join(', ')}`);
    }
    const subjects: Record<string, AnonymizeContext['subject']> = {
      conversations: { name: 't.customer_name', email: 't.customer_email' },
      messages: { name: 'c.customer_name', email: 'c.customer_email' },
    };
    async function exportAll(level: PiiLevel, key = KEY_A) {
      const out: Record<string, Record<string, unknown>[]> = {};
      for (const dataset of ['conversations', 'messages', 'customers', 'consent_records', 'team_members']) {
        const subject = subjects[dataset];
        out[dataset] = await exportRows(dataset, { level, key, ...(subject ? { subject } : {}) });
      }
      return out;
    }
    /** Every cell as text, and the same with separators removed, for leak checks. */
    function haystacks(rows: unknown) {
      const text = JSON.stringify(rows);
      return [text, text.replace(/[ ()./-]/g, '')];
    }

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      await t.database.exec(SEED);
    });
    afterAll(() => t.drop());

    it('exports the planted values unchanged at full', async () => {
      const rows = await exportAll('full');
      expect(rows.conversations![0]).toMatchObject({
        customer_email: EMAILS[0],
        customer_name: 'Jonathan Doe',
        ip_address: IPS[0],
        session_id: 'sess-aaaa-1',
      });
      expect(rows.messages![0]!.message_content).toBe(MESSAGE_1);
    });

    it('masks at basic: email, first name, IP prefix, phone and card numbers', async () => {
      const rows = await exportAll('basic');
      const [c1, c2, c3] = rows.conversations!;
      expect(c1).toMatchObject({
        customer_email: 'jona***@example.com',
        customer_name: 'Jonathan',
        ip_address: '203.0.113.0',
        user_agent: UA_CHROME,
        country: 'DE',
        session_id: 'sess-aaaa-1',
        satisfaction_feedback: 'Great! Reach me on [phone], [name]',
        internal_notes: 'Customer card [card]',
        custom_fields: { phone: '[phone]', email: '[email]' },
      });
      expect(c2).toMatchObject({ customer_name: 'Maria', ip_address: '2001:db8:abcd::' });
      expect(c3).toMatchObject({ ip_address: '198.51.100.0' });
      expect(rows.messages![0]!.message_content).toBe(
        `Hi, I'm [name], mail me at [email] or call [phone] / [phone]. Card [card], old ${CARD_INVALID}. My IP is ${IPS[0]} or ${IPS[1]}. Order #48213 from 2024.`,
      );
      expect(rows.customers!.map((r) => r.phone)).toEqual([null, null]);
      for (const hay of haystacks(rows)) {
        for (const planted of PLANTED_EVERYWHERE) expect(hay).not.toContain(planted);
      }
    });

    it('removes contact data at enhanced and generalises network data', async () => {
      const rows = await exportAll('enhanced');
      const [c1, c2, c3] = rows.conversations!;
      expect(c1).toMatchObject({
        customer_email: null,
        customer_name: null,
        ip_address: '203.0.0.0',
        user_agent: 'Chrome',
        country: 'DE',
        satisfaction_feedback: 'Great! Reach me on [phone], [name]',
        custom_fields: { phone: '[phone]', email: '[email]' },
      });
      expect(c2).toMatchObject({ ip_address: '2001:db8::', user_agent: 'Safari' });
      expect(c3).toMatchObject({ ip_address: '198.51.0.0', user_agent: 'Other' });
      expect(rows.messages![0]!.message_content).toBe(
        `Hi, I'm [name], mail me at [email] or call [phone] / [phone]. Card [card], old ${CARD_INVALID}. My IP is [ip] or [ip]. Order #48213 from 2024.`,
      );
      expect(rows.messages![2]!.message_content).toBe(
        '[name] here: [phone], [phone], card [card] and [card], [email], [ip]',
      );
      for (const hay of haystacks(rows)) {
        for (const planted of PLANTED_ENHANCED) expect(hay).not.toContain(planted);
      }
    });

    it('removes every personal identifier at complete and pseudonymises ids per export key', async () => {
      const rows = await exportAll('complete');
      const [c1, c2, c3] = rows.conversations!;
      expect(c1).toMatchObject({
        customer_email: null,
        customer_name: null,
        ip_address: null,
        user_agent: null,
        country: 'EU',
        session_id: pseudonymToken('sess-aaaa-1', KEY_A),
        internal_notes: 'Customer card [card]',
      });
      expect(c2!.country).toBe('SA');
      expect(c3!.country).toBe('AS');
      // Same session and customer → same token within the export.
      expect(c3!.session_id).toBe(c1!.session_id);
      expect(c2!.session_id).not.toBe(c1!.session_id);
      // Timestamps rounded down to the hour, in UTC (23:59:59+05:30 is 18:29:59Z).
      expect(new Date(c1!.start_timestamp as string).toISOString()).toBe('2024-05-01T10:00:00.000Z');
      expect(new Date(c1!.end_timestamp as string).toISOString()).toBe('2024-05-01T11:00:00.000Z');
      expect(new Date(c2!.start_timestamp as string).toISOString()).toBe('2024-05-02T18:00:00.000Z');
      expect(c2!.end_timestamp).toBeNull();
      // Person ids are UUID-shaped tokens; uuid and text columns of the same person still join.
      expect(rows.consent_records![0]).toMatchObject({
        customer_id: pseudonymUuid(CUSTOMER_1, KEY_A),
        ip_address: null,
      });
      const human = rows.messages!.find((m) => m.sender_type === 'human')!;
      expect(human.sender_id).toBe(pseudonymUuid(AGENT, KEY_A));
      expect(human.message_content).toBe('Thanks [name], noted.');
      // Identifiers of no person stay.
      expect(rows.messages!.map((m) => m.conversation_id)).toEqual([CONV(1), CONV(1), CONV(2)]);
      expect(c1!.conversation_id).toBe(CONV(1));
      for (const hay of haystacks(rows.conversations)) {
        for (const planted of PLANTED_COMPLETE) expect(hay).not.toContain(planted);
      }
      for (const hay of haystacks(rows.messages)) {
        for (const planted of PLANTED_COMPLETE) expect(hay).not.toContain(planted);
      }
    });

    it('gives a different pseudonym under another key', async () => {
      const a = await exportRows('conversations', { level: 'complete', key: KEY_A });
      const b = await exportRows('conversations', { level: 'complete', key: KEY_B });
      expect(a[0]!.session_id).not.toBe(b[0]!.session_id);
      expect(b[0]!.session_id).toBe(pseudonymToken('sess-aaaa-1', KEY_B));
      const person = { name: 'customer_id', type: 'uuid', class: 'identifier', pii: 'person_id' } as const;
      const [row] = await query<{ a: string; b: string; a2: string }>(
        `SELECT ${anonymizeSql(person, `'${CUSTOMER_1}'::uuid`, { level: 'complete', key: KEY_A })} AS a,
                ${anonymizeSql(person, `'${CUSTOMER_1}'::uuid`, { level: 'complete', key: KEY_B })} AS b,
                ${anonymizeSql(person, `'${CUSTOMER_1}'::uuid`, { level: 'complete', key: KEY_A })} AS a2`,
      );
      expect(row!.a).toBe(pseudonymUuid(CUSTOMER_1, KEY_A));
      expect(row!.a2).toBe(row!.a);
      expect(row!.b).not.toBe(row!.a);
    });

    it('scrubs free text in SQL exactly like the JavaScript twin', async () => {
      const inputs = [
        ...PHONE_CASES.map(([i]) => i),
        ...CARD_CASES.map(([i]) => i),
        ...LEVEL_CASES.map(([i]) => i),
        MESSAGE_1,
        MESSAGE_2,
        SUBJECT_TEXT,
        ...MORE_SUBJECT_TEXTS,
        // U+0001 sends the SQL scanner down its slower path; the result must not change.
        `\u0001 ${MESSAGE_1} \u0001${CARDS_VALID[1]}\u0001 0171 1234567`,
        '',
      ];
      const values = inputs.map((text, n) => `(${n}, ${literal(text)})`).join(', ');
      for (const subject of [SUBJECT, ...MORE_SUBJECTS]) {
        const name = literal(subject.name);
        const email = subject.email === null ? 'NULL' : literal(subject.email);
        const rows = await query<{ n: number; lvl: number; plain: string; subject: string }>(
          `SELECT v.n, l.lvl, ferry_scrub_text(v.x, l.lvl) AS plain, ferry_scrub_text(v.x, l.lvl, ${name}, ${email}) AS subject
           FROM (VALUES ${values}) AS v(n, x) CROSS JOIN (VALUES (0), (1), (2), (3)) AS l(lvl) ORDER BY v.n, l.lvl`,
        );
        expect(rows).toHaveLength(inputs.length * 4);
        for (const row of rows) {
          const level = PII_LEVELS[row.lvl]!;
          const input = inputs[row.n]!;
          expect(row.plain, `${level}: ${input}`).toBe(scrubText(input, level));
          expect(row.subject, `${level} with subject ${subject.name}: ${input}`).toBe(
            scrubText(input, level, subject),
          );
        }
      }
      const [json] = await query<{ doc: unknown }>(
        `SELECT ferry_scrub_jsonb(${literal(JSON.stringify(JSON_DOC))}::jsonb, 3) AS doc`,
      );
      expect(json!.doc).toEqual(scrubJson(JSON_DOC, 'complete'));
      // Documents of strings only take the one-pass path in SQL; the walk in JavaScript must agree.
      for (const [n, doc] of STRING_DOCS.entries()) {
        for (const lvl of [1, 2, 3]) {
          const level = PII_LEVELS[lvl]!;
          const [row] = await query<{ plain: unknown; subject: unknown }>(
            `SELECT ferry_scrub_jsonb(${literal(JSON.stringify(doc))}::jsonb, ${lvl}) AS plain,
              ferry_scrub_jsonb(${literal(JSON.stringify(doc))}::jsonb, ${lvl}, ${literal(SUBJECT.name)}, ${literal(SUBJECT.email)}) AS subject`,
          );
          expect(row!.plain, `doc ${n} at ${level}`).toEqual(scrubJson(doc, level));
          expect(row!.subject, `doc ${n} at ${level} with subject`).toEqual(scrubJson(doc, level, SUBJECT));
        }
      }
      const [untouched] = await query<{ doc: unknown }>(
        `SELECT ferry_scrub_jsonb('{"a": [1, "b"], "c": "d"}'::jsonb, 3) AS doc`,
      );
      expect(untouched!.doc).toEqual({ a: [1, 'b'], c: 'd' });
    });

    it('masks IPs, emails and names and maps browsers and continents by field', async () => {
      const run = async (
        f: Pick<DatasetField, 'type' | 'class' | 'pii'>,
        level: PiiLevel,
        inputs: string[],
      ) => {
        const values = inputs.map((x, n) => `(${n}, ${literal(x)})`).join(', ');
        const rows = await query<{ out: string | null }>(
          `SELECT ${anonymizeSql(f, 'v.x', { level, key: KEY_A })} AS out FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
        );
        return rows.map((r) => r.out);
      };
      const ip = { type: 'string', class: 'network', pii: 'ip' } as const;
      const ips = [
        '203.0.113.77',
        '2001:db8:abcd:1234::1',
        '::FFFF:203.0.113.77',
        '10.1.2.3/32',
        'not an ip',
        '999.1.1.1',
      ];
      expect(await run(ip, 'basic', ips)).toEqual([
        '203.0.113.0',
        '2001:db8:abcd::',
        '203.0.113.0',
        '10.1.2.0',
        null,
        null,
      ]);
      expect(await run(ip, 'enhanced', ips)).toEqual([
        '203.0.0.0',
        '2001:db8::',
        '203.0.0.0',
        '10.1.0.0',
        null,
        null,
      ]);
      expect(await run(ip, 'complete', ips)).toEqual([null, null, null, null, null, null]);

      const email = { type: 'string', class: 'contact', pii: 'email' } as const;
      expect(
        await run(email, 'basic', [
          'Jonathan.Doe@Example.com',
          'al@x.io',
          'no-at-sign',
          'a@b@c.d',
          ' ab@c.de ',
        ]),
      ).toEqual(['Jona***@Example.com', 'al***@x.io', null, null, 'ab***@c.de']);
      const name = { type: 'string', class: 'contact', pii: 'name' } as const;
      expect(
        await run(name, 'basic', ['Maria Garcia Lopez', '  Jonathan\tDoe', 'Doe, John', 'Cher']),
      ).toEqual(['Maria', 'Jonathan', 'Doe', 'Cher']);

      const ua = { type: 'string', class: 'network', pii: 'user_agent' } as const;
      const agents: [string, string][] = [
        [UA_CHROME, 'Chrome'],
        [UA_SAFARI_IPHONE, 'Safari'],
        ['Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0', 'Firefox'],
        [`${UA_CHROME} Edg/124.0.2478.51`, 'Edge'],
        [`${UA_CHROME} OPR/109.0.0.0`, 'Opera'],
        [
          'Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36',
          'Samsung Internet',
        ],
        [
          'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1',
          'Chrome',
        ],
        ['curl/8.5.0', 'Other'],
      ];
      expect(
        await run(
          ua,
          'enhanced',
          agents.map(([a]) => a),
        ),
      ).toEqual(agents.map(([, family]) => family));
      expect(await run(ua, 'basic', [UA_CHROME])).toEqual([UA_CHROME]);

      const country = { type: 'string', class: 'location', pii: 'country' } as const;
      const codes = Object.keys(countries);
      expect(await run(country, 'complete', [...codes, 'de', 'ZZ'])).toEqual([
        ...codes.map((c) => countries[c as keyof typeof countries].continent),
        'EU',
        null,
      ]);
      expect(await run(country, 'enhanced', ['DE'])).toEqual(['DE']);
    });

    it('keeps Luhn-invalid numbers and checks Luhn in SQL', async () => {
      const [row] = await query<{ ok: boolean[]; bad: boolean }>(
        `SELECT ARRAY[${CARDS_VALID.map((c) => `ferry_luhn_ok(${literal(c)})`).join(', ')}] AS ok,
                ferry_luhn_ok(${literal(CARD_INVALID)}) AS bad`,
      );
      expect(row!.ok).toEqual(CARDS_VALID.map(() => true));
      expect(row!.bad).toBe(false);
    });

    it('streams an anonymized export through COPY', async () => {
      const d = datasets.conversations!;
      const ctx: AnonymizeContext = { level: 'complete', key: KEY_A, subject: subjects.conversations! };
      const out = t.database.copyOut({
        projection: d.fields.map((f) => `${anonymizeSql(f, f.sql, ctx)} AS ${quoteIdent(f.name)}`).join(', '),
        from: `${d.from} WHERE t.tenant_id = ${literal(TENANT)}{{KEY_RANGE}}`,
        key: d.key,
        options: 'FORMAT csv',
        header: true,
      });
      const chunks: Buffer[] = [];
      for await (const chunk of out) chunks.push(chunk as Buffer);
      const csv = Buffer.concat(chunks).toString('utf8');
      expect(csv.trimEnd().split('\n')[0]).toBe(d.fields.map((f) => f.name).join(','));
      expect(csv).toContain(pseudonymToken('sess-aaaa-1', KEY_A));
      for (const planted of PLANTED_COMPLETE) expect(csv).not.toContain(planted);
    });
  });
}
