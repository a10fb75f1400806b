/**
 * Faster level-3 scrubbing, the same results (see docs/benchmarks.md).
 *
 * 1. `ferry_scrub_subject` without the case-insensitive regular expression flag.
 *
 * The subject's name is matched with a regular expression built per row. With the `i`
 * flag, PostgreSQL compiles the word-boundary classes (which span U+0080-U+FFFF) with the
 * case variants of every character in them: about 1.6 ms per compile, and a row whose text
 * mentions its subject compiles a new one (the regular expression cache holds 32). That
 * was most of the cost of a `complete` export. Now each letter of the name is written as a
 * bracket of its own case variants (`Ann` → `[AaA][nnN][nnN]`) and the expression compiles
 * without `i` in about 35 µs. The letters' variants are the same ones the `i` flag used
 * (the database's lower and upper case of each character), so what matches is unchanged,
 * and the JavaScript twin (src/transform/scrub.ts, flags `giu`) still agrees with it.
 *
 * 2. Inlinable gates in front of `ferry_scrub_text` and `ferry_scrub_jsonb`.
 *
 * Most texts hold nothing to scrub, yet each paid for a PL/pgSQL call and four regular
 * expression gates. `ferry_scrub_text` is now a SQL function PostgreSQL inlines into the
 * export query: a text without `@`, without `:` and with fewer than four digits cannot hold
 * an email, an IPv6 address (two colons), an IPv4 address (four numbers), a card (13 digits)
 * or a phone number (7 digits), so it is returned as it is unless it mentions its subject;
 * anything else goes to the full scrubber, the former function, now `ferry_scrub_text_all`.
 * Likewise `ferry_scrub_jsonb` returns empty arrays and objects (most `entities_extracted`)
 * without a call, and hands the rest to `ferry_scrub_jsonb_all`.
 *
 * 3. JSON documents made of strings only are scrubbed as one text.
 *
 * The recursive walk (`ferry_scrub_json`: a PL/pgSQL call and an aggregate per value) cost
 * about 50 µs for a one-entity array. A document without numbers, booleans, nulls and
 * backslashes is now scrubbed as its JSON text and parsed back (see the comment in
 * `ferry_scrub_jsonb_all` for why that is the same); others are still walked.
 */
import { NAME_STOP_WORDS, PATTERNS } from './0002-privacy-functions.ts';

/** A SQL string literal (standard_conforming_strings: backslashes are literal). */
const q = (text: string) => `'${text.replaceAll("'", "''")}'`;

const P = Object.fromEntries(Object.entries(PATTERNS).map(([k, v]) => [k, q(v)])) as Record<
  keyof typeof PATTERNS,
  string
>;

export const up = /* sql */ String.raw`
-- A regular expression matching the word literally, in any letter case, without the i flag.
CREATE OR REPLACE FUNCTION ferry_caseless(word text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT coalesce(string_agg(
    CASE WHEN lower(s.ch) <> upper(s.ch) THEN '[' || s.ch || lower(s.ch) || upper(s.ch) || ']'
         ELSE regexp_replace(s.ch, ${q(PATTERNS.regexSpecial)}, '\\\&', 'g') END,
    '' ORDER BY s.i), '')
  FROM regexp_split_to_table(word, '') WITH ORDINALITY AS s(ch, i)
$$;

CREATE OR REPLACE FUNCTION ferry_scrub_subject(txt text, subject_name text, subject_email text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
  v_words text[];
  v_word text;
  v_escaped text[] := '{}';
  v_alternatives text[] := '{}';
BEGIN
  IF v_out IS NULL THEN
    RETURN NULL;
  END IF;
  IF NOT ferry_mentions_subject(v_out, subject_name, subject_email) THEN
    RETURN v_out;
  END IF;
  IF btrim(subject_email) <> '' THEN
    v_out := regexp_replace(v_out, regexp_replace(btrim(subject_email), ${q(PATTERNS.regexSpecial)}, '\\\&', 'g'), '[email]', 'gi');
  END IF;
  IF btrim(coalesce(subject_name, ''), E' \t\r\n,') <> '' THEN
    v_words := regexp_split_to_array(btrim(subject_name, E' \t\r\n,'), ${q(PATTERNS.nameSeparator)});
    FOREACH v_word IN ARRAY v_words LOOP
      v_escaped := v_escaped || ferry_caseless(v_word);
    END LOOP;
    IF cardinality(v_words) > 1 THEN
      v_alternatives := ARRAY[array_to_string(v_escaped, ${q(PATTERNS.nameSeparator)})];
    END IF;
    FOR i IN 1 .. cardinality(v_words) LOOP
      IF length(v_words[i]) >= 3 AND lower(v_words[i]) <> ALL (ARRAY[${NAME_STOP_WORDS.map(q).join(', ')}]) THEN
        v_alternatives := v_alternatives || v_escaped[i];
      END IF;
    END LOOP;
    IF cardinality(v_alternatives) > 0 THEN
      v_out := regexp_replace(v_out, ${q(PATTERNS.wordBefore)} || '(?:' || array_to_string(v_alternatives, '|') || ')' || ${q(PATTERNS.wordAfter)}, '[name]', 'g');
    END IF;
  END IF;
  RETURN v_out;
END
$$;

-- The full text scrubber of migration 0002, unchanged, under a new name.
ALTER FUNCTION ferry_scrub_text(text, int, text, text) RENAME TO ferry_scrub_text_all;

-- Scrubs free text for an anonymization level (0 full, 1 basic, 2 enhanced, 3 complete).
-- Inlined into the calling query; the gate is one regular expression (compiled once).
CREATE FUNCTION ferry_scrub_text(txt text, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN txt IS NULL OR lvl IS NULL OR lvl < 1 THEN txt
    WHEN txt !~ '[@:]|[0-9][^0-9]*[0-9][^0-9]*[0-9][^0-9]*[0-9]'
      AND ((subject_name IS NULL AND subject_email IS NULL) OR NOT ferry_mentions_subject(txt, subject_name, subject_email))
      THEN txt
    ELSE ferry_scrub_text_all(txt, lvl, subject_name, subject_email)
  END
$$;

-- The gated entry point for JSON of migration 0002, unchanged, under a new name.
CREATE OR REPLACE FUNCTION ferry_scrub_jsonb_all(doc jsonb, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS jsonb
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
    -- A document whose scalars are all strings without escapes is scrubbed as its JSON text
    -- in one pass: every pattern stops at a double quote as at the end of a string, no match
    -- can span two strings (quotes, ", " and ": " lie between them), and the replacements
    -- are plain text, so the result parses to what the walk would build.
    IF strpos(v_text, '\') = 0 AND NOT jsonb_path_exists(doc,
        'strict $.** ? (@.type() != "string" && @.type() != "object" && @.type() != "array")') THEN
      RETURN ferry_scrub_text_all(v_text, lvl, subject_name, subject_email)::jsonb;
    END IF;
    RETURN ferry_scrub_json(doc, lvl, subject_name, subject_email);
  END IF;
  RETURN doc;
END
$$;

-- The entry point for JSON fields, inlined into the calling query.
CREATE OR REPLACE FUNCTION ferry_scrub_jsonb(doc jsonb, lvl int, subject_name text DEFAULT NULL, subject_email text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN doc IS NULL OR lvl IS NULL OR lvl < 1 OR doc = '[]'::jsonb OR doc = '{}'::jsonb THEN doc
    ELSE ferry_scrub_jsonb_all(doc, lvl, subject_name, subject_email)
  END
$$;
`;
