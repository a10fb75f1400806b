import { describe, expect, test } from 'vitest';
import { decodeCursor, encodeCursor } from '../src/lib/list-cursor.ts';

// The database's text of the time (microseconds), as the lists select it.
const at = '2026-03-04T05:06:07.089123Z';
const id = '0b7c6f1e-3a52-4d2e-9c1f-2f8a1d6b9e40';

describe('list cursors', () => {
  // Clients keep cursors between calls: the text of each form must not change.
  test('the pipe form (exports, schedules) is base64url of "<time>|<id>"', () => {
    const text = encodeCursor({ at, id }, 'pipe');
    expect(Buffer.from(text, 'base64url').toString()).toBe(`2026-03-04T05:06:07.089123Z|${id}`);
    expect(decodeCursor(text, 'pipe')).toEqual({ at, id });
  });

  test('the json form (audit log) is base64url of ["<time>", "<id>"]', () => {
    const text = encodeCursor({ at, id }, 'json');
    expect(Buffer.from(text, 'base64url').toString()).toBe(`["2026-03-04T05:06:07.089123Z","${id}"]`);
    expect(decodeCursor(text, 'json')).toEqual({ at, id });
  });

  test('cursors handed out before they kept microseconds still decode', () => {
    const pipe = Buffer.from(`2026-03-04T05:06:07.089Z|${id}`).toString('base64url');
    expect(decodeCursor(pipe, 'pipe')).toEqual({ at: '2026-03-04T05:06:07.089Z', id });
    const json = Buffer.from(`["2026-03-04T05:06:07.089Z","${id}"]`).toString('base64url');
    expect(decodeCursor(json, 'json')).toEqual({ at: '2026-03-04T05:06:07.089Z', id });
  });

  test('anything else is invalid_parameter on cursor, in the words each list always used', () => {
    const odd = (time: string) => Buffer.from(`${time}|${id}`).toString('base64url');
    for (const bad of [
      '',
      'garbage!',
      encodeCursor({ at, id }, 'json'),
      // Only the UTC text a list hands out reaches SQL.
      odd('2026-03-04 05:06:07+02'),
      odd("2026-03-04T05:06:07Z'; --"),
      odd('2026-02-30T05:06:07Z'),
    ])
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
