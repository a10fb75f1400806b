/**
 * The Parquet writer on what the pipeline gives it: PostgreSQL's (and PGlite's) CSV,
 * rendered by Ferry's own cell SQL, converted by DuckDB and read back with hyparquet
 * (exact values) and DuckDB (column types). Also the runs' life cycle: spooling instead
 * of named pipes, cleanup after errors and aborts, and conversions waiting for a slot.
 */
import { createWriteStream, mkdirSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DuckDBInstance } from '@duckdb/node-api';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COPY_OPTIONS, csvCellSql } from '../src/collect/render-sql.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { MAX_ROW_BYTES } from '../src/format/duckdb-parquet.ts';
import { createPartitionedParquet } from '../src/format/parquet-partitions.ts';
import { createParquetTransform, parquet } from '../src/format/parquet-writer.ts';
import {
  allTypeFields,
  context,
  messageFields,
  messageRow,
  ndjsonOf,
  run,
  uuid,
} from './support/fixtures/format.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const ctx = context(allTypeFields, { dataset: 'kitchen_sink' });

/** Quotes, a comma, CR LF and LF, a tab, C0 control characters, an emoji and CJK. */
const TEXT = 'Fish & chips "q" \'s\', comma\r\nnext line\n\ttab \u0001\u001f bell 😀 注文';
const BIG = 9223372036854775807n; // int64 max, far beyond 2^53
const MICROS = BigInt(Date.UTC(2025, 8, 3, 10, 0, 0)) * 1000n + 123457n;

const VALUES = `(VALUES
  (1, '${uuid(1)}'::uuid, E'Fish & chips "q" ''s'', comma\\r\\nnext line\\n\\ttab \\x01\\x1f bell 😀 注文',
   ${BIG}::bigint, 0.1::float8, true, '2025-09-03 10:00:00.123457+00'::timestamptz, '2025-09-03'::date,
   '{"big": 98765432109876543, "s": "x\\"y\\n", "list": [1, 2.5, null]}'::jsonb,
   ARRAY['vip', NULL, 'ümlaut', 'a,b "c"', '', E'line\\nbreak']::text[], ARRAY['${uuid(2)}']::uuid[],
   ARRAY[0.5, NULL, -3, 'NaN', 'Infinity']::float8[]),
  (2, '${uuid(3)}'::uuid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '${uuid(4)}'::uuid, '', -9223372036854775808, 'NaN', false, 'infinity', '1969-12-31',
   '"a JSON string"', '{}', '{}', '{}')
) AS v(k, id, title, count, score, active, created_at, day, attributes, tags, related_ids, weights)`;

/** The CSV COPY the pipeline runs for a Parquet export: Ferry's cell SQL, a header row. */
function csvQuery(timezone: string, from = `FROM ${VALUES} WHERE true{{KEY_RANGE}}`) {
  return {
    projection: allTypeFields
      .map((f) => `${csvCellSql(f.name, f.type, timezone, false)} AS "${f.name}"`)
      .join(', '),
    from,
    key: ['k'],
    options: COPY_OPTIONS.csv,
    header: true,
  };
}

function arrayBuffer(bytes: Buffer): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** Rows as stored: timestamps as microseconds, dates as days, JSON as its text. */
async function exactRows(bytes: Buffer): Promise<Record<string, unknown>[]> {
  return (await parquetReadObjects({
    file: arrayBuffer(bytes),
    parsers: {
      timestampFromMicroseconds: (micros: bigint) => micros,
      dateFromDays: (days: number) => days,
      jsonFromBytes: (raw: Uint8Array) => new TextDecoder().decode(raw),
    },
  })) as Record<string, unknown>[];
}

async function collect(source: AsyncIterable<Buffer> | Readable, writer: Transform): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(source, writer, async (stream: AsyncIterable<Buffer>) => {
    for await (const chunk of stream) out.push(chunk);
  });
  return Buffer.concat(out);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-parquet-duckdb-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

for (const dialect of DIALECTS) {
  describe(`parquet from ${dialect}'s CSV`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect, { migrate: false });
    });
    afterAll(() => t.drop());

    it('declares CSV as its input', () => {
      expect(parquet.input).toBe('csv');
    });

    it('round-trips int64 beyond 2^53, microseconds, hostile text, lists and nulls exactly', async () => {
      const out = await collect(t.database.copyOut(csvQuery('UTC')), parquet.create(ctx));
      const rows = await exactRows(out);
      expect(rows).toHaveLength(3);
      const [full, nulls, specials] = rows as [
        Record<string, unknown>,
        Record<string, unknown>,
        Record<string, unknown>,
      ];
      expect(full).toMatchObject({
        id: uuid(1),
        title: TEXT,
        count: BIG,
        score: 0.1,
        active: true,
        created_at: MICROS,
        day: Date.UTC(2025, 8, 3) / 86_400_000,
        tags: ['vip', null, 'ümlaut', 'a,b "c"', '', 'line\nbreak'],
        related_ids: [uuid(2)],
      });
      expect(full['weights']).toEqual([0.5, null, -3, Number.NaN, Number.POSITIVE_INFINITY]);
      // The JSON keeps its big integer digit for digit.
      expect(full['attributes']).toMatch(/"big": ?98765432109876543\b/);
      const exact = (_key: string, value: unknown, context?: { source?: string }) =>
        Number.isInteger(value) && !Number.isSafeInteger(value) ? BigInt(context!.source!) : value;
      expect(JSON.parse(full['attributes'] as string, exact as never)).toEqual({
        big: 98765432109876543n,
        s: 'x"y\n',
        list: [1, 2.5, null],
      });
      expect(Object.entries(nulls).filter(([, v]) => v !== null && v !== undefined)).toEqual([
        ['id', uuid(3)],
      ]);
      expect(specials).toMatchObject({
        title: '', // an empty string stays one; only a missing value is null
        count: -(2n ** 63n),
        active: false,
        created_at: null, // infinity
        day: -1,
        attributes: '"a JSON string"',
        tags: [],
        related_ids: [],
        weights: [],
      });
      expect(Number.isNaN(specials['score'])).toBe(true);

      const metadata = parquetMetadata(arrayBuffer(out));
      const kv = Object.fromEntries((metadata.key_value_metadata ?? []).map((e) => [e.key, e.value]));
      expect(kv['ferry.dataset']).toBe('kitchen_sink');
      expect(JSON.parse(kv['ferry.export_metadata']!)).toEqual(ctx.metadata);
      expect(new Set(metadata.row_groups.flatMap((g) => g.columns.map((c) => c.meta_data?.codec)))).toEqual(
        new Set(['SNAPPY']),
      );
    });

    it('has the typed columns DuckDB expects', async () => {
      const path = join(dir, `${dialect}-types.parquet`);
      await writeFile(path, await collect(t.database.copyOut(csvQuery('UTC')), parquet.create(ctx)));
      const duck = await DuckDBInstance.create(':memory:');
      const db = await duck.connect();
      try {
        const described = (await db.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('${path}')`))
          .getRowObjectsJson()
          .map((r) => [r['column_name'], r['column_type']]);
        expect(Object.fromEntries(described)).toEqual({
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
        const [row] = (
          await db.runAndReadAll(
            `SELECT count::VARCHAR AS count, epoch_us(created_at)::VARCHAR AS us FROM read_parquet('${path}') LIMIT 1`,
          )
        ).getRowObjectsJson();
        expect(row).toEqual({ count: String(BIG), us: String(MICROS) });
      } finally {
        db.closeSync();
        duck.closeSync();
      }
    });

    it('stores the same instants whatever time zone the text was rendered in', async () => {
      // Row 3's infinite timestamp is left out: Ferry's SQL cannot render it with an offset.
      const finite = `FROM ${VALUES} WHERE k <> 3{{KEY_RANGE}}`;
      const utc = await exactRows(
        await collect(t.database.copyOut(csvQuery('UTC', finite)), parquet.create(ctx)),
      );
      const berlin = await exactRows(
        await collect(t.database.copyOut(csvQuery('Europe/Berlin', finite)), parquet.create(ctx)),
      );
      expect(berlin).toHaveLength(2);
      expect(berlin.map((r) => r['created_at'])).toEqual(utc.map((r) => r['created_at']));
      expect(berlin[0]!['created_at']).toBe(MICROS);
    });

    it('writes the same file through temporary files as through named pipes', async () => {
      const piped = await collect(t.database.copyOut(csvQuery('UTC')), parquet.create(ctx));
      const spooled = await collect(
        t.database.copyOut(csvQuery('UTC')),
        createParquetTransform(ctx, { input: 'csv', spool: true }),
      );
      expect(await exactRows(spooled)).toEqual(await exactRows(piped));
    });

    it('partitions the CSV by UTC date, quoted cells with newlines and commas before the date', async () => {
      const days = `(VALUES
        (1, '${uuid(11)}'::uuid, E'a,\\n"b"', '2025-09-01 23:30:00+00'::timestamptz),
        (2, '${uuid(12)}'::uuid, 'plain', '2025-09-01 23:59:59.999999+00'),
        (3, '${uuid(13)}'::uuid, E'x\\r\\ny', '2025-09-02 00:00:00+00'),
        (4, '${uuid(14)}'::uuid, NULL, '2025-09-03 12:00:00+00'),
        (5, '${uuid(15)}'::uuid, '', 'infinity'),
        (6, '${uuid(16)}'::uuid, 'z', NULL)
      ) AS d(k, id, title, created_at)`;
      const fields = allTypeFields.filter((f) => ['id', 'title', 'created_at'].includes(f.name));
      const query = {
        projection: fields
          .map((f) => `${csvCellSql(f.name, f.type, 'UTC', false)} AS "${f.name}"`)
          .join(', '),
        from: `FROM ${days} WHERE true{{KEY_RANGE}}`,
        key: ['k'],
        options: COPY_OPTIONS.csv,
        header: true,
      };
      const root = join(dir, `${dialect}-hive`);
      const writer = createPartitionedParquet(context(fields), {
        dateField: 'created_at',
        openFile(relativePath) {
          const path = join(root, relativePath);
          mkdirSync(dirname(path), { recursive: true });
          return createWriteStream(path);
        },
      });
      await pipeline(t.database.copyOut(query), writer);
      expect(writer.files.map((f) => [f.path, f.rows])).toEqual([
        ['dataset=messages/date=2025-09-01/part-0.parquet', 2],
        ['dataset=messages/date=2025-09-02/part-0.parquet', 1],
        ['dataset=messages/date=2025-09-03/part-0.parquet', 1],
        ['dataset=messages/date=__HIVE_DEFAULT_PARTITION__/part-0.parquet', 2],
      ]);
      const duck = await DuckDBInstance.create(':memory:');
      const db = await duck.connect();
      try {
        const rows = (
          await db.runAndReadAll(
            `SELECT date::VARCHAR AS date, title FROM read_parquet('${root}/**/*.parquet', hive_partitioning = true)
             ORDER BY id`,
          )
        ).getRowObjectsJson();
        expect(rows).toEqual([
          { date: '2025-09-01', title: 'a,\n"b"' },
          { date: '2025-09-01', title: 'plain' },
          { date: '2025-09-02', title: 'x\r\ny' },
          { date: '2025-09-03', title: null },
          { date: null, title: '' },
          { date: null, title: 'z' },
        ]);
      } finally {
        db.closeSync();
        duck.closeSync();
      }
    });
  });
}

describe('parquet conversions', () => {
  const messages = ndjsonOf(Array.from({ length: 5000 }, (_, i) => messageRow(i)));
  const messageCtx = context(messageFields);

  /** Runs `work` with os.tmpdir() pointing at a fresh folder, and returns what is left in it. */
  async function leftovers(work: () => Promise<void>): Promise<string[]> {
    const saved = process.env['TMPDIR'];
    const scratch = await mkdtemp(join(dir, 'tmp-'));
    process.env['TMPDIR'] = scratch;
    try {
      await work();
      return readdirSync(scratch);
    } finally {
      if (saved === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = saved;
    }
  }

  it('removes its temporary folder when a value fails, naming the field', async () => {
    const bad = messageRow(1).replace(/"tokens_used":\d+/, '"tokens_used":1.5');
    const left = await leftovers(async () => {
      const failed = run(createParquetTransform(messageCtx), Buffer.concat([messages, ndjsonOf([bad])]));
      await expect(failed).rejects.toThrow(FerryError);
      await expect(failed).rejects.toThrow(/field tokens_used: value "1.5" is not a valid integer/);
    });
    expect(left).toEqual([]);
  });

  it('removes its temporary folder when destroyed mid-stream or right after it started', async () => {
    const left = await leftovers(async () => {
      // [writes before the destroy, milliseconds waited after them, spool to files]
      const cases = [
        [1, 0, false],
        [1, 20, false],
        [3, 60, false],
        [1, 0, true],
        [3, 60, true],
      ] as const;
      for (const [writes, wait, spool] of cases) {
        const writer = createParquetTransform(messageCtx, { spool });
        const closed = new Promise((resolve) => writer.on('close', resolve));
        writer.on('error', () => {});
        writer.resume();
        for (let i = 0; i < writes; i++) writer.write(messages.subarray(0, 64 * 1024 * (i + 1)));
        await new Promise((resolve) => setTimeout(resolve, wait));
        writer.destroy(new Error('stop'));
        // 'close' comes once DuckDB has let go and the folder is gone.
        await closed;
      }
    });
    expect(left).toEqual([]);
    // Their slots were given back: conversions still run, more of them than run at once.
    const outs = await Promise.all([1, 2, 3, 4].map(() => run(createParquetTransform(messageCtx), messages)));
    for (const out of outs) expect(Number(parquetMetadata(arrayBuffer(out)).num_rows)).toBe(5000);
  });

  it('takes rows up to MAX_ROW_BYTES and names the limit above it', async () => {
    const fields = allTypeFields.filter((f) => ['id', 'title'].includes(f.name));
    const csv = (text: string) => Buffer.from(`id,title\n${uuid(1)},"${text}"\n${uuid(2)},short\n`);
    const big = 'x'.repeat(MAX_ROW_BYTES - 1000);
    const out = await run(parquet.create(context(fields)), csv(big));
    expect((await exactRows(out)).map((r) => r['title'])).toEqual([big, 'short']);
    await expect(run(parquet.create(context(fields)), csv(`${big}${'y'.repeat(2000)}`))).rejects.toThrow(
      /the CSV input: CSV Error on Line: 2: Maximum line size of \d+ bytes exceeded/,
    );
  });

  it('fails instead of writing fewer rows than the input has', async () => {
    // NDJSON is no CSV: DuckDB would read it as one header and no rows.
    await expect(run(parquet.create(messageCtx), messages)).rejects.toThrow(
      /the Parquet file has 0 rows but its CSV input has \d+/,
    );
  });
});
