import { describe, expect, it } from 'vitest';
import { LineSplitter } from '../src/format/line-splitter.ts';
import { getWriter, WRITERS } from '../src/format/registry.ts';
import { EXPORT_FORMATS } from '../src/format/types.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import {
  formatTimestampMicros,
  parseDateDays,
  parseRow,
  parseTimestampMicros,
  utcDateOfMicros,
} from '../src/format/values.ts';
import { chunked } from './support/fixtures/format.ts';

function splitAll(chunks: Buffer[], options?: { maxLineBytes?: number }): string[] {
  const splitter = new LineSplitter(options);
  const lines: string[] = [];
  for (const chunk of chunks) lines.push(...splitter.push(chunk));
  lines.push(...splitter.end());
  return lines;
}

describe('LineSplitter', () => {
  const text = 'première ligne\n{"emoji":"🚀🇩🇪","cjk":"注文"}\n\nÅngström – ok\r\nlast without newline';
  const expected = [
    'première ligne',
    '{"emoji":"🚀🇩🇪","cjk":"注文"}',
    '',
    'Ångström – ok',
    'last without newline',
  ];

  it('gives the same lines for every single split point, also inside multi-byte characters', () => {
    const bytes = Buffer.from(text);
    for (let cut = 0; cut <= bytes.length; cut++) {
      expect(splitAll([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(expected);
    }
  });

  it('handles byte-by-byte and odd chunkings', () => {
    const bytes = Buffer.from(text);
    expect(splitAll(chunked(bytes, [1]))).toEqual(expected);
    expect(splitAll(chunked(bytes, [3, 1, 4, 1, 5, 9, 2, 6]))).toEqual(expected);
  });

  it('returns nothing extra for input ending in a newline, and nothing for no input', () => {
    expect(splitAll([Buffer.from('a\nb\n')])).toEqual(['a', 'b']);
    expect(splitAll([])).toEqual([]);
  });

  it('accepts Uint8Array chunks that are views into a larger buffer', () => {
    const backing = new Uint8Array(Buffer.from('xxa\nbxx'));
    const splitter = new LineSplitter();
    expect(splitter.push(backing.subarray(2, 5))).toEqual(['a']);
    expect(splitter.end()).toEqual(['b']);
  });

  it('does not keep a reference to a chunk the caller reuses', () => {
    const splitter = new LineSplitter();
    const chunk = Buffer.from('abc');
    splitter.push(chunk);
    chunk.fill(0x7a); // "zzz"
    expect(splitter.push(Buffer.from('d\n'))).toEqual(['abcd']);
  });

  it('fails on a line longer than the limit instead of buffering without end', () => {
    expect(() => splitAll(chunked(Buffer.alloc(100, 0x61), [10]), { maxLineBytes: 50 })).toThrow(FerryError);
  });
});

describe('registry', () => {
  it('has a writer for every export format, under its own name', () => {
    expect(Object.keys(WRITERS).sort()).toEqual([...EXPORT_FORMATS].sort());
    for (const format of EXPORT_FORMATS) expect(getWriter(format).format).toBe(format);
  });

  it('names the accepted formats for an unknown one', () => {
    expect(() => getWriter('xlsx')).toThrow(
      /format: unknown format "xlsx" \(accepted: csv, json, ndjson, xml, parquet\)/,
    );
    expect(() => getWriter('toString')).toThrow(FerryError);
  });

  it('declares the input each writer needs from the database', () => {
    // Parquet is written by DuckDB from the database's CSV.
    for (const format of ['csv', 'parquet'] as const) expect(getWriter(format).input).toBe('csv');
    for (const format of ['json', 'ndjson', 'xml'] as const) expect(getWriter(format).input).toBe('ndjson');
  });
});

describe('value parsing', () => {
  it('reads row_to_json timestamps with +00:00, Z, other offsets and no offset', () => {
    const micros = BigInt(Date.UTC(2025, 8, 3, 10, 0, 0)) * 1000n + 123456n;
    expect(parseTimestampMicros('2025-09-03T10:00:00.123456+00:00')).toBe(micros);
    expect(parseTimestampMicros('2025-09-03T10:00:00.123456Z')).toBe(micros);
    expect(parseTimestampMicros('2025-09-03T12:00:00.123456+02:00')).toBe(micros);
    expect(parseTimestampMicros('2025-09-03T04:30:00.123456-05:30')).toBe(micros);
    expect(parseTimestampMicros('2025-09-03T10:00:00.123456')).toBe(micros);
    expect(parseTimestampMicros('2025-09-03T10:00:00+00')).toBe(micros - 123456n);
    expect(parseTimestampMicros('0044-03-15T12:00:00Z')).toBe(
      BigInt(new Date('0044-03-15T12:00:00Z').getTime()) * 1000n,
    );
    expect(parseTimestampMicros('not a time')).toBeUndefined();
    expect(parseTimestampMicros('2025-13-01T00:00:00Z')).toBeUndefined();
  });

  it('formats timestamps as canonical UTC, keeping only the precision they have', () => {
    const base = BigInt(Date.UTC(2025, 8, 3, 10, 0, 0)) * 1000n;
    expect(formatTimestampMicros(base)).toBe('2025-09-03T10:00:00Z');
    expect(formatTimestampMicros(base + 123000n)).toBe('2025-09-03T10:00:00.123Z');
    expect(formatTimestampMicros(base + 123456n)).toBe('2025-09-03T10:00:00.123456Z');
    expect(formatTimestampMicros(-1n)).toBe('1969-12-31T23:59:59.999999Z');
    expect(utcDateOfMicros(-1n)).toBe('1969-12-31');
    expect(utcDateOfMicros(base)).toBe('2025-09-03');
  });

  it('reads dates as days since the epoch', () => {
    expect(parseDateDays('1970-01-02')).toBe(1);
    expect(parseDateDays('1969-12-31')).toBe(-1);
    expect(parseDateDays('2025-02-30')).toBeUndefined();
    expect(parseDateDays('2024-02-29')).toBe(Date.UTC(2024, 1, 29) / 86_400_000);
  });

  it('keeps integers beyond 2^53 exact', () => {
    const row = parseRow('{"big":12345678901234567,"nested":{"n":-9007199254740993},"small":42,"f":1.5}');
    expect(JSON.stringify(row)).toBe(
      '{"big":12345678901234567,"nested":{"n":-9007199254740993},"small":42,"f":1.5}',
    );
    expect(row['small']).toBe(42);
  });

  it('rejects a line that is not a JSON object', () => {
    expect(() => parseRow('[1,2]')).toThrow(FerryError);
    expect(() => parseRow('{"a":')).toThrow(SyntaxError);
  });
});
