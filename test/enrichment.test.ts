import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import Bowser from 'bowser';
import { parse as parseCsv } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureChangeTracking } from '../src/collect/change-tracking.ts';
import { exportChanges } from '../src/collect/changes.ts';
import { syncIpLocation } from '../src/collect/enrichment.ts';
import { ConfigError, loadConfig } from '../src/config/config.ts';
import { planPage } from '../src/collect/paging.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { defaultWindow, seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';
import { sink } from './support/fixtures/streams.ts';
import { settle } from './support/wait.ts';

/**
 * Enriched conversation fields against both databases: the user-agent classes are checked
 * against bowser called here directly, the IP country against the ranges of the package's own
 * CSV looked up here in JavaScript, and the anonymization levels against the data map's classes.
 */

const require = createRequire(import.meta.url);
const IP_DIR = path.dirname(require.resolve('@ip-location-db/geo-whois-asn-country/package.json'));

/** The package's IPv4 ranges as numbers, for a lookup written apart from Ferry's SQL. */
const RANGES = readFileSync(path.join(IP_DIR, 'geo-whois-asn-country-ipv4-num.csv'), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => {
    const [start, end, country] = line.split(',');
    return { start: Number(start), end: Number(end), country: country! };
  });

const ipNumber = (ip: string) => ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
const ipText = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/** The package's IPv6 ranges as numbers. */
const RANGES6 = readFileSync(path.join(IP_DIR, 'geo-whois-asn-country-ipv6-num.csv'), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => {
    const [start, end, country] = line.split(',');
    return { start: BigInt(start!), end: BigInt(end!), country: country! };
  });

function ipv6Number(ip: string): bigint {
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  return groups.reduce((n, g) => n * 65536n + BigInt(Number.parseInt(g, 16)), 0n);
}

function countryOf(ip: string): string | null {
  if (/^[0-9a-f:]+$/i.test(ip) && ip.includes(':')) {
    const n = ipv6Number(ip);
    return RANGES6.find((r) => r.start <= n && n <= r.end)?.country ?? null;
  }
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || ip.split('.').some((p) => Number(p) > 255)) return null;
  const n = ipNumber(ip);
  let lo = 0;
  let hi = RANGES.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = RANGES[mid]!;
    if (n < r.start) hi = mid - 1;
    else if (n > r.end) lo = mid + 1;
    else return r.country;
  }
  return null;
}

/** The last address of the first range of a country in the package's data. */
const addressIn = (country: string) => ipText(RANGES.find((r) => r.country === country)!.end);

/** One IPv6 range of the package: its first line for JP. */
const IPV6_JP = readFileSync(path.join(IP_DIR, 'geo-whois-asn-country-ipv6.csv'), 'utf8')
  .split('\n')
  .find((line) => line.endsWith(',JP'))!
  .split(',')[0]!;

const LONG_UA = `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 ${'x'.repeat(4000)}`;
const ODD_UA = 'Mozilla/5.0 "quoted", with\nnewline 🚀 =cmd|calc';
/** Chosen rows: [ip, user agent]; the ip_region expected for each country is UN M49's sub-region. */
const CHOSEN: [string | null, string | null][] = [
  [addressIn('DE'), LONG_UA],
  [
    addressIn('JP'),
    'Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile/15E148 Safari/604.1',
  ],
  [addressIn('BR'), ODD_UA],
  [IPV6_JP, 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'],
  ['not an address', null],
  [null, ''],
  [
    '300.1.2.3',
    'Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 SamsungBrowser/4.0 TV Safari/538.1',
  ],
];
const REGION: Record<string, string> = {
  DE: 'Western Europe',
  JP: 'Eastern Asia',
  BR: 'Latin America and the Caribbean',
};

const ENRICHED = ['device_class', 'browser', 'os', 'ip_country', 'ip_region'];
const COLUMNS = ['conversation_id', 'ip_address', 'user_agent', ...ENRICHED];

for (const dialect of DIALECTS) {
  describe(`enriched conversation fields (${dialect})`, () => {
    let t: TestDatabase;
    let tenantId: string;
    let otherTenant: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 2,
        conversations: 60,
        messagesPerConversation: 1,
        seed: 24,
        ...defaultWindow(),
        secretKey: 'enrichment-test-secret-0123456789abcdef',
      });
      tenantId = summary.tenants[0]!.id;
      otherTenant = summary.tenants[1]!.id;
      const ids = await sql<{ id: string }>`
        SELECT id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY id LIMIT ${CHOSEN.length}`.execute(
        t.database.db,
      );
      for (const [i, [ip, ua]] of CHOSEN.entries())
        await sql`UPDATE conversations SET ip_address = ${ip}, user_agent = ${ua} WHERE id = ${ids.rows[i]!.id}`.execute(
          t.database.db,
        );
      await syncIpLocation(t.database, true);
    }, 300_000);
    afterAll(async () => {
      await t?.drop();
    });

    async function exportRows(
      input: { columns?: string[]; pii?: string; filters?: Record<string, string> },
      tenant = tenantId,
    ): Promise<Record<string, string>[]> {
      const request = parseExportRequest({
        tenantId: tenant,
        dataset: 'conversations',
        format: 'csv',
        csvGuard: false,
        ...(input.columns ? { columns: input.columns } : {}),
        pii: input.pii ?? 'full',
        ...(input.filters ? { filters: input.filters } : {}),
      });
      const { out, text } = sink();
      await exportDataset(t.database, request, out);
      return parseCsv(text(), { columns: true }) as Record<string, string>[];
    }

    const parsedRows = async () =>
      Number(
        (await sql<{ n: number }>`SELECT count(*)::int AS n FROM user_agent_classes`.execute(t.database.db))
          .rows[0]!.n,
      );

    it('an export that does not name them has none of them and parses nothing', async () => {
      const rows = await exportRows({});
      expect(rows.length).toBe(60);
      for (const name of ENRICHED) expect(Object.keys(rows[0]!)).not.toContain(name);
      expect(await parsedRows()).toBe(0);
    });

    it('gives the classes bowser gives each user agent, parsing each distinct string once', async () => {
      const rows = await exportRows({ columns: COLUMNS });
      expect(rows.length).toBe(60);
      for (const row of rows) {
        if (!row.user_agent) {
          expect([row.device_class, row.browser, row.os]).toEqual(['', '', '']);
          continue;
        }
        const parsed = Bowser.parse(row.user_agent);
        expect(row.device_class, row.user_agent).toBe(parsed.platform.type ?? '');
        expect(row.browser, row.user_agent).toBe(parsed.browser.name ?? '');
        expect(row.os, row.user_agent).toBe(parsed.os.name ?? '');
      }
      expect(rows.find((r) => r.user_agent === ODD_UA)).toBeDefined();
      expect(rows.find((r) => r.user_agent === LONG_UA)?.browser).toBe('Chrome');
      expect(new Set(rows.map((r) => r.device_class))).toContain('tablet');
      const distinct = await sql<{ n: number }>`
        SELECT count(DISTINCT user_agent)::int AS n FROM conversations
        WHERE tenant_id = ${tenantId} AND user_agent IS NOT NULL`.execute(t.database.db);
      expect(await parsedRows()).toBe(distinct.rows[0]!.n);
      const before = await sql<{
        at: string;
      }>`SELECT max(parsed_at)::text AS at FROM user_agent_classes`.execute(t.database.db);
      await exportRows({ columns: ['conversation_id', 'browser'] });
      const after = await sql<{
        at: string;
      }>`SELECT max(parsed_at)::text AS at FROM user_agent_classes`.execute(t.database.db);
      expect(after.rows[0]!.at).toBe(before.rows[0]!.at);
    });

    it("parses only the export's own rows: another tenant's new user agent waits for its own export", async () => {
      const before = await parsedRows();
      await sql`UPDATE conversations SET user_agent = 'Mozilla/5.0 (Windows NT 10.0) Firefox/121.0 only-other-tenant'
        WHERE id = (SELECT id FROM conversations WHERE tenant_id = ${otherTenant} ORDER BY id LIMIT 1)`.execute(
        t.database.db,
      );
      await exportRows({ columns: ['conversation_id', 'os'] });
      expect(await parsedRows()).toBe(before);
      const rows = await exportRows({ columns: ['user_agent', 'browser'] }, otherTenant);
      expect(rows.find((r) => r.user_agent?.endsWith('only-other-tenant'))?.browser).toBe('Firefox');
    });

    it("gives the country the package's ranges hold, and its UN M49 region", async () => {
      const rows = await exportRows({ columns: COLUMNS });
      for (const row of rows) {
        expect(row.ip_country, row.ip_address).toBe(countryOf(row.ip_address!) ?? '');
        if (REGION[row.ip_country!]) expect(row.ip_region).toBe(REGION[row.ip_country!]);
        if (!row.ip_country) expect(row.ip_region).toBe('');
      }
      const countries = new Set(rows.map((r) => r.ip_country));
      for (const c of ['DE', 'JP', 'BR']) expect(countries).toContain(c);
      expect(rows.find((r) => r.ip_address === IPV6_JP)?.ip_country).toBe('JP');
      expect(rows.find((r) => r.ip_address === 'not an address')?.ip_country).toBe('');
      expect(rows.find((r) => r.ip_address === '300.1.2.3')?.ip_country).toBe('');
      // The seeded addresses are looked up too, not only the chosen ones.
      expect(rows.filter((r) => r.ip_country).length).toBeGreaterThan(CHOSEN.length);
    });

    it('hides them as their classes say at each anonymization level', async () => {
      const full = await exportRows({ columns: COLUMNS });
      const byId = new Map(full.map((r) => [r.conversation_id, r]));
      const basic = await exportRows({ columns: COLUMNS, pii: 'basic' });
      const enhanced = await exportRows({ columns: COLUMNS, pii: 'enhanced' });
      const complete = await exportRows({ columns: COLUMNS, pii: 'complete' });
      const continents = await sql<{ country: string; continent: string | null }>`
        SELECT x.country, ferry_continent(x.country) AS continent
        FROM (SELECT DISTINCT ferry_ip_country(ip_address) AS country FROM conversations
          WHERE tenant_id = ${tenantId}) x WHERE x.country IS NOT NULL`.execute(t.database.db);
      const continent = new Map(continents.rows.map((r) => [r.country, r.continent ?? '']));
      for (const row of basic) {
        const f = byId.get(row.conversation_id)!;
        expect([row.device_class, row.browser, row.os, row.ip_country, row.ip_region]).toEqual([
          f.device_class,
          f.browser,
          f.os,
          f.ip_country,
          f.ip_region,
        ]);
      }
      for (const row of enhanced) {
        const f = byId.get(row.conversation_id)!;
        expect([row.device_class, row.browser, row.os, row.ip_country]).toEqual([
          f.device_class,
          f.browser,
          f.os,
          f.ip_country,
        ]);
        expect(row.ip_region).toBe('');
      }
      for (const row of complete) {
        const f = byId.get(row.conversation_id)!;
        expect([row.device_class, row.browser, row.os, row.ip_region]).toEqual(['', '', '', '']);
        expect(row.ip_country).toBe(f.ip_country ? continent.get(f.ip_country) : '');
      }
      expect(complete.some((r) => r.ip_country === 'EU')).toBe(true);
    });

    it("the paged API parses a page's user agents before writing it", async () => {
      const fresh =
        'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/121.0 Mobile Safari/537.36 paged';
      await sql`UPDATE conversations SET user_agent = ${fresh}
        WHERE id = (SELECT id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY start_timestamp DESC, id DESC LIMIT 1)`.execute(
        t.database.db,
      );
      const request = parseExportRequest({
        tenantId,
        dataset: 'conversations',
        format: 'csv',
        pii: 'full',
        columns: ['conversation_id', 'user_agent', 'device_class', 'browser', 'os'],
      });
      const rows: Record<string, string>[] = [];
      let cursor: string | undefined;
      do {
        const page = await planPage(t.database, request, { pageSize: 25, ...(cursor ? { cursor } : {}) });
        const { out, text } = sink();
        await page.write(out);
        rows.push(...(parseCsv(text(), { columns: true }) as Record<string, string>[]));
        cursor = page.endOfStream ? undefined : (page.nextCursor ?? undefined);
      } while (cursor);
      expect(rows.length).toBe(60);
      const parsed = Bowser.parse(fresh);
      expect(rows.find((r) => r.user_agent === fresh)).toMatchObject({
        device_class: parsed.platform.type,
        browser: parsed.browser.name,
        os: parsed.os.name,
      });
    });

    it('the change feed parses the user agents of what it sends', async () => {
      await ensureChangeTracking(t.database.db, REFERENCE_DATAMAP);
      const request = parseExportRequest({
        tenantId,
        dataset: 'conversations',
        format: 'ndjson',
        pii: 'full',
        columns: ['conversation_id', 'user_agent', 'browser', 'os'],
      });
      const first = sink();
      const start = await exportChanges(t.database, request, null, first.out);
      const changed =
        'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Version/17.2 Safari/605.1.15 feed';
      await sql`UPDATE conversations SET user_agent = ${changed}
        WHERE id = (SELECT id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY id DESC LIMIT 1)`.execute(
        t.database.db,
      );
      // The feed sends a change once every transaction older than it has ended; other suites'
      // transactions on the same server may still be open.
      await settle(t.database);
      const next = sink();
      await exportChanges(t.database, request, start.nextCursor, next.out);
      const rows = next
        .text()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      const parsed = Bowser.parse(changed);
      expect(rows.find((r) => r.user_agent === changed)).toMatchObject({
        browser: parsed.browser.name,
        os: parsed.os.name,
      });
    });

    it('refuses the location fields while IP location is off, and keeps the user-agent ones', async () => {
      await syncIpLocation(t.database, false);
      try {
        const error = await exportRows({ columns: ['conversation_id', 'ip_country'] }).catch(
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(FerryError);
        expect((error as FerryError).code).toBe('invalid_parameter');
        expect((error as FerryError).message).toContain('FERRY_IP_LOCATION');
        const rows = await exportRows({ columns: ['conversation_id', 'device_class'] });
        expect(rows.length).toBe(60);
      } finally {
        await syncIpLocation(t.database, true);
      }
      const rows = await exportRows({ columns: ['ip_address', 'ip_country'] });
      expect(rows.find((r) => r.ip_address === IPV6_JP)?.ip_country).toBe('JP');
    });
  });
}

describe('FERRY_IP_LOCATION', () => {
  it('is off unless set to on, and refuses anything else naming the variable', () => {
    expect(loadConfig({}).ipLocation).toBe(false);
    expect(loadConfig({ FERRY_IP_LOCATION: '' }).ipLocation).toBe(false);
    expect(loadConfig({ FERRY_IP_LOCATION: 'on' }).ipLocation).toBe(true);
    expect(loadConfig({ FERRY_IP_LOCATION: 'off' }).ipLocation).toBe(false);
    expect(() => loadConfig({ FERRY_IP_LOCATION: 'yes' })).toThrow(ConfigError);
    expect(() => loadConfig({ FERRY_IP_LOCATION: 'yes' })).toThrow(/FERRY_IP_LOCATION/);
  });
});
