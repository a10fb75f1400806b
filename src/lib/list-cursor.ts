import { invalid } from '../domain/ferry-error.ts';

/**
 * A row's place in a list ordered by (time, id): the keyset the next page starts after.
 * `at` is the database's text of the time with its microseconds (`instantText` in
 * db/keyset.ts), never a JavaScript Date: a Date keeps milliseconds only, and a cursor cut
 * to them skips or repeats the rows whose times differ below the millisecond.
 */
export interface ListPosition {
  readonly at: string;
  readonly id: string;
}

interface CursorFormat {
  encode(position: ListPosition): string;
  /** The position, or null when the text is not a cursor of this format. */
  decode(text: string): ListPosition | null;
  /** What the `invalid_parameter` error says about a cursor that is not one. */
  readonly hint: string;
}

const ID = /^[0-9a-f-]{36}$/;
// UTC with up to six fractional digits; cursors issued before they kept microseconds have three.
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

/** A real UTC instant in that form (no 30 February: the text must survive a round trip). */
function isInstant(text: unknown): text is string {
  if (typeof text !== 'string' || !INSTANT.test(text)) return false;
  const ms = Date.parse(text);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 19) === text.slice(0, 19);
}

/**
 * The text forms of list cursors. They are opaque to clients but stored by them between
 * calls, so each list keeps the form (and error text) it has always handed out.
 */
const FORMATS = {
  /** base64url of `<ISO time>|<id>`: exports and schedules. */
  pipe: {
    encode: (p) => Buffer.from(`${p.at}|${p.id}`).toString('base64url'),
    decode(text) {
      const [at, id] = Buffer.from(text, 'base64url').toString().split('|');
      if (!id || !ID.test(id) || !isInstant(at)) return null;
      return { at, id };
    },
    hint: 'is not a cursor this API returned (use next_cursor from the previous page)',
  },
  /** base64url of the JSON array `[ISO time, id]`: the audit log. */
  json: {
    encode: (p) => Buffer.from(JSON.stringify([p.at, p.id])).toString('base64url'),
    decode(text) {
      try {
        const [at, id] = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as [unknown, unknown];
        if (typeof id !== 'string' || !ID.test(id) || !isInstant(at)) return null;
        return { at, id };
      } catch {
        return null;
      }
    },
    hint: 'is not a cursor returned by this endpoint (pass next_cursor unchanged)',
  },
} satisfies Record<string, CursorFormat>;

export type ListCursorFormat = keyof typeof FORMATS;

/** The `next_cursor` of a page whose last row is at `position`. */
export function encodeCursor(position: ListPosition, format: ListCursorFormat): string {
  return FORMATS[format].encode(position);
}

/** The position a `cursor` parameter names; anything else is an `invalid_parameter` error on `cursor`. */
export function decodeCursor(text: string, format: ListCursorFormat): ListPosition {
  const position = FORMATS[format].decode(text);
  if (!position) throw invalid('cursor', FORMATS[format].hint);
  return position;
}
