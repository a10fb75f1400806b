import { describe, expect, test } from 'vitest';
import { decodeCursor, encodeCursor } from '../src/lib/list-cursor.ts';

const at = new Date('2026-03-04T05:06:07.089Z');
const id = '0b7c6f1e-3a52-4d2e-9c1f-2f8a1d6b9e40';

describe('list cursors', () => {
  // Clients keep cursors between calls: the text of each form must not change.
  test('the pipe form (exports, schedules) is base64url of "<time>|<id>"', () => {
    const text = encodeCursor({ at, id }, 'pipe');
    expect(Buffer.from(text, 'base64url').toString()).toBe(`2026-03-04T05:06:07.089Z|${id}`);
    expect(decodeCursor(text, 'pipe')).toEqual({ at, id });
  });

  test('the json form (audit log) is base64url of ["<time>", "<id>"]', () => {
    const text = encodeCursor({ at, id }, 'json');
    expect(Buffer.from(text, 'base64url').toString()).toBe(`["2026-03-04T05:06:07.089Z","${id}"]`);
    expect(decodeCursor(text, 'json')).toEqual({ at, id });
  });

  test('anything else is invalid_parameter on cursor, in the words each list always used', () => {
    for (const bad of ['', 'garbage!', encodeCursor({ at, id }, 'json')])
      expect(() => decodeCursor(bad, 'pipe')).toThrow(
        'cursor: is not a cursor this API returned (use next_cursor from the previous page)',
      );
    for (const bad of ['', 'garbage!', encodeCursor({ at, id }, 'pipe')])
      expect(() => decodeCursor(bad, 'json')).toThrow(
        'cursor: is not a cursor returned by this endpoint (pass next_cursor unchanged)',
      );
    let error: unknown;
    try {
      decodeCursor('x', 'pipe');
    } catch (err) {
      error = err;
    }
    expect(error).toMatchObject({ code: 'invalid_parameter', details: { parameter: 'cursor' } });
  });
});
