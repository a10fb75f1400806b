/**
 * The JavaScript twin of the SQL text scrubber (`ferry_scrub_text`, `ferry_scrub_jsonb`):
 * the same patterns, the same steps in the same order, for paths that do not run through
 * a COPY query (knowledge-base documents, JSON documents built in code).
 */
import { type PiiLevel, parsePiiLevel } from '../domain/pii-level.ts';
import { PII_LEVEL_NUMBER } from './anonymize.ts';
import { NAME_STOP_WORDS, PATTERNS, PHONE_DIGITS } from './scrub-patterns.ts';

/** The data subject of the row, whose own name and email are replaced when found in the text. */
export interface Subject {
  readonly name?: string | null | undefined;
  readonly email?: string | null | undefined;
}

const all = (source: string, flags = 'gu') => new RegExp(source, flags);
const one = (source: string) => new RegExp(source, 'u');

const EMAIL = all(PATTERNS.email);
const EMAIL_MASK = all(PATTERNS.emailMask);
const IPV4 = all(PATTERNS.ipv4);
const IPV4_GATE = one(PATTERNS.ipv4Gate);
const IPV6 = all(PATTERNS.ipv6Candidate);
const IPV6_GATE = one(PATTERNS.ipv6Gate);
const CARD_RUN = all(PATTERNS.cardRun);
const CARD_GATE = one(PATTERNS.cardGate);
const PHONE = all(PATTERNS.phoneCandidate);
const PHONE_GATE = one(PATTERNS.phoneGate);
const PHONE_NANP = one(PATTERNS.phoneNanp);
const PHONE_TRUNK = one(PATTERNS.phoneTrunk);
const PHONE_IDD = one(PATTERNS.phoneIdd);
const PHONE_DATE = one(PATTERNS.phoneDate);
const REGEX_SPECIAL = all(PATTERNS.regexSpecial);
const NAME_SEPARATOR = one(PATTERNS.nameSeparator);
const STOP_WORDS: ReadonlySet<string> = new Set(NAME_STOP_WORDS);

/** Luhn checksum of a digit string; spaces and dashes are ignored, anything else fails. */
export function luhnOk(value: string): boolean {
  const digits = value.replace(/[ -]/g, '');
  if (digits.length < 2 || !/^[0-9]+$/.test(digits)) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** The leftmost, longest window of whole groups with 13 to 19 digits passing Luhn becomes [card]. */
function scrubCardRun(run: string): string {
  const groups = run.split(/[ -]/);
  const seps = run.match(/[ -]/g) ?? [];
  let out = '';
  let start = 0;
  while (start < groups.length) {
    let best = -1;
    let digits = '';
    for (let end = start; end < groups.length; end++) {
      digits += groups[end];
      if (digits.length > 19) break;
      if (digits.length >= 13 && luhnOk(digits)) best = end;
    }
    if (best >= 0) out += '[card]';
    else {
      best = start;
      out += groups[start];
    }
    if (best < groups.length - 1) out += seps[best];
    start = best + 1;
  }
  return out;
}

function between(n: number, [low, high]: readonly [number, number]): boolean {
  return n >= low && n <= high;
}

/** Whether a phone candidate is a phone number; see docs/anonymization.md for the heuristic. */
export function isPhoneNumber(candidate: string): boolean {
  const n = candidate.replace(/[^0-9]/g, '').length;
  if (candidate.startsWith('+')) return between(n, PHONE_DIGITS.international);
  if (PHONE_NANP.test(candidate)) return true;
  if (PHONE_IDD.test(candidate)) return between(n, PHONE_DIGITS.idd);
  if (PHONE_TRUNK.test(candidate)) return between(n, PHONE_DIGITS.trunk) && !PHONE_DATE.test(candidate);
  return false;
}

/**
 * IPv6 in the text form, as `ferry_is_ipv6`: eight groups, or fewer around one `::` (at least
 * one group unless the unspecified address is allowed); a group is 1 to 4 hex digits.
 */
export function isIpv6(value: string, allowUnspecified = false): boolean {
  if (!/^[0-9A-Fa-f:]+$/.test(value) || /[0-9A-Fa-f]{5}/.test(value) || value.includes(':::')) return false;
  const halves = value.split('::');
  if (halves.length > 2) return false;
  if (halves.length === 1) {
    const groups = value.split(':');
    return groups.length === 8 && !groups.includes('');
  }
  const groups = halves.flatMap((half) => (half === '' ? [] : half.split(':')));
  return !groups.includes('') && groups.length <= 7 && (groups.length >= 1 || allowUnspecified);
}

const escapeRegex = (value: string) => value.replace(REGEX_SPECIAL, '\\$&');
/** PostgreSQL's btrim(value, chars). */
const trimChars = (value: string, chars: string) => {
  let start = 0;
  let end = value.length;
  while (start < end && chars.includes(value[start]!)) start++;
  while (end > start && chars.includes(value[end - 1]!)) end--;
  return value.slice(start, end);
};

function scrubSubject(text: string, subject: Subject): string {
  let out = text;
  const email = subject.email == null ? '' : trimChars(subject.email, ' ');
  if (email !== '') out = out.replace(all(escapeRegex(email), 'giu'), '[email]');
  const name = subject.name == null ? '' : trimChars(subject.name, ' \t\r\n,');
  if (name !== '') {
    const words = name.split(NAME_SEPARATOR);
    const alternatives = words.length > 1 ? [words.map(escapeRegex).join(PATTERNS.nameSeparator)] : [];
    for (const word of words) {
      if ([...word].length >= 3 && !STOP_WORDS.has(word.toLowerCase())) alternatives.push(escapeRegex(word));
    }
    if (alternatives.length > 0) {
      const pattern = `${PATTERNS.wordBefore}(?:${alternatives.join('|')})${PATTERNS.wordAfter}`;
      out = out.replace(all(pattern, 'giu'), '[name]');
    }
  }
  return out;
}

/**
 * Scrubs free text for a level: basic masks emails (`user***@domain`), replaces phone and
 * card numbers and the subject's own name and email; enhanced also replaces IP addresses;
 * complete replaces every email. Identical to `ferry_scrub_text` in SQL.
 */
export function scrubText(text: string, level: PiiLevel, subject?: Subject): string {
  const lvl: number | undefined = PII_LEVEL_NUMBER[level];
  if (lvl === undefined) parsePiiLevel(level, 'level');
  if (!lvl) return text;
  let out = text;
  if (subject && (subject.name != null || subject.email != null)) out = scrubSubject(out, subject);
  if (out.includes('@')) {
    out = lvl >= 3 ? out.replace(EMAIL, '[email]') : out.replace(EMAIL_MASK, '$1***@$2');
  }
  if (lvl >= 2) {
    if (IPV6_GATE.test(out)) out = out.replace(IPV6, (hit) => (isIpv6(hit) ? '[ip]' : hit));
    if (IPV4_GATE.test(out)) out = out.replace(IPV4, '[ip]');
  }
  if (CARD_GATE.test(out)) out = out.replace(CARD_RUN, scrubCardRun);
  if (PHONE_GATE.test(out)) out = out.replace(PHONE, (hit) => (isPhoneNumber(hit) ? '[phone]' : hit));
  return out;
}

/**
 * Scrubs a parsed JSON value: every string (object keys too) goes through `scrubText`; a
 * number that scrubbing would change becomes the token string. Twin of `ferry_scrub_jsonb`.
 */
export function scrubJson(value: unknown, level: PiiLevel, subject?: Subject): unknown {
  if (PII_LEVEL_NUMBER[level] < 1) return value;
  if (typeof value === 'string') return scrubText(value, level, subject);
  if (typeof value === 'number') {
    const text = String(value);
    const scrubbed = scrubText(text, level, subject);
    return scrubbed === text ? value : scrubbed;
  }
  if (Array.isArray(value)) return value.map((item) => scrubJson(item, level, subject));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      out[scrubText(key, level, subject)] = scrubJson(item, level, subject);
    }
    return out;
  }
  return value;
}
