/**
 * The patterns of the text scrubber, shared by its SQL functions (`ferry_scrub_text`,
 * `ferry_scrub_jsonb`, created by migrations 0002 and 0010) and its JavaScript twin
 * (`scrub.ts`). The migrations keep their own frozen copies: a migration is history and
 * does not follow this file. A change here therefore needs a migration that re-creates the
 * SQL functions from the new patterns; the test suite checks that SQL and JavaScript scrub
 * alike (test/anonymize.test.ts).
 *
 * Every pattern is written in the common subset of PostgreSQL AREs and JavaScript (`u`
 * flag) regular expressions, and each is built so that the match found at a position is
 * unique (PostgreSQL takes the longest, JavaScript the first; here they coincide).
 */

/** A character of an email local part: ASCII atext subset plus any non-ASCII (BMP) character. */
const LOCAL = String.raw`[A-Za-z0-9._%+\u0080-\uFFFF-]`;
/** A character of a domain label. */
const LABEL = String.raw`[A-Za-z0-9\u0080-\uFFFF-]`;
const OCTET = `(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])`;
/** Characters that count as part of a word when matching a known name: ASCII word characters and non-ASCII. */
const WORD = String.raw`[A-Za-z0-9_\u0080-\uFFFF]`;

export const PATTERNS = {
  /** An email address in text. */
  email: String.raw`${LOCAL}+@${LABEL}+(?:\.${LABEL}+)+`,
  /** The same, capturing the first up to four characters of the local part (1) and the domain (2). */
  emailMask: String.raw`(${LOCAL}{1,4})${LOCAL}*@(${LABEL}+(?:\.${LABEL}+)+)`,
  /** A dotted-quad IPv4 address not inside a longer dotted number (versions like 1.2.3.4.5). */
  ipv4: String.raw`(?<![0-9A-Za-z.])(?:${OCTET}\.){3}${OCTET}(?![0-9A-Za-z]|\.[0-9])`,
  ipv4Exact: String.raw`^(?:${OCTET}\.){3}${OCTET}$`,
  /** Cheap test that a text may hold an IPv4 address. */
  ipv4Gate: String.raw`[0-9]\.[0-9]`,
  /**
   * An IPv6 candidate in text: a whole run of hex digits and colons holding two colons or more,
   * not followed by a dotted number. `ferry_is_ipv6` decides; the run is the match, so both
   * regular expression engines agree on it.
   */
  ipv6Candidate: String.raw`(?<![0-9A-Za-z:.])[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:]*(?![0-9A-Za-z:]|\.[0-9])`,
  /** Cheap test that a text may hold an IPv6 address: every form has two colons with only hex between. */
  ipv6Gate: `:[0-9A-Fa-f]{0,4}:`,
  /** A run of 13 or more digits, single spaces or dashes allowed between them: card candidates. */
  cardRun: `(?<![0-9A-Za-z_])[0-9](?:[ -]?[0-9]){12,}`,
  /** Cheap test that a text may hold a card run. */
  cardGate: `[0-9](?:[ -]?[0-9]){12}`,
  /**
   * A phone candidate: optional `+` or `(`, then 7 or more digits with up to two separators
   * (space ( ) . / -) between them, not glued to a word, a `#`, a decimal point or a URL path.
   */
  phoneCandidate: `(?<![0-9A-Za-z_#.,+/=-])[+(]?[0-9](?:[ ()./-]{0,2}[0-9]){6,}(?![0-9A-Za-z_])`,
  /** Cheap test that a text may hold a phone candidate. */
  phoneGate: `[0-9](?:[ ()./-]{0,2}[0-9]){6}`,
  /** North American format with separators: (415) 555-2671, 415-555-2671, 1 415 555 2671. */
  phoneNanp: String.raw`^(?:1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}$`,
  /** National format with a trunk prefix 0: 030 901820, 0171 1234567, (020) 7946 0958. */
  phoneTrunk: String.raw`^\(?0[1-9]`,
  /** International access prefix 00: 0049 30 901820. */
  phoneIdd: `^00[1-9]`,
  /** A date at the start of a candidate (05.01.2024, 1/5/2024): never a phone number. */
  phoneDate: `^[0-9]{1,2}[./-][0-9]{1,2}[./-][0-9]{2,4}(?![0-9])`,
  /** Characters escaped when a known value is matched literally. */
  regexSpecial: String.raw`[\\^$.*+?()[\]{}|]`,
  wordBefore: `(?<!${WORD})`,
  wordAfter: `(?!${WORD})`,
  /** Separators between the words of a name. */
  nameSeparator: String.raw`[ \t\r\n,]+`,
} as const;

/** Name words never matched alone: particles and titles that are common words. */
export const NAME_STOP_WORDS = [
  'van',
  'von',
  'der',
  'den',
  'del',
  'della',
  'des',
  'dos',
  'das',
  'ter',
  'ten',
  'bin',
  'ibn',
  'mrs',
  'mrs.',
  'mr.',
  'ms.',
  'dr.',
  'prof',
  'prof.',
] as const;

/** Digit counts (country code included) that make a candidate a phone number. */
export const PHONE_DIGITS = { international: [7, 15], idd: [9, 17], trunk: [9, 12] } as const;
