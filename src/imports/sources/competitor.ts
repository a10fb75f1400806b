import { open } from 'node:fs/promises';
import path from 'node:path';
import { isNdjson, jsonRecords } from '../read.ts';
import type {
  ImportEntity,
  ImportInput,
  ImportItem,
  ImportLimits,
  ImportRef,
  ImportSource,
} from '../types.ts';

/**
 * Shared parts of the competitor importers (Zendesk, Intercom, Chatwoot, Freshdesk, Help
 * Scout, docs/migration/): finding the exported API pages among the input files, reading
 * them as a stream, turning the vendors' times, HTML bodies, countries and languages into
 * Ferry's values, and building items. Each vendor module keeps only its own mapping.
 */

/** One record of an exported file, with where it is for errors and the rejected-items file. */
export interface SourceRecord {
  readonly value: unknown;
  /** Input-relative path of the file. */
  readonly file: string;
  /** `tickets.json at byte 1234`, `tickets.ndjson line 12`. */
  readonly location: string;
}

export type Json = Record<string, unknown>;

const JSON_FILE = /\.(json|ndjson|jsonl)$/i;

function ignored(file: string): boolean {
  return file.split('/').some((part) => part.startsWith('.') || part === '__MACOSX');
}

/** Page order: `tickets.json`, `tickets-2.json`, `tickets-10.json` (numbers compare as numbers). */
function byName(a: string, b: string): number {
  const stems = a.replace(JSON_FILE, '').localeCompare(b.replace(JSON_FILE, ''), 'en', { numeric: true });
  return stems !== 0 ? stems : a.localeCompare(b, 'en');
}

/**
 * The page files of one resource, in page order: `tickets.json`, `tickets-2.json`,
 * `tickets_0003.ndjson`, at any depth (an archive may hold a top folder).
 */
export function resourceFiles(input: ImportInput, resource: string): string[] {
  return input.files
    .filter((f) => {
      if (ignored(f) || !JSON_FILE.test(f)) return false;
      const stem = path.posix.basename(f).replace(JSON_FILE, '');
      return stem === resource || stem.startsWith(`${resource}-`) || stem.startsWith(`${resource}_`);
    })
    .sort(byName);
}

/** Files in a folder named `dir` (at any depth), e.g. `comments/123.json`, with their stem (`123`). */
export function folderFiles(input: ImportInput, dir: string): { file: string; stem: string }[] {
  return input.files
    .filter((f) => !ignored(f) && JSON_FILE.test(f) && path.posix.basename(path.posix.dirname(f)) === dir)
    .sort(byName)
    .map((file) => ({ file, stem: path.posix.basename(file).replace(JSON_FILE, '') }));
}

/** The id a per-record file is named after: `123.json` and its further pages `123-2.json`. */
export function stemId(stem: string): string {
  return stem.replace(/[-_]\d+$/, '');
}

/** A warning naming the input files a source did not read. */
export function unusedFilesWarning(
  input: ImportInput,
  used: ReadonlySet<string>,
  system: string,
): string | null {
  const unused = input.files.filter((f) => !used.has(f) && !ignored(f));
  if (unused.length === 0) return null;
  const shown = unused.slice(0, 10).join(', ');
  return `${unused.length} file(s) are not read by the ${system} import: ${shown}${unused.length > 10 ? ', …' : ''}`;
}

/**
 * The records of one file: an NDJSON file holds one record a line; a JSON file holds either a
 * top-level array of records or an API response with them under `envelope` (`$.tickets.*`,
 * or `$` for a file holding one object).
 */
export async function* readRecords(
  input: ImportInput,
  file: string,
  envelope: string,
  limits: ImportLimits,
): AsyncGenerator<SourceRecord> {
  const abs = path.join(input.root, file);
  if (isNdjson(file)) {
    for await (const r of jsonRecords(abs, { paths: ['$'], limits, name: file }))
      yield { value: r.value, file, location: `${file} line ${String(r.key)}` };
    return;
  }
  const paths = envelope !== '$' && (await firstChar(abs)) === '[' ? ['$.*'] : [envelope];
  for await (const r of jsonRecords(abs, { paths, limits, name: file }))
    yield { value: r.value, file, location: `${file} at byte ${r.offset}` };
}

/** The first character of a file after a byte-order mark and white space. */
async function firstChar(file: string): Promise<string | null> {
  const handle = await open(file, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    const head = buf
      .subarray(0, bytesRead)
      .toString('utf8')
      .replace(/^\uFEFF/, '');
    const m = /\S/.exec(head);
    return m ? m[0] : null;
  } finally {
    await handle.close();
  }
}

// ---- values ---------------------------------------------------------------------------------

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function obj(value: unknown): Json {
  return isObject(value) ? value : {};
}

export function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** Text of a string (empty → null); numbers and booleans as text. */
export function text(value: unknown): string | null {
  if (typeof value === 'string') return value === '' ? null : value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/** An id as text: integers (also those beyond 2^53, which the reader gives as digits) or strings. */
export function idText(value: unknown): string | null {
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : null;
  if (typeof value === 'string') {
    const t = value.trim();
    return t === '' ? null : t;
  }
  return null;
}

export function bool(value: unknown): boolean | null {
  return typeof value === 'boolean' ? value : null;
}

/** Text values of a list (tags). */
export function texts(value: unknown): string[] {
  return list(value).flatMap((v) => (typeof v === 'string' && v !== '' ? [v] : []));
}

const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$/;
const UNIX = /^(\d{1,12})(?:\.(\d+))?$/;
/** 9999-12-31T23:59:59Z */
const LAST_SECOND = 253402300799;

/**
 * A time as ISO 8601 text: ISO text is kept as written (so microseconds survive); unix
 * seconds (a number, or digits, with an optional fraction as Chatwoot writes them) become
 * UTC text with the fraction kept to the microsecond. Anything else is null.
 */
export function isoTime(value: unknown): string | null {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return null;
    return unixText(String(value));
  }
  if (typeof value !== 'string') return null;
  const t = value.trim();
  if (UNIX.test(t)) return unixText(t);
  if (!ISO.test(t)) return null;
  const date = t.slice(0, 10);
  return Number.isNaN(Date.parse(`${date}T00:00:00Z`)) ? null : t;
}

function unixText(t: string): string | null {
  const m = UNIX.exec(t);
  if (!m) return null;
  const seconds = Number(m[1]);
  if (seconds > LAST_SECOND) return null;
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  const fraction = (m[2] ?? '').slice(0, 6).replace(/0+$/, '');
  return fraction ? `${base}.${fraction}Z` : `${base}Z`;
}

/** Milliseconds since the epoch of an ISO text from `isoTime` (no offset: UTC). */
export function timeMs(iso: string | null): number | null {
  if (!iso) return null;
  const hasZone = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/.test(iso) && iso.length > 10;
  const ms = Date.parse(hasZone ? iso.replace(' ', 'T') : `${iso.replace(' ', 'T')}Z`);
  return Number.isNaN(ms) ? null : ms;
}

/** The latest of some times (ISO texts), or null. */
export function latest(...times: (string | null)[]): string | null {
  let best: string | null = null;
  let bestMs = -Infinity;
  for (const t of times) {
    const ms = timeMs(t);
    if (ms !== null && ms > bestMs) {
      best = t;
      bestMs = ms;
    }
  }
  return best;
}

/** Whole minutes from start to end; null when either is unknown or the end is before the start. */
export function minutesBetween(start: string | null, end: string | null): number | null {
  const a = timeMs(start);
  const b = timeMs(end);
  if (a === null || b === null || b < a) return null;
  return Math.round((b - a) / 60000);
}

/** Length in characters (Unicode code points, as PostgreSQL's char_length counts them). */
export function charLength(s: string): number {
  let n = 0;
  for (const _ of s) n += 1;
  return n;
}

/** A language tag as BCP 47 (`en_US` → `en-US`), or `und` when there is none or it is not a tag. */
export function languageTag(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') return 'und';
  try {
    const [tag] = Intl.getCanonicalLocales(value.trim().replace(/_/g, '-'));
    return tag ?? 'und';
  } catch {
    return 'und';
  }
}

let regions: Map<string, string> | null = null;
/** Region codes that name no country: unions, pseudo-locales, unknown. */
const NOT_COUNTRIES = new Set(['EU', 'EZ', 'UN', 'QO', 'XA', 'XB', 'ZZ']);

/** ISO 3166-1 alpha-2 codes by their upper-case code and by their English name in lower case. */
function regionIndex(): Map<string, string> {
  if (regions) return regions;
  const names = new Intl.DisplayNames(['en'], { type: 'region' });
  const index = new Map<string, string>();
  const A = 'A'.charCodeAt(0);
  for (let i = 0; i < 26; i++) {
    for (let j = 0; j < 26; j++) {
      const code = String.fromCharCode(A + i, A + j);
      const name = names.of(code);
      if (!name || name === code || NOT_COUNTRIES.has(code)) continue;
      // Withdrawn codes (UK, DD, YU) stand for the country's current code.
      const current = new Intl.Locale(`und-${code}`).region ?? code;
      index.set(code, current);
      index.set(name.toLowerCase(), current);
    }
  }
  regions = index;
  return index;
}

/** An ISO 3166-1 alpha-2 country from a code (`de`) or an English name (`Germany`); else null. */
export function countryCode(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const t = value.trim();
  if (t === '') return null;
  const index = regionIndex();
  return /^[a-z]{2}$/i.test(t) ? (index.get(t.toUpperCase()) ?? null) : (index.get(t.toLowerCase()) ?? null);
}

// ---- HTML -----------------------------------------------------------------------------------

const NAMED: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  ndash: '–',
  mdash: '—',
  hellip: '…',
  lsquo: '‘',
  rsquo: '’',
  ldquo: '“',
  rdquo: '”',
  laquo: '«',
  raquo: '»',
  bull: '•',
  middot: '·',
  copy: '©',
  reg: '®',
  trade: '™',
  euro: '€',
  pound: '£',
  shy: '',
  zwnj: '\u200c',
  zwj: '\u200d',
  lrm: '\u200e',
  rlm: '\u200f',
};

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code =
        name[1] === 'x' || name[1] === 'X'
          ? Number.parseInt(name.slice(2), 16)
          : Number.parseInt(name.slice(1), 10);
      // NUL, surrogates and values past Unicode cannot be stored as text: the replacement character.
      if (!Number.isFinite(code) || code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return '\uFFFD';
      return String.fromCodePoint(code);
    }
    return NAMED[name.toLowerCase()] ?? whole;
  });
}

const TAG = /<\/?[a-zA-Z][^>]*>/g;

/** Whether a body is HTML (has a tag), rather than plain text that happens to hold a `<`. */
export function looksLikeHtml(s: string): boolean {
  return /<\/?[a-zA-Z][a-zA-Z0-9]*(?:\s[^>]*)?\/?>/.test(s);
}

/**
 * Plain text of an HTML body, as a reader sees it: paragraphs, line breaks and list items
 * become newlines, tags go, entities are decoded, white space of the markup collapses (but
 * not inside `<pre>`). Text without tags is returned unchanged.
 */
export function htmlToText(html: string): string {
  if (!looksLikeHtml(html)) return html;
  let s = html
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/<(script|style|head|title)\b[^>]*>[\s\S]*?<\/\1\s*>/gi, '');
  const pres: string[] = [];
  s = s.replace(/<pre\b[^>]*>([\s\S]*?)<\/pre\s*>/gi, (_m, inner: string) => {
    pres.push(decodeEntities(inner.replace(/<br\s*\/?>/gi, '\n').replace(TAG, '')).replace(/\r\n?/g, '\n'));
    return `\u0000pre${pres.length - 1}\u0000`;
  });
  // Block boundaries are marked first (\0P a paragraph, \0D a line), then a run of them becomes
  // one blank line or one line break, as a browser collapses nested blocks.
  s = s
    .replace(/[ \t\n\r\f]+/g, ' ')
    .replace(/<br\s*\/?>/gi, '\n')
    .replace(/<li\b[^>]*>/gi, '\u0000D- ')
    .replace(/<\/li\s*>/gi, '\u0000D')
    .replace(/<\/?(p|h[1-6]|blockquote|table|ul|ol)\b[^>]*>/gi, '\u0000P')
    .replace(/<\/?(div|tr|section|article|header|footer)\b[^>]*>/gi, '\u0000D')
    .replace(/<\/t[dh]\s*>/gi, ' ')
    .replace(TAG, '')
    .replace(/<![^>]*>/g, '')
    .replace(/ *(?:\u0000[PD] *)+/g, (run) => (run.includes('\u0000P') ? '\n\n' : '\n'));
  s = decodeEntities(s)
    .split('\n')
    .map((line) => line.replace(/^ +| +$/g, ''))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .replace(/^\n+|\n+$/g, '');
  if (pres.length === 0) return s;
  return s
    .replace(/[ \n]*\u0000pre(\d+)\u0000[ \n]*/g, (_m, i: string) => `\n${pres[Number(i)] ?? ''}\n`)
    .replace(/^\n+|\n+$/g, '');
}

// ---- senders and bots -----------------------------------------------------------------------

/**
 * Whether a teammate's name marks it as a bot: the word `bot` in any case, or `AI` in
 * capitals (`Answer Bot`, `Freddy AI`, `Support-bot`), not a person named `Ai` or `Abbott`.
 */
export function isBotName(name: string | null): boolean {
  if (!name) return false;
  return (
    /(^|[^\p{L}\p{N}])bot($|[^\p{L}\p{N}])/iu.test(name) || /(^|[^\p{L}\p{N}])AI($|[^\p{L}\p{N}])/u.test(name)
  );
}

export type SenderType = 'customer' | 'ai' | 'human';

/**
 * What the messages of each conversation show, gathered in one pass before the
 * conversations are mapped: when the first AI message came and when the last public human
 * reply did, so that a conversation the AI handed over to a person is `escalated`.
 */
export class Handoffs {
  private readonly firstAi = new Map<string, number>();
  private readonly lastHuman = new Map<string, number>();

  see(conversation: string, sender: SenderType, createdAt: string | null, internalNote: boolean): void {
    const ms = timeMs(createdAt);
    if (ms === null) return;
    if (sender === 'ai') {
      const seen = this.firstAi.get(conversation);
      if (seen === undefined || ms < seen) this.firstAi.set(conversation, ms);
    } else if (sender === 'human' && !internalNote) {
      const seen = this.lastHuman.get(conversation);
      if (seen === undefined || ms > seen) this.lastHuman.set(conversation, ms);
    }
  }

  /** A public human reply came after the first AI message. */
  escalated(conversation: string): boolean {
    const ai = this.firstAi.get(conversation);
    const human = this.lastHuman.get(conversation);
    return ai !== undefined && human !== undefined && human > ai;
  }
}

// ---- items ----------------------------------------------------------------------------------

export function ref(entity: ImportEntity, sourceType: string, sourceId: string | null): ImportRef | null {
  return sourceId === null ? null : { entity, sourceType, sourceId };
}

export interface ItemParts {
  readonly entity: ImportEntity;
  readonly sourceType: string;
  readonly sourceId: string | null;
  readonly values: Record<string, unknown>;
  readonly refs?: Record<string, ImportRef | null>;
  readonly soft?: Record<string, ImportRef | null>;
  readonly updatedAt?: string | null;
  readonly location: string;
  readonly raw: unknown;
  readonly errors?: readonly string[];
}

/** An item; a soft reference without an id is left out, and errors only when there are some. */
export function makeItem(p: ItemParts): ImportItem {
  const soft: Record<string, ImportRef> = {};
  for (const [k, v] of Object.entries(p.soft ?? {})) if (v) soft[k] = v;
  // A customer's segment is a default here, and a country the source lacks is no news: they
  // fill a new row, and never overwrite what the tenant knows of a customer it already has.
  const createOnly =
    p.entity === 'customers' ? ['segment', ...(p.values.country == null ? ['country'] : [])] : undefined;
  return {
    ...(createOnly ? { createOnly } : {}),
    entity: p.entity,
    sourceType: p.sourceType,
    sourceId: p.sourceId ?? '',
    values: p.values,
    ...(p.refs ? { refs: p.refs } : {}),
    ...(Object.keys(soft).length > 0 ? { soft } : {}),
    updatedAt: p.updatedAt ?? null,
    location: p.location,
    raw: { kind: 'json', value: p.raw },
    ...(p.errors && p.errors.length > 0 ? { errors: p.errors } : {}),
  };
}

/** The site item every competitor import has: one per source account. */
export function siteItem(system: string, site: SiteInfo, location: string): ImportItem {
  return makeItem({
    entity: 'sites',
    sourceType: 'site',
    sourceId: site.id,
    values: { url: site.url, name: site.name, created_at: null },
    updatedAt: null,
    location,
    raw: { system, account: site.id, url: site.url },
  });
}

export interface SiteInfo {
  readonly id: string;
  readonly url: string;
  readonly name: string;
}

export function siteRef(site: SiteInfo): ImportRef {
  return { entity: 'sites', sourceType: 'site', sourceId: site.id };
}

export interface ConversationFields {
  readonly sessionId: string;
  readonly start: string | null;
  readonly end: string | null;
  readonly pageUrl?: string | null;
  readonly referrer?: string | null;
  readonly customerEmail: string | null;
  readonly customerName: string | null;
  readonly ipAddress?: string | null;
  readonly country?: string | null;
  readonly language: string;
  readonly userAgent?: string | null;
  readonly status: 'resolved' | 'unresolved' | 'in_progress';
  readonly escalated: boolean;
  readonly escalationReason?: string | null;
  readonly satisfactionScore: number | null;
  readonly satisfactionFeedback: string | null;
  readonly tags: string[];
  readonly customFields: Json;
  readonly createdAt: string | null;
  readonly lastUpdated: string | null;
}

/** Every column a competitor conversation sets; message counts are derived by the engine. */
export function conversationValues(f: ConversationFields): Record<string, unknown> {
  return {
    session_id: f.sessionId,
    start_timestamp: f.start,
    end_timestamp: f.end,
    page_url: f.pageUrl ?? null,
    referrer: f.referrer ?? null,
    customer_email: f.customerEmail,
    customer_name: f.customerName,
    ip_address: f.ipAddress ?? null,
    country: f.country ?? null,
    language: f.language,
    user_agent: f.userAgent ?? null,
    status: f.status,
    escalated: f.escalated,
    escalation_reason: f.escalationReason ?? null,
    resolution_time_minutes: f.status === 'resolved' ? minutesBetween(f.start, f.end) : null,
    satisfaction_score: f.satisfactionScore,
    satisfaction_feedback: f.satisfactionFeedback,
    ai_confidence_avg: null,
    topics_detected: [],
    internal_notes: null,
    tags: f.tags,
    custom_fields: f.customFields,
    created_at: f.createdAt ?? f.start,
    last_updated: f.lastUpdated ?? f.createdAt ?? f.start,
  };
}

export interface MessageFields {
  readonly createdAt: string | null;
  readonly senderType: SenderType;
  readonly senderId: string | null;
  readonly content: string;
  readonly metadata: Json;
  readonly edited?: boolean;
  readonly updatedAt: string | null;
}

/** Every column a competitor message sets; the AI metrics Ferry computes are unknown (null). */
export function messageValues(f: MessageFields): Record<string, unknown> {
  return {
    created_at: f.createdAt,
    sender_type: f.senderType,
    sender_id: f.senderId,
    content: f.content,
    message_length: charLength(f.content),
    confidence_score: null,
    processing_time_ms: null,
    tokens_used: null,
    content_sources: [],
    source_relevance_scores: [],
    language_detected: null,
    sentiment_score: null,
    intent_classification: null,
    entities_extracted: [],
    custom_metadata: f.metadata,
    edited: f.edited ?? false,
    updated_at: f.updatedAt ?? f.createdAt,
  };
}

/** Names of a message's attachments (file names only: the files themselves are not imported). */
export function attachmentNames(value: unknown, ...keys: string[]): string[] {
  const out: string[] = [];
  for (const a of list(value)) {
    const o = obj(a);
    for (const k of keys) {
      const v = text(o[k]);
      if (v) {
        out.push(k.endsWith('url') ? urlFileName(v) : v);
        break;
      }
    }
  }
  return out;
}

function urlFileName(url: string): string {
  const name = path.posix.basename(url.split(/[?#]/)[0] ?? url);
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/** A count of skipped records per reason, reported once as warnings. */
export class Skipped {
  private readonly counts = new Map<string, number>();
  add(reason: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
  }
  flush(warnings: string[]): void {
    for (const [reason, n] of this.counts) {
      const w = `${n} ${reason}`;
      if (!warnings.includes(w)) warnings.push(w);
    }
    this.counts.clear();
  }
}

/**
 * A competitor source from its readers per entity: the entities it has none of yield nothing,
 * and the message counts of its conversations are derived from the messages.
 */
export function competitorSource(
  system: string,
  warnings: string[],
  readers: Partial<Record<ImportEntity, () => AsyncGenerator<ImportItem>>>,
): ImportSource {
  return {
    system,
    warnings,
    deriveCounts: true,
    items: (entity) => (readers[entity] ?? nothing)(),
  };
}

async function* nothing(): AsyncGenerator<ImportItem> {}
