import { invalid } from '../domain/ferry-error.ts';

/** A row's place in a list ordered by (time, id): the keyset the next page starts after. */
export interface ListPosition {
  readonly at: Date;
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

/**
 * The text forms of list cursors. They are opaque to clients but stored by them between
 * calls, so each list keeps the form (and error text) it has always handed out.
 */
const FORMATS = {
  /** base64url of `<ISO time>|<id>`: exports and schedules. */
  pipe: {
    encode: (p) => Buffer.from(`${p.at.toISOString()}|${p.id}`).toString('base64url'),
    decode(text) {
      const [at, id] = Buffer.from(text, 'base64url').toString().split('|');
      const date = new Date(at ?? '');
      if (!id || !ID.test(id) || Number.isNaN(date.getTime())) return null;
      return { at: date, id };
    },
    hint: 'is not a cursor this API returned (use next_cursor from the previous page)',
  },
  /** base64url of the JSON array `[ISO time, id]`: the audit log. */
  json: {
    encode: (p) => Buffer.from(JSON.stringify([p.at.toISOString(), p.id])).toString('base64url'),
    decode(text) {
      try {
        const [at, id] = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as [string, string];
        const date = new Date(at);
        if (typeof id !== 'string' || !ID.test(id) || Number.isNaN(date.getTime())) return null;
        return { at: date, id };
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
