import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { RecordCounter } from '../src/collect/record-counter.ts';

/** Feeds `text` to a counter in chunks of `size` bytes and returns its count. */
function count(kind: 'csv' | 'ndjson', text: string, size: number, headerLines = 0): number {
  const counter = new RecordCounter(kind, { headerLines });
  const bytes = Buffer.from(text, 'utf8');
  for (let at = 0; at < bytes.length; at += size) {
    counter._transform(bytes.subarray(at, at + size), 'utf8', () => {});
  }
  return counter.count;
}

describe('RecordCounter', () => {
  // Rows like the messages export: JSON cells full of doubled quotes, quoted newlines, empty cells.
  const rows = Array.from({ length: 200 }, (_, n) => [
    `id-${n}`,
    n % 3 === 0 ? `line one\nline "two"\r\nthree` : `plain ${n}`,
    JSON.stringify([{ type: 'product', value: `Item ${n}`, score: n / 10 }, { quote: '"' }]),
    n % 5 === 0 ? '' : `"${n}"`,
  ]);
  const csv = `a,b,c,d\n${rows
    .map((r) => r.map((cell) => (/[",\n\r]/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell)).join(','))
    .join('\n')}\n`;

  it('counts CSV records as a CSV parser does, however the bytes are split', () => {
    const expected = (parse(csv, { from_line: 2 }) as unknown[]).length;
    expect(expected).toBe(200);
    for (const size of [1, 2, 3, 7, 64, 1000, csv.length]) {
      expect(count('csv', csv, size, 1), `chunks of ${size}`).toBe(expected);
    }
  });

  it('counts NDJSON lines', () => {
    const ndjson = `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`;
    for (const size of [1, 5, 4096]) expect(count('ndjson', ndjson, size)).toBe(200);
  });
});
