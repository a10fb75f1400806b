/**
 * Spreadsheet formula-injection guard for CSV cells (OWASP ASVS 5.0 1.2.10, CWE-1236): a
 * text cell that starts with = + - @ tab, carriage return, NUL or the full-width ＝ ＋ － ＠
 * gets a single quote in front, so spreadsheets show it as text instead of running it.
 * It applies to text cells only: numbers are never passed through it, so a numeric -5
 * stays a number, while the text "-5" becomes "'-5".
 */

const TRIGGERS: ReadonlySet<string> = new Set(['=', '+', '-', '@', '\t', '\r', '\0', '＝', '＋', '－', '＠']);

/** Wraps a text SQL expression in `ferry_csv_guard` (migration 0002); NULL stays NULL. */
export function csvGuardSql(textExpr: string): string {
  return `ferry_csv_guard(${textExpr})`;
}

/** Wraps a json, jsonb (or JSON text) SQL expression in `ferry_csv_guard_json` (migration 0019): its text, guarded. */
export function csvGuardJsonSql(jsonExpr: string): string {
  return `ferry_csv_guard_json(${jsonExpr})`;
}

/** The JavaScript twin of `ferry_csv_guard`, with the same rules plus NUL, which SQL text cannot hold. */
export function csvGuard(value: string): string {
  return value.length > 0 && TRIGGERS.has(value[0]!) ? `'${value}` : value;
}
