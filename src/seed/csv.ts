/**
 * CSV encoding for COPY FROM (FORMAT csv): RFC 4180 quoting, NULL as an unquoted
 * empty field, PostgreSQL array literals and jsonb as JSON text. Producers build
 * whole rows as strings and `batched` groups them into chunks for copyIn.
 */

/** A text field, always quoted: an empty string stays distinct from NULL. */
export function text(value: string): string {
  return value.includes('"') ? `"${value.replaceAll('"', '""')}"` : `"${value}"`;
}

/** A nullable text field. */
export function textOrNull(value: string | null | undefined): string {
  return value == null ? '' : text(value);
}

/** A number field (NULL when absent). */
export function num(value: number | null | undefined): string {
  return value == null ? '' : String(value);
}

export function bool(value: boolean): string {
  return value ? 't' : 'f';
}

const PAD2 = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const PAD3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));
const DAY_MS = 86_400_000;
const dayPrefixes = new Map<number, string>();

/**
 * The microseconds within its millisecond that a seeded instant gets: PostgreSQL's
 * `now()` writes six fractional digits, so the demo data has them too. A function of
 * the millisecond (deterministic, and equal instants stay equal, later ones later);
 * whole seconds (period starts, midnights) stay whole.
 */
export function subMillisecond(ms: number): number {
  const t = Math.floor(ms);
  if (t % 1000 === 0) return 0;
  return 1 + ((Math.imul(t % 1_000_000_007, 0x9e3779b1) >>> 0) % 999);
}

/** Microseconds since the epoch of a seeded instant given in milliseconds, as `ts` writes it. */
export function micros(ms: number): number {
  return Math.floor(ms) * 1000 + subMillisecond(ms);
}

/**
 * A timestamptz field from epoch milliseconds, with the microseconds of `subMillisecond`.
 * The date part is cached per day: formatting dates is the hottest step of the seed.
 */
export function ts(ms: number): string {
  const t = Math.floor(ms);
  const day = Math.floor(t / DAY_MS);
  let prefix = dayPrefixes.get(day);
  if (prefix === undefined) {
    prefix = new Date(day * DAY_MS).toISOString().slice(0, 11);
    if (dayPrefixes.size > 10_000) dayPrefixes.clear();
    dayPrefixes.set(day, prefix);
  }
  let rest = t - day * DAY_MS;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const sec = Math.floor(rest / 1000);
  return `${prefix}${PAD2[h]}:${PAD2[m]}:${PAD2[sec]}.${PAD3[rest - sec * 1000]}${PAD3[subMillisecond(t)]}Z`;
}

export function tsOrNull(ms: number | null | undefined): string {
  return ms == null ? '' : ts(ms);
}

/** A jsonb field. */
export function json(value: unknown): string {
  return text(JSON.stringify(value));
}

/** A text[] field: every element double-quoted with `\` and `"` escaped, then CSV-quoted. */
export function textArray(values: readonly string[]): string {
  if (values.length === 0) return '{}';
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    out += `"${values[i]!.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
  }
  return text(`${out}}`);
}

/** A numeric array (uuid[] ids need no quotes either), e.g. `{0.1,-0.2}`. */
export function plainArray(values: readonly (string | number)[]): string {
  return `"{${values.join(',')}}"`;
}

/** Rows of text grouped into chunks of about `size` characters, each ending on a row. */
export async function* batched(rows: Iterable<string>, size = 256 * 1024): AsyncGenerator<string> {
  let buffer = '';
  for (const row of rows) {
    buffer += row;
    if (buffer.length >= size) {
      yield buffer;
      buffer = '';
    }
  }
  if (buffer) yield buffer;
}
