import { parse as parseCsv } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { csv } from '../src/format/csv-writer.ts';
import { indentJsonText } from '../src/format/json-text.ts';
import { json } from '../src/format/json-writer.ts';
import { ndjson } from '../src/format/ndjson-writer.ts';
import { chunked, context, messageFields, messageRow, ndjsonOf, run } from './support/fixtures/format.ts';

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

// CSV as PostgreSQL's COPY (FORMAT csv, HEADER) writes it: quotes only where needed,
// doubled quotes, embedded CR/LF kept inside quotes.
const DB_CSV =
  'message_id,message_content,confidence_score,content_sources\n' +
  '0198f3c2-8a1b-7c3d-9e4f-000000000001,"Hello, ""world""",0.5,"[""a"", ""b""]"\n' +
  '0198f3c2-8a1b-7c3d-9e4f-000000000002,"two\r\nlines ✓ 🚀",,[]\n' +
  "0198f3c2-8a1b-7c3d-9e4f-000000000003,'=SUM(A1),1,\n";

const EXPECTED_RECORDS = [
  ['message_id', 'message_content', 'confidence_score', 'content_sources'],
  ['0198f3c2-8a1b-7c3d-9e4f-000000000001', 'Hello, "world"', '0.5', '["a", "b"]'],
  ['0198f3c2-8a1b-7c3d-9e4f-000000000002', 'two\r\nlines ✓ 🚀', '', '[]'],
  ['0198f3c2-8a1b-7c3d-9e4f-000000000003', "'=SUM(A1)", '1', ''],
];

describe('csv writer', () => {
  it('passes the database CSV through byte for byte without a BOM', async () => {
    const out = await run(csv.create(context(messageFields)), chunked(Buffer.from(DB_CSV)));
    expect(out.equals(Buffer.from(DB_CSV))).toBe(true);
    expect(parseCsv(out, { relax_quotes: false })).toEqual(EXPECTED_RECORDS);
  });

  it('puts a UTF-8 BOM first when asked, once, and the CSV still parses', async () => {
    const out = await run(
      csv.create(context(messageFields, { bom: true })),
      chunked(Buffer.from(DB_CSV), [1, 5]),
    );
    expect(out.subarray(0, 3).equals(BOM)).toBe(true);
    expect(out.subarray(3).equals(Buffer.from(DB_CSV))).toBe(true);
    expect(parseCsv(out, { bom: true })).toEqual(EXPECTED_RECORDS);
    // Without stripping, a reader sees the BOM glued to the first header cell.
    expect((parseCsv(out) as string[][])[0]![0]).toBe('\uFEFFmessage_id');
  });

  it('writes just the BOM for an empty input, and nothing without one', async () => {
    expect((await run(csv.create(context(messageFields, { bom: true })), [])).equals(BOM)).toBe(true);
    expect((await run(csv.create(context(messageFields)), [])).length).toBe(0);
  });

  it('declares its media type and extension', () => {
    expect(csv.contentType).toBe('text/csv; charset=utf-8');
    expect(csv.extension).toBe('csv');
  });
});

describe('ndjson writer', () => {
  const lines = Array.from({ length: 250 }, (_, i) => messageRow(i));

  it('passes lines through and each line parses', async () => {
    const input = ndjsonOf(lines);
    const out = await run(ndjson.create(context(messageFields)), chunked(input));
    expect(out.equals(input)).toBe(true);
    const parsed = out.toString('utf8').split('\n');
    expect(parsed.pop()).toBe('');
    expect(parsed).toHaveLength(250);
    expect(parsed.map((l) => JSON.parse(l))).toEqual(lines.map((l) => JSON.parse(l)));
  });

  it('ends the last line with a newline when the input did not', async () => {
    const input = Buffer.from(lines.slice(0, 3).join('\n'));
    const out = await run(ndjson.create(context(messageFields)), chunked(input, [7]));
    expect(out.toString()).toBe(`${lines.slice(0, 3).join('\n')}\n`);
  });

  it('writes nothing for no rows', async () => {
    expect((await run(ndjson.create(context(messageFields)), [])).length).toBe(0);
  });

  it('declares its media type', () => {
    expect(ndjson.contentType).toBe('application/x-ndjson');
  });
});

describe('json writer', () => {
  const ctx = context(messageFields);

  it('writes a valid document with an empty data array for zero rows', async () => {
    const doc = JSON.parse((await run(json.create(ctx), [])).toString('utf8'));
    expect(doc).toEqual({ export_metadata: ctx.metadata, data: [] });
    // A stream that carries only blank lines is zero rows as well.
    const blank = JSON.parse((await run(json.create(ctx), Buffer.from('\n\n  \n'))).toString('utf8'));
    expect(blank.data).toEqual([]);
  });

  it('writes one row', async () => {
    const line = messageRow(0);
    const doc = JSON.parse((await run(json.create(ctx), ndjsonOf([line]))).toString('utf8'));
    expect(doc.data).toEqual([JSON.parse(line)]);
    expect(Object.keys(doc)).toEqual(['export_metadata', 'data']);
  });

  it('writes many rows fed across odd chunk boundaries, multi-byte characters split between chunks', async () => {
    const lines = Array.from({ length: 700 }, (_, i) => messageRow(i));
    const input = ndjsonOf(lines);
    // Sizes 1..13 put a chunk boundary inside every emoji, umlaut and CJK character of the fixtures.
    const out = await run(json.create(ctx), chunked(input, [1, 2, 3, 5, 7, 11, 13]));
    const text = out.toString('utf8');
    expect(text).not.toContain('\uFFFD');
    const doc = JSON.parse(text);
    expect(doc.export_metadata).toEqual(ctx.metadata);
    expect(doc.data).toHaveLength(700);
    expect(doc.data).toEqual(lines.map((l) => JSON.parse(l)));
    expect(doc.data.some((r: { message_content: string }) => r.message_content.includes('🚀🇩🇪'))).toBe(true);
  });

  it('keeps big integers and row bytes exactly as the database wrote them', async () => {
    const line = '{"message_id":"x","tokens_used":12345678901234567,"custom_metadata":{"a": [1, 2]}}';
    const out = (await run(json.create(ctx), Buffer.from(line))).toString('utf8');
    expect(out).toContain(line);
    expect(JSON.parse(out).data).toHaveLength(1);
  });

  it('emits rows while the input is still arriving', async () => {
    const writer = json.create(ctx);
    const seen: Buffer[] = [];
    writer.on('data', (chunk: Buffer) => seen.push(chunk));
    writer.write(ndjsonOf([messageRow(1), messageRow(2)]));
    await new Promise((resolve) => setImmediate(resolve));
    expect(Buffer.concat(seen).toString()).toContain('"data":[');
    expect(Buffer.concat(seen).toString()).toContain(JSON.parse(messageRow(2)).message_id);
    writer.end();
    await new Promise((resolve) => writer.on('end', resolve));
    expect(JSON.parse(Buffer.concat(seen).toString()).data).toHaveLength(2);
  });

  it('declares its media type', () => {
    expect(json.contentType).toBe('application/json');
  });
});

describe('indentJsonText', () => {
  it('lays out JSON as JSON.stringify(value, null, 2) does', () => {
    const values = [
      { a: 1, b: [1, 2, { c: 'x, y: "z" \\ ]' }], d: {}, e: [], f: null, g: true, h: -0.5e-7 },
      [],
      {},
      'text',
      [[[]], [{}], { 'key with "quotes"': ['\u0000\n\t'] }],
      { conversation: { id: 'c1', custom_fields: { nested: { deeper: [1.25, false] } } }, messages: [] },
      // Quotes after runs of backslashes: an odd run escapes the quote, an even one does not.
      { 'ends in \\': 'ends in \\', q: 'say \\"hi\\" \\\\', r: ['\\\\"', '"\\', '\\\\\\"'], '': '' },
    ];
    for (const value of values) {
      const compact = JSON.stringify(value);
      expect(indentJsonText(compact)).toBe(JSON.stringify(value, null, 2));
    }
  });

  it('keeps every number as its source text, whatever the spacing of the input', () => {
    const jsonb = '{"big": 12345678901234567890, "exact": 0.12345678901234567890123, "list": [1.50, 1e400]}';
    expect(indentJsonText(jsonb)).toBe(
      '{\n  "big": 12345678901234567890,\n  "exact": 0.12345678901234567890123,\n  "list": [\n    1.50,\n    1e400\n  ]\n}',
    );
  });
});
