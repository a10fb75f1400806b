/**
 * Export speed (docs/benchmarks.md).
 *
 * `ferry_csv_guard` becomes inlinable. A SQL function declared `STRICT` is never inlined, so
 * every guarded cell was a function call: about 0.9 µs each, five of a message's cells took
 * 6.4 s per million rows through the call and 2.1 s inlined. The body already returns NULL
 * for NULL (`ascii(NULL)` is NULL, so the CASE takes its ELSE branch), so the result is the same.
 * The first character is tested by its code point (`ascii`, which reads one character and
 * allocates nothing) instead of comparing a `left(value, 1)` copy against ten strings.
 *
 * `ferry_csv_guard_json` guards JSON cells. A JSON text can only start with a trigger when it
 * is a negative number, so the text is built once and guarded only then; passing the text of
 * a whole document through the inlined guard would build it twice. Its `text` form is for
 * computed datasets whose JSON fields are built as text.
 */
export const up = /* sql */ `
CREATE OR REPLACE FUNCTION ferry_csv_guard(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN ascii(value) IN (61, 43, 45, 64, 9, 13, 65309, 65291, 65293, 65312) THEN '''' || value ELSE value END
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN ferry_csv_guard(value::text) ELSE value::text END
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ferry_csv_guard(value)
$$;

CREATE OR REPLACE FUNCTION ferry_csv_guard_json(value json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN json_typeof(value) = 'number' THEN ferry_csv_guard(value::text) ELSE value::text END
$$;
`;
