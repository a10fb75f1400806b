import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateXML } from 'xmllint-wasm';
import { createApiKey } from '../src/auth/keys.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { buildApp, type FerryApp } from '../src/http/app.ts';
import { FEED_SETS } from '../src/odata/feed.ts';
import { filterComparisons } from '../src/odata/query-options.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { authTestConfig, bearer } from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const XSD = (name: string) => ({
  fileName: name,
  contents: readFileSync(new URL(`./fixtures/odata/${name}`, import.meta.url), 'utf8'),
});

type Row = Record<string, unknown>;

describe('docs/odata.md', () => {
  it('lists every entity set with its key, order and filters as the feed serves them', () => {
    const doc = readFileSync(new URL('../docs/odata.md', import.meta.url), 'utf8');
    const table = doc.slice(doc.indexOf('### Entity sets and their filters'), doc.indexOf('## Types'));
    const documented = table
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) =>
        l
          .split('|')
          .map((c) => c.trim())
          .slice(1, -1),
      );
    const served = [...FEED_SETS.values()].map((set) => {
      const comparisons = filterComparisons(set);
      const named = set.dataset.filters
        .filter((f) => f.name !== 'from' && f.name !== 'to' && !comparisons.some((c) => c.filter === f))
        .map((f) => `\`${f.name}\``);
      return [
        `\`${set.name}\``,
        set.key.join(', '),
        set.orderKey.join(', '),
        comparisons.map((c) => `\`${c.property} ${c.operator}\``).join(', ') || '—',
        named.join(', ') || '—',
      ];
    });
    expect(documented).toEqual(served);
  });
});
interface FeedPage {
  '@odata.context': string;
  '@odata.count'?: number;
  '@odata.nextLink'?: string;
  value: Row[];
}

for (const dialect of DIALECTS) {
  describe(`the OData v4 feed on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenantA: string;
    let tenantB: string;
    const keys: Record<string, string> = {};

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 45,
        messagesPerConversation: 3,
        seed: 17,
        ...defaultWindow(),
      });
      tenantA = summary.tenants[0]!.id;
      tenantB = summary.tenants[1]!.id;
      // No history window: these tests are about the feed, not plan limits.
      await sql`UPDATE tenants SET plan = 'enterprise'`.execute(t.database.db);
      app = await buildApp({
        database: t.database,
        config: authTestConfig({ FERRY_PUBLIC_URL: 'https://ferry.example.com' }),
      });
      keys.admin = (await createApiKey(t.database, { tenantId: tenantA, role: 'admin' })).key;
      keys.adminB = (await createApiKey(t.database, { tenantId: tenantB, role: 'admin' })).key;
      keys.analyst = (await createApiKey(t.database, { tenantId: tenantA, role: 'analyst' })).key;
    }, 120_000);
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    const get = (url: string, key = keys.admin!, headers: Record<string, string> = {}) =>
      app.inject({ url, headers: { ...bearer(key), ...headers } });

    /** Follows @odata.nextLink from `url` to the end; every page's rows in order. */
    async function walk(url: string, headers: Record<string, string> = {}, key = keys.admin!) {
      const pages: FeedPage[] = [];
      let next: string | undefined = url;
      while (next) {
        const res = await get(next.replace('https://ferry.example.com', ''), key, headers);
        expect(res.statusCode, res.body).toBe(200);
        const page = res.json() as FeedPage;
        pages.push(page);
        next = page['@odata.nextLink'];
        expect(pages.length).toBeLessThan(100);
      }
      return { pages, rows: pages.flatMap((p) => p.value) };
    }

    it('describes every table dataset in a $metadata that validates against the OASIS CSDL schema', async () => {
      const res = await get('/odata/v4/$metadata');
      expect(res.statusCode, res.body).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/xml/);
      expect(res.headers['odata-version']).toBe('4.0');
      const result = await validateXML({
        xml: [{ fileName: 'metadata.xml', contents: res.body }],
        schema: [XSD('edmx.xsd')],
        preload: [XSD('edm.xsd')],
      });
      expect(result.errors).toEqual([]);
      expect(result.valid).toBe(true);
      // Every table dataset but audit_trail, whose rows carry no id of their own (audit_log has them).
      const tables = Object.values(REFERENCE_DATAMAP.datasets).filter((d) => d.kind === 'table');
      const missing = tables.map((d) => d.name).filter((name) => !FEED_SETS.has(name));
      expect(missing).toEqual(['audit_trail']);
      expect(FEED_SETS.size).toBeGreaterThan(8);
      expect(res.body).toContain('<EntitySet Name="conversations" EntityType="Ferry.conversations"/>');
      expect(res.body).toContain('<Key><PropertyRef Name="conversation_id"/></Key>');
      expect(res.body).toMatch(
        /<Property Name="start_timestamp" Type="Edm.DateTimeOffset" Nullable="false" Precision="6">|<Property Name="start_timestamp" Type="Edm.DateTimeOffset" Precision="6">/,
      );

      const service = await get('/odata/v4/');
      expect(service.statusCode).toBe(200);
      const doc = service.json() as { '@odata.context': string; value: { name: string; url: string }[] };
      expect(doc['@odata.context']).toBe('https://ferry.example.com/odata/v4/$metadata');
      expect(doc.value.map((v) => v.name)).toEqual([...FEED_SETS.keys()]);
    });

    it('walks an entity set through @odata.nextLink and gets every row once, in key order', async () => {
      const { pages, rows } = await walk('/odata/v4/conversations?$count=true&include_pii=true', {
        prefer: 'odata.maxpagesize=7',
      });
      const expected = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${tenantA}
          ORDER BY start_timestamp, id`.execute(t.database.db)
      ).rows.map((r) => r.id);
      expect(expected.length).toBeGreaterThan(7 * 3);
      expect(rows.map((r) => r.conversation_id)).toEqual(expected);
      expect(pages.length).toBe(Math.ceil(expected.length / 7));
      for (const page of pages) {
        expect(page['@odata.count']).toBe(expected.length);
        expect(page['@odata.context']).toBe('https://ferry.example.com/odata/v4/$metadata#conversations');
      }
      // Every page but the last links on, and the links keep the request's options.
      expect(pages.slice(0, -1).every((p) => p['@odata.nextLink']?.includes('include_pii=true'))).toBe(true);
      expect(pages.at(-1)!['@odata.nextLink']).toBeUndefined();
      const first = await get('/odata/v4/conversations', keys.admin, { prefer: 'odata.maxpagesize=7' });
      expect(first.headers['preference-applied']).toBe('odata.maxpagesize=7');
      // The tenant's own rows only.
      const other = await walk('/odata/v4/conversations?$select=conversation_id', {}, keys.adminB);
      expect(other.rows.some((r) => expected.includes(r.conversation_id as string))).toBe(false);
    });

    it('maps $filter onto the declared filters and matches the same SQL written by hand', async () => {
      // A zone offset's `+` stays a plus sign in the query string (RFC 3986, not a form).
      const plus = await get(
        '/odata/v4/conversations/$count?$filter=start_timestamp%20ge%202020-01-01T01:00:00+01:00',
      );
      expect(plus.statusCode, plus.body).toBe(200);
      const since = '2020-01-01T00:00:00.000001Z';
      const filter =
        "conversation_status eq 'resolved' and satisfaction_score ge 3 and start_timestamp ge " + since;
      const { rows } = await walk(
        `/odata/v4/conversations?include_pii=true&$select=conversation_id,satisfaction_score,conversation_status&$filter=${encodeURIComponent(filter)}`,
      );
      const expected = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${tenantA}
          AND status = 'resolved' AND satisfaction_score >= 3 AND start_timestamp >= ${since}::timestamptz
          ORDER BY start_timestamp, id`.execute(t.database.db)
      ).rows.map((r) => r.id);
      expect(expected.length).toBeGreaterThan(0);
      expect(rows.map((r) => r.conversation_id)).toEqual(expected);
      expect(Object.keys(rows[0]!)).toEqual(['conversation_id', 'satisfaction_score', 'conversation_status']);
      const count = await get(`/odata/v4/conversations/$count?$filter=${encodeURIComponent(filter)}`);
      expect(count.statusCode, count.body).toBe(200);
      expect(count.body).toBe(String(expected.length));
      const ai = await walk('/odata/v4/messages?$filter=sender_type%20eq%20%27ai%27&$select=sender_type');
      expect(ai.rows.length).toBeGreaterThan(0);
      expect(new Set(ai.rows.map((r) => r.sender_type))).toEqual(new Set(['ai']));
      // A declared filter that compares no one property is a query option by its name.
      const chosen = (
        await sql<{
          segment: string;
        }>`SELECT cu.segment FROM conversations c JOIN customers cu ON cu.id = c.customer_id
          WHERE c.tenant_id = ${tenantA} AND cu.segment IS NOT NULL
          GROUP BY cu.segment ORDER BY count(*) DESC LIMIT 1`.execute(t.database.db)
      ).rows[0]!.segment;
      const segment = await walk(
        `/odata/v4/conversations?include_pii=true&customer_segment=${chosen}&$select=conversation_id`,
      );
      const enterprise = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${tenantA}
          AND customer_id IN (SELECT id FROM customers WHERE segment = ${chosen})
          ORDER BY start_timestamp, id`.execute(t.database.db)
      ).rows.map((r) => r.id);
      expect(enterprise.length).toBeGreaterThan(0);
      expect(segment.rows.map((r) => r.conversation_id)).toEqual(enterprise);
    });

    it('pages $skip and $top across responses', async () => {
      const { rows } = await walk(
        '/odata/v4/conversations?include_pii=true&$skip=5&$top=12&$select=conversation_id',
        {
          prefer: 'odata.maxpagesize=5',
        },
      );
      const expected = (
        await sql<{ id: string }>`SELECT id FROM conversations WHERE tenant_id = ${tenantA}
          ORDER BY start_timestamp, id OFFSET 5 LIMIT 12`.execute(t.database.db)
      ).rows.map((r) => r.id);
      expect(rows.map((r) => r.conversation_id)).toEqual(expected);
      const none = await get('/odata/v4/conversations?$top=0&$count=true');
      expect(none.statusCode).toBe(200);
      expect(none.json()).toMatchObject({ value: [], '@odata.count': 45 });
    });

    it('anonymizes as every export does, and serves JSON columns as their text', async () => {
      const { rows } = await walk(
        '/odata/v4/conversations?$select=conversation_id,customer_email,custom_fields',
        {
          prefer: 'odata.maxpagesize=50',
        },
        keys.analyst,
      );
      const emails = (
        await sql<{ customer_email: string | null }>`SELECT customer_email FROM conversations
          WHERE tenant_id = ${tenantA} AND customer_email IS NOT NULL`.execute(t.database.db)
      ).rows.map((r) => r.customer_email);
      expect(emails.length).toBeGreaterThan(0);
      expect(rows.some((r) => emails.includes(r.customer_email as string))).toBe(false);
      const withFields = rows.filter((r) => r.custom_fields !== null);
      expect(withFields.length).toBeGreaterThan(0);
      for (const r of withFields) {
        expect(typeof r.custom_fields).toBe('string');
        JSON.parse(r.custom_fields as string);
      }
    });

    it('takes the API key as a Basic password, and challenges for both schemes', async () => {
      const none = await app.inject({ url: '/odata/v4/$metadata' });
      expect(none.statusCode).toBe(401);
      expect(none.headers['www-authenticate']).toBe('Basic realm="ferry", Bearer realm="ferry"');
      expect(none.headers['content-type']).toMatch(/^application\/problem\+json/);
      const basic = (password: string) => ({
        authorization: `Basic ${Buffer.from(`excel:${password}`).toString('base64')}`,
      });
      const ok = await app.inject({ url: '/odata/v4/conversations?$top=1', headers: basic(keys.admin!) });
      expect(ok.statusCode, ok.body).toBe(200);
      const wrong = await app.inject({ url: '/odata/v4/conversations', headers: basic('fy_live_nope') });
      expect(wrong.statusCode).toBe(401);
      // Basic stays off the rest of the API.
      const api = await app.inject({ url: '/api/v1/usage', headers: basic(keys.admin!) });
      expect(api.statusCode).toBe(401);
      expect(api.headers['www-authenticate']).toBe('Bearer realm="ferry"');
    });

    it("keeps to the plan's history window and names it in $filter terms", async () => {
      await sql`UPDATE tenants SET plan = 'starter' WHERE id = ${tenantB}`.execute(t.database.db);
      try {
        const earliest = new Date(
          Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate()) -
            183 * 86_400_000,
        );
        const { rows } = await walk(
          '/odata/v4/conversations?$select=conversation_id,start_timestamp',
          {},
          keys.adminB,
        );
        const expected = (
          await sql<{ n: string }>`SELECT count(*) AS n FROM conversations WHERE tenant_id = ${tenantB}
            AND start_timestamp >= ${earliest.toISOString()}::timestamptz`.execute(t.database.db)
        ).rows[0]!.n;
        expect(rows.length).toBe(Number(expected));
        expect(rows.every((r) => Date.parse(r.start_timestamp as string) >= earliest.getTime())).toBe(true);
        const old = await get(
          `/odata/v4/conversations?$filter=${encodeURIComponent('start_timestamp ge 2000-01-01T00:00:00Z')}`,
          keys.adminB,
        );
        expect(old.statusCode).toBe(429);
        expect(old.json()).toMatchObject({ code: 'quota_exceeded' });
        expect(old.json().detail).toContain(
          `$filter: the starter plan serves history from ${earliest.toISOString()}`,
        );
      } finally {
        await sql`UPDATE tenants SET plan = 'enterprise' WHERE id = ${tenantB}`.execute(t.database.db);
      }
    });

    it('refuses what it cannot serve with a problem that names it, and no expression reaches SQL', async () => {
      const cases: [string, number, RegExp][] = [
        ['/odata/v4/nope', 404, /not an entity set/],
        ['/odata/v4/conversations?$expand=messages', 400, /\$expand/],
        ['/odata/v4/conversations?$orderby=customer_name%20desc', 400, /ordered by its key/],
        ['/odata/v4/conversations?$top=-1', 400, /\$top/],
        ['/odata/v4/conversations?$select=password_hash', 400, /no property/],
        ['/odata/v4/conversations?$format=xml', 400, /\$format/],
        ['/odata/v4/conversations?colour=red', 400, /not a filter/],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent("conversation_status eq 'resolved' or escalated eq true")}`,
          400,
          /only "and"/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent('customer_name eq 1')}`,
          400,
          /not a filter of conversations/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent('start_timestamp ge 2026-02-30T00:00:00Z')}`,
          400,
          /DateTimeOffset/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent('start_timestamp gt 2026-01-01T00:00:00Z')}`,
          400,
          /start_timestamp gt/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent("site_url eq 'x'' OR ''1''=''1'")}`,
          400,
          /not a site of this tenant/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent("conversation_status eq 'resolved''); DROP TABLE conversations; --'")}`,
          400,
          /status/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent('satisfaction_score ge 1; SELECT 1')}`,
          400,
          /whole number|and/,
        ],
        [
          `/odata/v4/conversations?$filter=${encodeURIComponent("conversation_status eq 'open")}`,
          400,
          /not closed/,
        ],
        ['/odata/v4/conversations?$skiptoken=abc', 400, /\$skiptoken/],
        ['/odata/v4/conversations?$top=1&$top=2', 400, /more than once/],
        ['/odata/v4/conversations?$filter=%E0%A4%A', 400, /percent-encoding/],
      ];
      for (const [url, status, message] of cases) {
        const res = await get(url);
        expect(res.statusCode, `${url}: ${res.body}`).toBe(status);
        expect(res.headers['content-type'], url).toMatch(/^application\/problem\+json/);
        expect(res.json().detail, url).toMatch(message);
      }
      const still = await sql<{ n: string }>`SELECT count(*) AS n FROM conversations`.execute(t.database.db);
      expect(Number(still.rows[0]!.n)).toBe(90);
    });
  });
}
