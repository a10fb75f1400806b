/**
 * Spreadsheet formula-injection guard for CSV cells (OWASP ASVS 5.0 1.2.10, CWE-1236): a
 * text cell that starts with = + - @ tab, carriage return, NUL or the full-width ＝ ＋ － ＠
 * gets a single quote in front, so spreadsheets show it as text instead of running it.
 * It applies to text cells only: numbers are never passed through it, so a numeric -5
 * stays a number, while the text "-5" becomes "'-5".
 */

const TRIGGERS: ReadonlySet<string> = new Set(['=', '+', '-', '@', '\t', '\r', '\0', '＝', '＋', '－', '＠']);

/**
 * A column of the FROM clause, maybe parenthesized and cast to text: cheap to read twice, so
 * PostgreSQL inlines `ferry_csv_guard` around it. Around anything else (a scrubber's or a
 * pseudonym's result) it would call the guard per cell, so those take the `_computed` guards
 * of migration 0031, which read their value once and are inlined whatever it costs.
 */
const COLUMN = /^\(*[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*\)*(?:::(?:text|jsonb?))?$/;

/** Wraps a text SQL expression in the formula guard (migrations 0019, 0031); NULL stays NULL. */
export function csvGuardSql(textExpr: string): string {
  return COLUMN.test(textExpr) ? `ferry_csv_guard(${textExpr})` : `ferry_csv_guard_computed(${textExpr})`;
}

/** Wraps a json, jsonb (or JSON text) SQL expression in the formula guard for JSON (migrations 0019, 0031): its text, guarded. */
export function csvGuardJsonSql(jsonExpr: string): string {
  return COLUMN.test(jsonExpr)
    ? `ferry_csv_guard_json(${jsonExpr})`
    : `ferry_csv_guard_json_computed(${jsonExpr})`;
}

/** The JavaScript twin of `ferry_csv_guard`, with the same rules plus NUL, which SQL text cannot hold. */
export function csvGuard(value: string): string {
  return value.length > 0 && TRIGGERS.has(value[0]!) ? `'${value}` : value;
}
