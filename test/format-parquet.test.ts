import { createWriteStream, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { zstdDecompressSync } from 'node:zlib';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPartitionedParquet, HIVE_NULL_PARTITION } from '../src/format/parquet-partitions.ts';
import { createParquetTransform, DEFAULT_ROW_GROUP_ROWS } from '../src/format/parquet-writer.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import {
  allTypeFields,
  chunked,
  context,
  messageFields,
  messageRow,
  ndjsonOf,
  run,
  uuid,
} from './support/fixtures/format.ts';

const ALL = context(allTypeFields, { dataset: 'kitchen_sink' });

const ROWS = [
  {
    id: uuid(1),
    title: 'Fish & chips <b> "q" 😀 注文',
    count: 42,
    score: 0.1,
    active: true,
    created_at: '2025-09-03T10:00:00.123456+00:00',
    day: '2025-09-03',
    attributes: { plan: 'pro', list: [1, 2.5, null], big: 1 },
    tags: ['vip', null, 'ümlaut'],
    related_ids: [uuid(2), uuid(3)],
    weights: [0.5, null, -3],
  },
  {
    id: uuid(4),
    title: null,
    count: null,
    score: null,
    active: null,
    created_at: null,
    day: null,
    attributes: null,
    tags: null,
    related_ids: null,
    weights: null,
  },
  {
    id: uuid(5),
    title: '',
    count: -9007199254740991,
    score: 'NaN',
    active: false,
    created_at: '2025-09-03T12:30:00+02:00',
    day: '1969-12-31',
    attributes: 'a JSON string',
    tags: [],
    related_ids: [],
    weights: ['Infinity'],
  },
  {
    id: uuid(6),
    title: 'Z timestamp',
    count: 0,
    score: 1e-7,
    active: true,
    created_at: '2025-01-01T00:00:00Z',
    day: '2025-01-01',
    attributes: [],
    tags: [''],
    related_ids: [uuid(7)],
    weights: [],
  },
];
const LINES = ROWS.map((r) => JSON.stringify(r));
// The exact form PostgreSQL writes for a bigint beyond 2^53 (and inside jsonb).
LINES[0] = LINES[0]!
  .replace('"count":42', '"count":12345678901234567')
  .replace('"big":1', '"big":98765432109876543');

const micros = (iso: string) => BigInt(new Date(iso).getTime()) * 1000n;

let dir: string;
let duck: DuckDBInstance;
let db: DuckDBConnection;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-parquet-'));
  duck = await DuckDBInstance.create(':memory:');
  db = await duck.connect();
});

afterAll(async () => {
  db?.closeSync();
  duck?.closeSync();
  await rm(dir, { recursive: true, force: true });
});

async function query(sql: string): Promise<Record<string, unknown>[]> {
  return (await db.runAndReadAll(sql)).getRowObjectsJson() as Record<string, unknown>[];
}

async function toFile(name: string, bytes: Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

function arrayBuffer(bytes: Buffer): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

describe('parquet writer', () => {
  it('maps every field type to the expected column type (DuckDB)', async () => {
    const out = await run(createParquetTransform(ALL), chunked(ndjsonOf(LINES), [1, 7, 100]));
    const path = await toFile('types.parquet', out);
    const types = Object.fromEntries(
      (await query(`DESCRIBE SELECT * FROM read_parquet('${path}')`)).map((r) => [
        r['column_name'],
        r['column_type'],
      ]),
    );
    expect(types).toEqual({
      id: 'VARCHAR',
      title: 'VARCHAR',
      count: 'BIGINT',
      score: 'DOUBLE',
      active: 'BOOLEAN',
      created_at: 'TIMESTAMP WITH TIME ZONE',
      day: 'DATE',
      attributes: 'JSON',
      tags: 'VARCHAR[]',
      related_ids: 'VARCHAR[]',
      weights: 'DOUBLE[]',
    });
  });

  it('stores values that DuckDB reads back equal', async () => {
    const out = await run(createParquetTransform(ALL), ndjsonOf(LINES));
    const path = await toFile('values.parquet', out);
    const rows = await query(
      `SELECT id, title, count::VARCHAR AS count, score, active, epoch_us(created_at)::VARCHAR AS us, day::VARCHAR AS day,
              attributes::VARCHAR AS attributes, tags, related_ids, weights
       FROM read_parquet('${path}')`,
    );
    expect(rows).toHaveLength(4);
    const [full, nulls, specials, zulu] = rows as [
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
    ];
    expect(full).toEqual({
      id: uuid(1),
      title: 'Fish & chips <b> "q" 😀 注文',
      count: '12345678901234567',
      score: 0.1,
      active: true,
      us: String(micros('2025-09-03T10:00:00.123Z') + 456n),
      day: '2025-09-03',
      attributes: '{"plan":"pro","list":[1,2.5,null],"big":98765432109876543}',
      tags: ['vip', null, 'ümlaut'],
      related_ids: [uuid(2), uuid(3)],
      weights: [0.5, null, -3],
    });
    expect(Object.entries(nulls).filter(([, v]) => v !== null)).toEqual([['id', uuid(4)]]);
    expect(specials).toMatchObject({
      title: '',
      count: '-9007199254740991',
      score: 'NaN',
      active: false,
      us: String(micros('2025-09-03T10:30:00Z')),
      day: '1969-12-31',
      attributes: '"a JSON string"',
      tags: [],
      related_ids: [],
      weights: ['Infinity'],
    });
    expect(zulu).toMatchObject({
      us: String(micros('2025-01-01T00:00:00Z')),
      score: 1e-7,
      attributes: '[]',
      tags: [''],
    });
  });

  it('is read back equal by hyparquet', async () => {
    const out = await run(createParquetTransform(ALL), ndjsonOf(LINES));
    const rows = (await parquetReadObjects({ file: arrayBuffer(out) })) as Record<string, unknown>[];
    expect(rows).toHaveLength(4);
    const full = rows[0]!;
    expect(full['count']).toBe(12345678901234567n);
    expect(full['created_at']).toEqual(new Date('2025-09-03T10:00:00.123Z'));
    expect(full['day']).toEqual(new Date('2025-09-03T00:00:00Z'));
    // hyparquet parses JSON columns with JSON.parse, so the big integer is only checked with DuckDB.
    expect(full['attributes']).toMatchObject({ plan: 'pro', list: [1, 2.5, null] });
    expect(full['tags']).toEqual(['vip', null, 'ümlaut']);
    expect(full['weights']).toEqual([0.5, null, -3]);
    expect(full['active']).toBe(true);
    expect(rows[1]!['title']).toBeNull();
    expect(rows[1]!['count']).toBeNull();
    expect(rows[1]!['tags'] ?? null).toBeNull(); // hyparquet gives undefined for a null list
    expect(Number.isNaN(rows[2]!['score'])).toBe(true);
    expect(rows[2]!['count']).toBe(-9007199254740991n);
    expect(rows[2]!['weights']).toEqual([Number.POSITIVE_INFINITY]);
    const metadata = parquetMetadata(arrayBuffer(out));
    expect(metadata.created_by).toMatch(/^DuckDB version v\d/);
    const kv = Object.fromEntries((metadata.key_value_metadata ?? []).map((e) => [e.key, e.value]));
    expect(kv['ferry.dataset']).toBe('kitchen_sink');
    expect(JSON.parse(kv['ferry.export_metadata']!)).toEqual(ALL.metadata);
  });

  it('compresses with SNAPPY by default and ZSTD when asked; both readers agree', async () => {
    const input = ndjsonOf(Array.from({ length: 3000 }, (_, i) => messageRow(i)));
    const ctx = context(messageFields);
    const snappy = await run(createParquetTransform(ctx), input);
    const zstd = await run(createParquetTransform(ctx, { codec: 'ZSTD' }), input);
    const codecs = (bytes: Buffer) =>
      new Set(
        parquetMetadata(arrayBuffer(bytes)).row_groups.flatMap((g) =>
          g.columns.map((c) => c.meta_data?.codec),
        ),
      );
    expect(codecs(snappy)).toEqual(new Set(['SNAPPY']));
    expect(codecs(zstd)).toEqual(new Set(['ZSTD']));
    expect(zstd.length).toBeLessThan(snappy.length);
    const path = await toFile('zstd.parquet', zstd);
    const [agg] = await query(
      `SELECT count(*)::INT AS n, count(DISTINCT message_id)::INT AS ids, sum(tokens_used)::VARCHAR AS tokens FROM read_parquet('${path}')`,
    );
    const expectedTokens = Array.from({ length: 3000 }, (_, i) => i)
      .filter((i) => i % 2 === 1)
      .reduce((sum, i) => sum + 50 + (i % 400), 0);
    expect(agg).toEqual({ n: 3000, ids: 3000, tokens: String(expectedTokens) });
    const rows = await parquetReadObjects({
      file: arrayBuffer(zstd),
      compressors: { ZSTD: (input: Uint8Array) => new Uint8Array(zstdDecompressSync(input)) },
    });
    expect(rows.map((r) => r['message_content'])).toEqual(
      Array.from({ length: 3000 }, (_, i) => JSON.parse(messageRow(i)).message_content),
    );
  });

  it('writes a valid file with typed columns for zero rows', async () => {
    const out = await run(createParquetTransform(ALL), []);
    const path = await toFile('empty.parquet', out);
    expect(await query(`SELECT count(*)::INT AS n FROM read_parquet('${path}')`)).toEqual([{ n: 0 }]);
    const types = await query(`DESCRIBE SELECT created_at, tags FROM read_parquet('${path}')`);
    expect(types.map((t) => t['column_type'])).toEqual(['TIMESTAMP WITH TIME ZONE', 'VARCHAR[]']);
    expect(await parquetReadObjects({ file: arrayBuffer(out) })).toEqual([]);
  });

  it('closes row groups by row count (at a multiple of 2,048 rows)', async () => {
    // DuckDB closes a row group at a whole number of its 2,048-row vectors; a byte bound
    // is not available while row order is preserved.
    const input = ndjsonOf(Array.from({ length: 20_000 }, (_, i) => messageRow(i)));
    const ctx = context(messageFields);
    const byRows = await run(createParquetTransform(ctx, { rowGroupRows: 4096 }), input);
    const groups = parquetMetadata(arrayBuffer(byRows)).row_groups.map((g) => Number(g.num_rows));
    expect(groups.slice(0, -1)).toEqual(Array(groups.length - 1).fill(4096));
    expect(groups.at(-1)).toBeLessThanOrEqual(4096 + 2048);
    expect(groups.reduce((a, b) => a + b, 0)).toBe(20_000);
  });

  it('streams: a 200,000-row export emits bytes long before its input ends', async () => {
    const total = 200_000;
    const ctx = context(messageFields);
    let sentRows = 0;
    let rowsSentAtFirstOutput = -1;
    let outputBeforeLastInput = -1;
    const out: Buffer[] = [];
    function* input(): Generator<Buffer> {
      const batch = 1000;
      for (let start = 0; start < total; start += batch) {
        if (start + batch >= total) outputBeforeLastInput = out.reduce((n, b) => n + b.length, 0);
        const lines: string[] = [];
        for (let i = start; i < start + batch; i++) lines.push(messageRow(i));
        sentRows = start + batch;
        yield ndjsonOf(lines);
      }
    }
    await pipeline(
      Readable.from(input()),
      createParquetTransform(ctx),
      new Writable({
        write(chunk: Buffer, _enc, done) {
          if (rowsSentAtFirstOutput < 0) rowsSentAtFirstOutput = sentRows;
          out.push(chunk);
          done();
        },
      }),
    );
    // The first row group is written while most rows are still to come.
    expect(rowsSentAtFirstOutput).toBeGreaterThan(0);
    expect(rowsSentAtFirstOutput).toBeLessThan(total / 2);
    expect(outputBeforeLastInput).toBeGreaterThan(0);

    const bytes = Buffer.concat(out);
    const groups = parquetMetadata(arrayBuffer(bytes)).row_groups.map((g) => Number(g.num_rows));
    expect(groups.length).toBeGreaterThanOrEqual(4);
    // The last group may take up to one more 2,048-row vector.
    expect(Math.max(...groups)).toBeLessThanOrEqual(DEFAULT_ROW_GROUP_ROWS + 2048);
    expect(groups.reduce((a, b) => a + b, 0)).toBe(total);
    // Every row group left as its own chunk (plus the footer).
    expect(out.length).toBeGreaterThan(groups.length);
    const path = await toFile('stream.parquet', bytes);
    const [agg] = await query(
      `SELECT count(*)::INT AS n, min(timestamp)::VARCHAR AS first, max(epoch_us(timestamp))::VARCHAR AS last_us,
              count(DISTINCT message_id)::INT AS ids
       FROM read_parquet('${path}')`,
    );
    const last = JSON.parse(messageRow(total - 1)).timestamp as string;
    expect(agg).toEqual({
      n: total,
      first: '2025-09-03 10:00:00+00',
      last_us: String(micros(last.slice(0, 23) + 'Z') + BigInt(last.slice(23, 26))),
      ids: total,
    });
  }, 180_000); // 200k rows take a few seconds alone, several times that on a busy machine

  it('fails with the field named when a value does not fit its type', async () => {
    const bad = JSON.stringify({ ...ROWS[3], created_at: 'yesterday' });
    await expect(run(createParquetTransform(ALL), ndjsonOf([bad]))).rejects.toThrow(
      /field created_at: value "yesterday" is not a valid timestamp/,
    );
    const fraction = JSON.stringify({ ...ROWS[3], count: 1.5 });
    await expect(run(createParquetTransform(ALL), ndjsonOf([fraction]))).rejects.toThrow(FerryError);
  });

  it('rejects an unknown codec naming the accepted ones', () => {
    expect(() => createParquetTransform(ALL, { codec: 'LZ4' as never })).toThrow(
      /codec: unknown Parquet codec "LZ4" \(accepted: SNAPPY, ZSTD, UNCOMPRESSED\)/,
    );
  });
});

describe('partitioned parquet', () => {
  const ctx = context(messageFields);
  const at = (iso: string, i: number) => {
    const row = JSON.parse(messageRow(i));
    row.timestamp = iso;
    return JSON.stringify(row);
  };

  async function writePartitioned(root: string, lines: string[]) {
    const writer = createPartitionedParquet(ctx, {
      dateField: 'timestamp',
      input: 'ndjson',
      openFile(relativePath) {
        const path = join(root, relativePath);
        mkdirSync(dirname(path), { recursive: true });
        return createWriteStream(path);
      },
    });
    await pipeline(Readable.from(chunked(ndjsonOf(lines), [5, 333, 4096])), writer);
    return writer.files;
  }

  it('splits rows ordered by date into one Hive-style file per UTC date', async () => {
    const root = join(dir, 'hive');
    const lines: string[] = [];
    let i = 0;
    for (let k = 0; k < 60; k++)
      lines.push(at(`2025-09-01T${String(10 + (k % 10)).padStart(2, '0')}:00:00.5+00:00`, i++));
    for (let k = 0; k < 30; k++) lines.push(at('2025-09-02T08:00:00Z', i++));
    // 01:30 at +02:00 is still 2 September in UTC.
    lines.push(at('2025-09-03T01:30:00+02:00', i++));
    for (let k = 0; k < 10; k++) lines.push(at('2025-09-03T23:59:59.999999Z', i++));
    lines.push(at(null as never, i++));

    const files = await writePartitioned(root, lines);
    expect(files.map((f) => [f.path, f.rows])).toEqual([
      ['dataset=messages/date=2025-09-01/part-0.parquet', 60],
      ['dataset=messages/date=2025-09-02/part-0.parquet', 31],
      ['dataset=messages/date=2025-09-03/part-0.parquet', 10],
      [`dataset=messages/date=${HIVE_NULL_PARTITION}/part-0.parquet`, 1],
    ]);
    for (const f of files) expect(readFileSync(join(root, f.path)).length).toBe(f.bytes);
    expect(readdirSync(join(root, 'dataset=messages')).sort()).toEqual([
      'date=2025-09-01',
      'date=2025-09-02',
      'date=2025-09-03',
      `date=${HIVE_NULL_PARTITION}`,
    ]);

    const counts = await query(
      `SELECT dataset, date::VARCHAR AS date, count(*)::INT AS n,
              bool_and(timestamp IS NULL OR (timestamp AT TIME ZONE 'UTC')::DATE = date) AS consistent
       FROM read_parquet('${root}/**/*.parquet', hive_partitioning = true)
       GROUP BY ALL ORDER BY date NULLS LAST`,
    );
    expect(counts).toEqual([
      { dataset: 'messages', date: '2025-09-01', n: 60, consistent: true },
      { dataset: 'messages', date: '2025-09-02', n: 31, consistent: true },
      { dataset: 'messages', date: '2025-09-03', n: 10, consistent: true },
      { dataset: 'messages', date: null, n: 1, consistent: true },
    ]);
    const [types] = await query(
      `SELECT typeof(date) AS date, typeof(timestamp) AS ts FROM read_parquet('${root}/**/*.parquet', hive_partitioning = true) LIMIT 1`,
    );
    expect(types).toEqual({ date: 'DATE', ts: 'TIMESTAMP WITH TIME ZONE' });
  });

  it('writes a further part when a date comes back, losing no row', async () => {
    const root = join(dir, 'unordered');
    const lines = [
      at('2025-09-01T10:00:00Z', 0),
      at('2025-09-02T10:00:00Z', 1),
      at('2025-09-01T11:00:00Z', 2),
      at('2025-09-01T12:00:00Z', 3),
    ];
    const files = await writePartitioned(root, lines);
    expect(files.map((f) => [f.path, f.rows])).toEqual([
      ['dataset=messages/date=2025-09-01/part-0.parquet', 1],
      ['dataset=messages/date=2025-09-02/part-0.parquet', 1],
      ['dataset=messages/date=2025-09-01/part-1.parquet', 2],
    ]);
    const [agg] = await query(
      `SELECT count(*)::INT AS n FROM read_parquet('${root}/**/*.parquet', hive_partitioning = true) WHERE date = DATE '2025-09-01'`,
    );
    expect(agg).toEqual({ n: 3 });
  });

  it('fails when a partition file fails, naming the cause', async () => {
    const writer = createPartitionedParquet(ctx, {
      dateField: 'timestamp',
      input: 'ndjson',
      openFile: () =>
        new Writable({
          write(_chunk, _enc, done) {
            done(new Error('disk full'));
          },
        }),
    });
    await expect(
      pipeline(Readable.from([ndjsonOf([at('2025-09-01T10:00:00Z', 0)])]), writer),
    ).rejects.toThrow('disk full');
  });

  it('writes no files for no rows', async () => {
    expect(await writePartitioned(join(dir, 'none'), [])).toEqual([]);
  });

  it('refuses a partition field that is not a timestamp or date', () => {
    expect(() =>
      createPartitionedParquet(ctx, { dateField: 'sender_type', openFile: () => new Writable() }),
    ).toThrow(/dateField: sender_type is not a timestamp or date field of messages \(accepted: timestamp\)/);
  });
});
