/**
 * Privacy functions that export queries call per field, so anonymization and the CSV
 * formula guard run inside `COPY (SELECT ...)` at database speed. See docs/anonymization.md.
 *
 * The regular expressions are exported: the JavaScript twins in src/transform/ compile the
 * very same sources, so SQL and JavaScript scrub text identically. Every pattern is written
 * in the common subset of PostgreSQL AREs and JavaScript (`u` flag) regular expressions, and
 * each is built so that the match found at a position is unique (PostgreSQL takes the
 * longest, JavaScript the first; here they coincide). A migration is frozen once released:
 * changing a pattern means a new migration that re-creates the functions, and the twins
 * then import from it.
 *
 * Everything works on PostgreSQL 15+ and PGlite without extensions (no pgcrypto).
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

/**
 * ISO 3166-1 alpha-2 country → continent, generated from the `countries-list` package
 * (3.4.1, field `continent`) when this migration was written. Transcontinental countries take
 * the package's primary continent (RU and TR → AS).
 */
export const CONTINENTS = {
  AF: 'AC,AO,BF,BI,BJ,BW,CD,CF,CG,CI,CM,CV,DJ,DZ,EG,EH,ER,ET,GA,GH,GM,GN,GQ,GW,KE,KM,LR,LS,LY,MA,MG,ML,MR,MU,MW,MZ,NA,NE,NG,RE,RW,SC,SD,SH,SL,SN,SO,SS,ST,SZ,TA,TD,TG,TN,TZ,UG,YT,ZA,ZM,ZW',
  AN: 'AQ,BV,GS,HM,TF',
  AS: 'AE,AF,AM,AZ,BD,BH,BN,BT,CC,CN,CX,GE,HK,ID,IL,IN,IO,IQ,IR,JO,JP,KG,KH,KP,KR,KW,KZ,LA,LB,LK,MM,MN,MO,MV,MY,NP,OM,PH,PK,PS,QA,RU,SA,SG,SY,TH,TJ,TM,TR,TW,UZ,VN,YE',
  EU: 'AD,AL,AT,AX,BA,BE,BG,BY,CH,CY,CZ,DE,DK,EE,ES,FI,FO,FR,GB,GG,GI,GR,HR,HU,IE,IM,IS,IT,JE,LI,LT,LU,LV,MC,MD,ME,MK,MT,NL,NO,PL,PT,RO,RS,SE,SI,SJ,SK,SM,UA,VA,XK',
  NA: 'AG,AI,AW,BB,BL,BM,BQ,BS,BZ,CA,CR,CU,CW,DM,DO,GD,GL,GP,GT,HN,HT,JM,KN,KY,LC,MF,MQ,MS,MX,NI,PA,PM,PR,SV,SX,TC,TT,US,VC,VG,VI',
  OC: 'AS,AU,CK,FJ,FM,GU,KI,MH,MP,NC,NF,NR,NU,NZ,PF,PG,PN,PW,SB,TK,TL,TO,TV,UM,VU,WF,WS',
  SA: 'AR,BO,BR,CL,CO,EC,FK,GF,GY,PE,PY,SR,UY,VE',
} as const;

/** A SQL string literal (standard_conforming_strings: backslashes are literal). */
const q = (text: string) => `'${text.replaceAll("'", "''")}'`;
const P = Object.fromEntries(Object.entries(PATTERNS).map(([k, v]) => [k, q(v)])) as Record<
  keyof typeof PATTERNS,
  string
>;
const continentCases = Object.entries(CONTINENTS)
  .map(
    ([continent, codes]) => `    WHEN c.code IN (${codes.split(',').map(q).join(', ')}) THEN ${q(continent)}`,
  )
  .join('\n');

export const up = /* sql */ String.raw`
CREATE OR REPLACE FUNCTION ferry_luhn_ok(value text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_digits text := regexp_replace(value, '[ -]', '', 'g');
  v_len int := length(v_digits);
  v_sum int := 0;
  v_d int;
BEGIN
  IF v_len < 2 OR v_digits !~ '^[0-9]+$' THEN
    RETURN false;
  END IF;
  FOR i IN 0 .. v_len - 1 LOOP
    v_d := ascii(substr(v_digits, v_len - i, 1)) - 48;
    IF i % 2 = 1 THEN
      v_d := v_d * 2;
      IF v_d > 9 THEN
        v_d := v_d - 9;
      END IF;
    END IF;
    v_sum := v_sum + v_d;
  END LOOP;
  RETURN v_sum % 10 = 0;
END
$$;

-- IPv6 in the text form: eight groups, or fewer around one '::' (at least one group unless
-- unspecified is allowed); a group is 1 to 4 hex digits. No embedded IPv4 form.
CREATE OR REPLACE FUNCTION ferry_is_ipv6(value text, allow_unspecified boolean DEFAULT false) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_halves text[];
  v_groups text[];
BEGIN
  IF value !~ '^[0-9A-Fa-f:]+$' OR value ~ '[0-9A-Fa-f]{5}' OR strpos(value, ':::') > 0 THEN
    RETURN false;
  END IF;
  v_halves := string_to_array(value, '::');
  IF cardinality(v_halves) > 2 THEN
    RETURN false;
  END IF;
  IF cardinality(v_halves) = 1 THEN
    v_groups := string_to_array(value, ':');
    RETURN cardinality(v_groups) = 8 AND array_position(v_groups, '') IS NULL;
  END IF;
  v_groups := CASE WHEN v_halves[1] = '' THEN '{}'::text[] ELSE string_to_array(v_halves[1], ':') END
    || CASE WHEN v_halves[2] = '' THEN '{}'::text[] ELSE string_to_array(v_halves[2], ':') END;
  RETURN array_position(v_groups, '') IS NULL AND cardinality(v_groups) <= 7
    AND (cardinality(v_groups) >= 1 OR allow_unspecified);
END
$$;

-- A run of digit groups: the leftmost, longest window of whole groups holding 13 to 19
-- digits that passes Luhn becomes [card]; scanning goes on after it.
CREATE OR REPLACE FUNCTION ferry_scrub_card_run(run text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_groups text[] := regexp_split_to_array(run, '[ -]');
  v_count int := cardinality(v_groups);
  v_seps text[] := '{}';
  v_offset int := 0;
  v_out text := '';
  v_start int := 1;
  v_end int;
  v_best int;
  v_digits text;
BEGIN
  FOR i IN 1 .. v_count - 1 LOOP
    v_offset := v_offset + length(v_groups[i]) + 1;
    v_seps := v_seps || substr(run, v_offset, 1);
  END LOOP;
  WHILE v_start <= v_count LOOP
    v_best := 0;
    v_digits := '';
    v_end := v_start;
    WHILE v_end <= v_count LOOP
      v_digits := v_digits || v_groups[v_end];
      EXIT WHEN length(v_digits) > 19;
      IF length(v_digits) >= 13 AND ferry_luhn_ok(v_digits) THEN
        v_best := v_end;
      END IF;
      v_end := v_end + 1;
    END LOOP;
    IF v_best > 0 THEN
      v_out := v_out || '[card]';
    ELSE
      v_best := v_start;
      v_out := v_out || v_groups[v_start];
    END IF;
    IF v_best < v_count THEN
      v_out := v_out || v_seps[v_best];
    END IF;
    v_start := v_best + 1;
  END LOOP;
  RETURN v_out;
END
$$;

CREATE OR REPLACE FUNCTION ferry_is_phone(candidate text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_n int := length(candidate) - length(translate(candidate, '0123456789', ''));
BEGIN
  IF left(candidate, 1) = '+' THEN
    RETURN v_n BETWEEN ${PHONE_DIGITS.international[0]} AND ${PHONE_DIGITS.international[1]};
  END IF;
  IF candidate ~ ${P.phoneNanp} THEN
    RETURN true;
  END IF;
  IF candidate ~ ${P.phoneIdd} THEN
    RETURN v_n BETWEEN ${PHONE_DIGITS.idd[0]} AND ${PHONE_DIGITS.idd[1]};
  END IF;
  IF candidate ~ ${P.phoneTrunk} THEN
    RETURN v_n BETWEEN ${PHONE_DIGITS.trunk[0]} AND ${PHONE_DIGITS.trunk[1]} AND candidate !~ ${P.phoneDate};
  END IF;
  RETURN false;
END
$$;

-- What a candidate of each kind becomes.
CREATE OR REPLACE FUNCTION ferry_classify(candidate text, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  IF kind = 'card' THEN
    RETURN ferry_scrub_card_run(candidate);
  ELSIF kind = 'phone' THEN
    RETURN CASE WHEN ferry_is_phone(candidate) THEN '[phone]' ELSE candidate END;
  ELSIF kind = 'ipv6' THEN
    RETURN CASE WHEN ferry_is_ipv6(candidate) THEN '[ip]' ELSE candidate END;
  END IF;
  RETURN candidate;
END
$$;

-- Replaces every match of the pattern by what ferry_classify makes of it. One regexp_replace
-- brackets the matches with U+0001 and the pieces are walked in order; a text that holds
-- U+0001 itself takes a slower path that finds the matches one by one.
CREATE OR REPLACE FUNCTION ferry_scan(txt text, pattern text, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_out text := '';
  v_piece text;
  v_is_match boolean := false;
  v_pos int := 1;
  v_start int;
  v_end int;
BEGIN
  IF strpos(txt, E'\x01') = 0 THEN
    FOREACH v_piece IN ARRAY string_to_array(regexp_replace(txt, pattern, E'\x01\\&\x01', 'g'), E'\x01') LOOP
      v_out := v_out || CASE WHEN v_is_match THEN ferry_classify(v_piece, kind) ELSE v_piece END;
      v_is_match := NOT v_is_match;
    END LOOP;
    RETURN v_out;
  END IF;
  LOOP
    v_start := regexp_instr(txt, pattern, v_pos);
    EXIT WHEN v_start = 0;
    v_end := regexp_instr(txt, pattern, v_pos, 1, 1);
    v_out := v_out || substr(txt, v_pos, v_start - v_pos) || ferry_classify(substr(txt, v_start, v_end - v_start), kind);
    v_pos := v_end;
  END LOOP;
  RETURN v_out || substr(txt, v_pos);
END
$$;

-- Whether a text may mention its subject: a plain substring test of the lowered text for the
-- email, the full name and each name word of 3 or more characters. Most texts never mention
-- their subject, and this spares them the per-row (uncached) regular expressions.
CREATE OR REPLACE FUNCTION ferry_mentions_subject(txt text, subject_name text, subject_email text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_lower text := lower(txt);
  v_name text := lower(btrim(coalesce(subject_name, ''), E' \t\r\n,'));
  v_word text;
BEGIN
  IF txt IS NULL THEN
    RETURN false;
  END IF;
  IF btrim(coalesce(subject_email, '')) <> '' AND strpos(v_lower, lower(btrim(subject_email))) > 0 THEN
    RETURN true;
  END IF;
  IF v_name = '' THEN
    RETURN false;
  END IF;
  IF strpos(v_lower, v_name) > 0 THEN
    RETURN true;
  END IF;
  FOREACH v_word IN ARRAY regexp_split_to_array(v_name, ${P.nameSeparator}) LOOP
    IF length(v_word) >= 3 AND strpos(v_lower, v_word) > 0 THEN
      RETURN true;
    END IF;
  END LOOP;
  RETURN false;
END
$$;

-- The row's own data subject, found by value: their email, and in one pass their full name
-- and each word of the name with 3 or more characters that is not a particle or title (van,
-- der, dr.). The full name comes first: at any position it is the longest alternative.
CREATE OR REPLACE FUNCTION ferry_scrub_subject(txt text, subject_name text, subject_email text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
  v_words text[];
  v_word text;
  v_escaped text[] := '{}';
  v_alternatives text[] := '{}';
  v_candidate boolean := false;
BEGIN
  IF v_out IS NULL THEN
    RETURN NULL;
  END IF;
  IF NOT ferry_mentions_subject(v_out, subject_name, subject_email) THEN
    RETURN v_out;
  END IF;
  IF btrim(subject_email) <> '' THEN
    v_out := regexp_replace(v_out, regexp_replace(btrim(subject_email), ${P.regexSpecial}, '\\\&', 'g'), '[email]', 'gi');
  END IF;
  v_candidate := btrim(coalesce(subject_name, ''), E' \t\r\n,') <> '';
  IF v_candidate THEN
    v_words := regexp_split_to_array(btrim(subject_name, E' \t\r\n,'), ${P.nameSeparator});
    FOREACH v_word IN ARRAY v_words LOOP
      v_escaped := v_escaped || regexp_replace(v_word, ${P.regexSpecial}, '\\\&', 'g');
    END LOOP;
    IF cardinality(v_words) > 1 THEN
      v_alternatives := ARRAY[array_to_string(v_escaped, ${P.nameSeparator})];
    END IF;
    FOR i IN 1 .. cardinality(v_words) LOOP
      IF length(v_words[i]) >= 3 AND lower(v_words[i]) <> ALL (ARRAY[${NAME_STOP_WORDS.map(q).join(', ')}]) THEN
        v_alternatives := v_alternatives || v_escaped[i];
      END IF;
    END LOOP;
    IF cardinality(v_alternatives) > 0 THEN
      v_out := regexp_replace(v_out, ${P.wordBefore} || '(?:' || array_to_string(v_alternatives, '|') || ')' || ${P.wordAfter}, '[name]', 'gi');
    END IF;
  END IF;
  RETURN v_out;
END
$$;

-- Scrubs free text for an anonymization level (0 full, 1 basic, 2 enhanced, 3 complete).
CREATE OR REPLACE FUNCTION ferry_scrub_text(txt text, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
BEGIN
  IF v_out IS NULL OR lvl IS NULL OR lvl < 1 THEN
    RETURN v_out;
  END IF;
  IF subject_name IS NOT NULL OR subject_email IS NOT NULL THEN
    v_out := ferry_scrub_subject(v_out, subject_name, subject_email);
  END IF;
  IF strpos(v_out, '@') > 0 THEN
    IF lvl >= 3 THEN
      v_out := regexp_replace(v_out, ${P.email}, '[email]', 'g');
    ELSE
      v_out := regexp_replace(v_out, ${P.emailMask}, '\1***@\2', 'g');
    END IF;
  END IF;
  IF lvl >= 2 THEN
    IF v_out ~ ${P.ipv6Gate} THEN
      v_out := ferry_scan(v_out, ${P.ipv6Candidate}, 'ipv6');
    END IF;
    IF v_out ~ ${P.ipv4Gate} THEN
      v_out := regexp_replace(v_out, ${P.ipv4}, '[ip]', 'g');
    END IF;
  END IF;
  IF v_out ~ ${P.cardGate} THEN
    v_out := ferry_scan(v_out, ${P.cardRun}, 'card');
  END IF;
  IF v_out ~ ${P.phoneGate} THEN
    v_out := ferry_scan(v_out, ${P.phoneCandidate}, 'phone');
  END IF;
  RETURN v_out;
END
$$;

-- JSON free text: every string (keys too) is scrubbed; a number that scrubbing would change
-- becomes the token string. The gates look at the JSON text, where every pattern that can
-- match inside a string also appears verbatim, so untouched documents are returned as they are.
CREATE OR REPLACE FUNCTION ferry_scrub_json(doc jsonb, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_text text;
  v_scrubbed text;
BEGIN
  IF doc IS NULL OR lvl IS NULL OR lvl < 1 THEN
    RETURN doc;
  END IF;
  IF jsonb_typeof(doc) = 'object' THEN
    RETURN (SELECT coalesce(jsonb_object_agg(ferry_scrub_text(e.key, lvl, subject_name, subject_email), ferry_scrub_json(e.value, lvl, subject_name, subject_email)), '{}'::jsonb) FROM jsonb_each(doc) AS e);
  ELSIF jsonb_typeof(doc) = 'array' THEN
    RETURN (SELECT coalesce(jsonb_agg(ferry_scrub_json(e.value, lvl, subject_name, subject_email) ORDER BY e.pos), '[]'::jsonb) FROM jsonb_array_elements(doc) WITH ORDINALITY AS e(value, pos));
  ELSIF jsonb_typeof(doc) = 'string' THEN
    RETURN to_jsonb(ferry_scrub_text(doc #>> '{}', lvl, subject_name, subject_email));
  ELSIF jsonb_typeof(doc) = 'number' THEN
    v_text := doc #>> '{}';
    v_scrubbed := ferry_scrub_text(v_text, lvl, subject_name, subject_email);
    RETURN CASE WHEN v_scrubbed = v_text THEN doc ELSE to_jsonb(v_scrubbed) END;
  END IF;
  RETURN doc;
END
$$;

-- The entry point for JSON fields: skips the walk when nothing in the document can match.
CREATE OR REPLACE FUNCTION ferry_scrub_jsonb(doc jsonb, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_text text;
BEGIN
  IF doc IS NULL OR lvl IS NULL OR lvl < 1 THEN
    RETURN doc;
  END IF;
  v_text := doc::text;
  IF v_text ~ ${P.cardGate} OR v_text ~ ${P.phoneGate}
    OR strpos(v_text, '@') > 0 OR ferry_mentions_subject(v_text, subject_name, subject_email)
    OR (lvl >= 2 AND (v_text ~ ${P.ipv6Gate} OR v_text ~ ${P.ipv4Gate})) THEN
    RETURN ferry_scrub_json(doc, lvl, subject_name, subject_email);
  END IF;
  RETURN doc;
END
$$;

-- First up to four characters of the local part, then ***@domain. A value that is not
-- exactly one @ between non-empty parts is not an email and is removed (NULL).
CREATE OR REPLACE FUNCTION ferry_mask_email(email text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN btrim(email) ~ '^[^@]+@[^@]+$'
    THEN left(split_part(btrim(email), '@', 1), 4) || '***@' || split_part(btrim(email), '@', 2)
  END
$$;

-- The first word of a name (up to whitespace or a comma).
CREATE OR REPLACE FUNCTION ferry_first_name(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT substring(name FROM '[^ \t\r\n,]+')
$$;

-- Keeps the first v4_bits of an IPv4 address or v6_bits of an IPv6 address and zeroes the
-- rest. IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4. Anything else is removed (NULL).
CREATE OR REPLACE FUNCTION ferry_mask_ip(ip text, v4_bits int, v6_bits int) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  v_ip text := regexp_replace(btrim(ip), '/[0-9]{1,3}$', '');
BEGIN
  IF v_ip ~* '^::ffff:[0-9]' THEN
    v_ip := substr(v_ip, 8);
  END IF;
  IF v_ip ~ ${P.ipv4Exact} THEN
    RETURN host(network(set_masklen(v_ip::inet, v4_bits)));
  END IF;
  IF ferry_is_ipv6(v_ip, true) THEN
    RETURN host(network(set_masklen(v_ip::inet, v6_bits)));
  END IF;
  RETURN NULL;
END
$$;

-- Browser family from a user agent. Order matters: Edge, Opera and Samsung Internet also
-- announce Chrome and Safari; Chrome also announces Safari.
CREATE OR REPLACE FUNCTION ferry_browser_family(user_agent text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN user_agent ~ 'Edg(e|A|iOS)?/' THEN 'Edge'
    WHEN user_agent ~ '(OPR|OPiOS|OPT)/|Opera[/ ]' THEN 'Opera'
    WHEN user_agent ~ 'SamsungBrowser/' THEN 'Samsung Internet'
    WHEN user_agent ~ '(Firefox|FxiOS)/' THEN 'Firefox'
    WHEN user_agent ~ '(Chrome|CriOS|Chromium)/' THEN 'Chrome'
    WHEN user_agent ~ 'Safari/' THEN 'Safari'
    ELSE 'Other'
  END
$$;

-- Continent code (AF, AN, AS, EU, NA, OC, SA) of an ISO 3166-1 alpha-2 country; NULL if unknown.
CREATE OR REPLACE FUNCTION ferry_continent(country text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
${continentCases}
  END
  FROM (SELECT upper(btrim(country)) AS code) AS c
$$;

-- Keyed pseudonyms: the same value and key give the same token, so rows join within one
-- export; a new key per export keeps exports from correlating. sha256(key || value).
CREATE OR REPLACE FUNCTION ferry_token(value text, key text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT 'anon_' || left(encode(sha256(convert_to(key || value, 'UTF8')), 'hex'), 16)
$$;

-- The same hash as a UUID: its first 16 bytes. One expression, so PostgreSQL inlines the
-- function into the export query instead of calling it row by row.
CREATE OR REPLACE FUNCTION ferry_token_uuid(value text, key text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT encode(substring(sha256(convert_to(key || value, 'UTF8')) FROM 1 FOR 16), 'hex')::uuid
$$;

-- Spreadsheet formula guard for text cells: a leading = + - @ tab or CR (or their full-width
-- forms) gets a single quote in front. PostgreSQL text cannot hold NUL, so that trigger is
-- only in the JavaScript twin.
CREATE OR REPLACE FUNCTION ferry_csv_guard(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN left(value, 1) IN ('=', '+', '-', '@', E'\t', E'\r', '＝', '＋', '－', '＠') THEN '''' || value ELSE value END
$$;
`;
