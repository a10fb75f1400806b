import { type RawBuilder, type SqlBool, sql } from 'kysely';

/**
 * Keyset paging over `(timestamp, id)`. PostgreSQL keeps microseconds and a JavaScript
 * `Date` only milliseconds, so a cursor holds the database's own text of the timestamp
 * and compares it back in SQL: a Date cursor repeats or skips every row whose timestamp
 * has digits beyond the millisecond. The list cursors' text forms are in lib/list-cursor.ts.
 */

const UTC_INSTANT = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/** SQL text of a timestamptz in UTC with all six fractional digits: `2026-09-01T07:17:49.303123Z`. */
export function utcInstantSql(expr: string): string {
  return `to_char((${expr}) AT TIME ZONE 'UTC', ${UTC_INSTANT})`;
}

/** A column's timestamp as that text, to select next to the row and put in its cursor. */
export function instantText(column: string): RawBuilder<string> {
  return sql<string>`to_char(${sql.ref(column)} AT TIME ZONE 'UTC', ${sql.raw(UTC_INSTANT)})`;
}

/**
 * The rows after a cursor position in `ORDER BY column, id` (`asc`) or
 * `ORDER BY column DESC, id DESC` (`desc`): one row comparison, so ties on the
 * timestamp are broken by id.
 */
export function afterPosition(
  column: string,
  position: { at: string; id: string },
  order: 'asc' | 'desc',
): RawBuilder<SqlBool> {
  const op = sql.raw(order === 'asc' ? '>' : '<');
  return sql<SqlBool>`(${sql.ref(column)}, ${sql.ref('id')}) ${op} (CAST(${position.at} AS timestamptz), ${position.id})`;
}
