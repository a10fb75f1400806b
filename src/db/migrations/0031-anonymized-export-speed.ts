/**
 * Faster anonymized exports, the same bytes (see docs/benchmarks.md, "Anonymized CSV").
 *
 * A SQL function that PostgreSQL does not inline runs through a small executor of its own on
 * every call: about 1.2 µs, more than most of what it computes. A profile of the `complete`
 * CSV export of 1M messages spent 30% of the statement there.
 *
 * 1. `ferry_token` and `ferry_token_uuid` are declared `STABLE`. Their body calls
 *    `convert_to`, which PostgreSQL declares `STABLE`, and an `IMMUTABLE` SQL function whose
 *    body is less than immutable is never inlined: every pseudonymized id was a call. Nothing
 *    stores their results (no index or generated column uses them), so the label is the only
 *    change, and they are now inlined.
 *
 * 2. Formula guards that read their value once. `ferry_csv_guard` tests the first character
 *    and then returns the value: it names the value twice, and PostgreSQL inlines such a
 *    function only when the argument is cheap (a column). Around a scrubber's or a
 *    pseudonym's result it was called per cell. `ferry_csv_guard_computed` does the same with
 *    one anchored `regexp_replace`, which names the value once and so is always inlined
 *    (about 0.15 µs a cell against 1.2). `csvGuardSql` (src/transform/csv-guard.ts) keeps
 *    `ferry_csv_guard` for plain columns, where the inlined test is cheaper still.
 *    `ferry_csv_guard_json_computed` is the same for JSON: a jsonb text starts with a trigger
 *    only as a negative number (strings start with a quote), so guarding the text is
 *    prefixing a leading `-`. The `json` form keeps its input text, leading whitespace
 *    included, so it stays as `ferry_csv_guard_json` has it.
 *
 * 3. `ferry_mentions_subject`, asked for most rows that have a subject, lowers the text only
 *    when there is a subject to look for, and splits the name with `translate` and
 *    `string_to_array` instead of a regular expression. The separators all become spaces, so
 *    the pieces are the words of the regular expression split plus empty pieces where
 *    separators ran together; those are shorter than three characters and were never looked
 *    for. The answer is the same for every text.
 *
 * 4. `ferry_scrub_subject` compiles its name expression only when the text can hold a match.
 *    Nearly every text that mentions its subject mentions the email, and the per-row name
 *    expression (a bracket of case variants per letter between word-boundary classes) took
 *    about 50 µs to compile, most of the time of such a row. A match of any alternative (the
 *    full name, or a word) holds a word of the name, each character in one of its case
 *    variants; for a name of ASCII characters whose lower case is that of its upper case,
 *    lowering that stretch of text gives the lowered word. So when no lowered word of such a
 *    name occurs in the lowered text, the expression cannot match and is not built. Other
 *    names are matched as before.
 */

import { NAME_STOP_WORDS, PATTERNS } from './0002-privacy-functions.ts';

/** A SQL string literal (standard_conforming_strings: backslashes are literal). */
const q = (text: string) => `'${text.replaceAll("'", "''")}'`;

export const up = /* sql */ String.raw`
CREATE OR REPLACE FUNCTION ferry_token(value text, key text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
  SELECT 'anon_' || left(encode(sha256(convert_to(key || value, 'UTF8')), 'hex'), 16)
$$;

CREATE OR REPLACE FUNCTION ferry_token_uuid(value text, key text) RETURNS uuid
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
  SELECT encode(substring(sha256(convert_to(key || value, 'UTF8')) FROM 1 FOR 16), 'hex')::uuid
$$;

-- ferry_csv_guard for a computed value: the same cells, the value named once.
CREATE OR REPLACE FUNCTION ferry_csv_guard_computed(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT regexp_replace(value, '^[=+@\t\r＝＋－＠-]', '''\&')
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json_computed(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT regexp_replace(value::text, '^-', '''-')
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json_computed(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ferry_csv_guard_computed(value)
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json_computed(value json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ferry_csv_guard_json(value)
$$;

CREATE OR REPLACE FUNCTION ferry_mentions_subject(txt text, subject_name text, subject_email text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_name text := lower(btrim(coalesce(subject_name, ''), E' \t\r\n,'));
  v_email text := lower(btrim(coalesce(subject_email, '')));
  v_lower text;
  v_word text;
BEGIN
  IF txt IS NULL OR (v_name = '' AND v_email = '') THEN
    RETURN false;
  END IF;
  v_lower := lower(txt);
  IF v_email <> '' AND strpos(v_lower, v_email) > 0 THEN
    RETURN true;
  END IF;
  IF v_name = '' THEN
    RETURN false;
  END IF;
  IF strpos(v_lower, v_name) > 0 THEN
    RETURN true;
  END IF;
  FOREACH v_word IN ARRAY string_to_array(translate(v_name, E'\t\r\n,', '    '), ' ') LOOP
    IF length(v_word) >= 3 AND strpos(v_lower, v_word) > 0 THEN
      RETURN true;
    END IF;
  END LOOP;
  RETURN false;
END
$$;

CREATE OR REPLACE FUNCTION ferry_scrub_subject(txt text, subject_name text, subject_email text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  v_out text := txt;
  v_words text[];
  v_word text;
  v_escaped text[] := '{}';
  v_alternatives text[] := '{}';
  v_lower text;
  v_possible boolean;
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
    v_possible := octet_length(subject_name) <> length(subject_name) OR lower(upper(subject_name)) <> lower(subject_name);
    IF NOT v_possible THEN
      v_lower := lower(v_out);
      FOREACH v_word IN ARRAY v_words LOOP
        IF strpos(v_lower, lower(v_word)) > 0 THEN
          v_possible := true;
          EXIT;
        END IF;
      END LOOP;
    END IF;
    IF NOT v_possible THEN
      RETURN v_out;
    END IF;
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
`;
