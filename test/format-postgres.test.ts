/**
 * The writers fed by the real thing: NDJSON streamed out of PostgreSQL (and PGlite)
 * with COPY, rendered by json_build_object, hostile values included.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DuckDBInstance } from '@duckdb/node-api';
import { validateXML } from 'xmllint-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json } from '../src/format/json-writer.ts';
import { createParquetTransform } from '../src/format/parquet-writer.ts';
import { xml, xsdFor } from '../src/format/xml-writer.ts';
import { COPY_OPTIONS } from '../src/collect/render-sql.ts';
import { allTypeFields, context, uuid } from './support/fixtures/format.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const ctx = context(allTypeFields, { dataset: 'kitchen_sink' });
const TITLE = 'Fish & chips <b>"q"</b> \'s\' \u0001bell\r\nnext 😀 注文';

const VALUES = `(VALUES
  (1, '${uuid(1)}'::uuid, E'Fish & chips <b>"q"</b> ''s'' \\x01bell\\r\\nnext 😀 注文', 12345678901234567::bigint,
   0.1::float8, true, '2025-09-03 10:00:00.123456+00'::timestamptz, '2025-09-03'::date,
   '{"plan": "pro", "big": 98765432109876543, "list": [1, 2.5, null]}'::jsonb,
   ARRAY['vip', NULL, 'ümlaut']::text[], ARRAY['${uuid(2)}']::uuid[], ARRAY[0.5, NULL, -3]::float8[]),
  (2, '${uuid(3)}'::uuid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '${uuid(4)}'::uuid, '', -9007199254740991, 'NaN', false, 'infinity', '1969-12-31',
   '"a JSON string"', '{}', '{}', ARRAY['Infinity']::float8[])
) AS v(k, id, title, count, score, active, created_at, day, attributes, tags, related_ids, weights)`;

const PROJECTION = `json_build_object(${allTypeFields.map((f) => `'${f.name}', ${f.name}`).join(', ')})::text`;

async function collect(source: Readable, writer: Transform): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(source, writer, async (stream: AsyncIterable<Buffer>) => {
    for await (const chunk of stream) out.push(chunk);
  });
  return Buffer.concat(out);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-format-pg-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

for (const dialect of DIALECTS) {
  describe(`writers on NDJSON from ${dialect}`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect, { migrate: false });
    });
    afterAll(() => t.drop());

    const copy = () =>
      t.database.copyOut({
        projection: PROJECTION,
        from: `FROM ${VALUES} WHERE true{{KEY_RANGE}}`,
        key: ['k'],
        options: COPY_OPTIONS.ndjson,
      });

    it('json: one valid document with every value', async () => {
      const doc = JSON.parse((await collect(copy(), json.create(ctx))).toString('utf8'));
      expect(doc.data).toHaveLength(3);
      expect(doc.data[0].title).toBe(TITLE);
      expect(doc.data[1].title).toBeNull();
      expect(doc.data[2].score).toBe('NaN');
    });

    it('xml: validates against the XSD, control characters removed, infinity omitted', async () => {
      const out = (await collect(copy(), xml.create(ctx))).toString('utf8');
      const result = await validateXML({
        xml: [{ fileName: 'export.xml', contents: out }],
        schema: [{ fileName: 'export.xsd', contents: xsdFor(ctx) }],
      });
      expect(result.errors).toEqual([]);
      expect(out).toContain(
        '<title>Fish &amp; chips &lt;b&gt;"q"&lt;/b&gt; \'s\' bell&#13;\nnext 😀 注文</title>',
      );
      expect(out).toContain('<count>12345678901234567</count>');
      expect(out).toContain('<created_at>2025-09-03T10:00:00.123456');
      expect(out).toContain('"big":98765432109876543');
      expect(out.match(/<created_at>/g)).toHaveLength(1);
    });

    it('parquet: DuckDB reads typed, exact values', async () => {
      const path = join(dir, `${dialect}.parquet`);
      await writeFile(path, await collect(copy(), createParquetTransform(ctx)));
      const duck = await DuckDBInstance.create(':memory:');
      const db = await duck.connect();
      try {
        const rows = (
          await db.runAndReadAll(
            `SELECT title, count::VARCHAR AS count, score, epoch_us(created_at)::VARCHAR AS us, day::VARCHAR AS day,
                    attributes::VARCHAR AS attributes, tags, related_ids, weights
             FROM read_parquet('${path}')`,
          )
        ).getRowObjectsJson();
        expect(rows[0]).toEqual({
          title: TITLE,
          count: '12345678901234567',
          score: 0.1,
          us: String(BigInt(Date.UTC(2025, 8, 3, 10)) * 1000n + 123456n),
          day: '2025-09-03',
          attributes: '{"big":98765432109876543,"list":[1,2.5,null],"plan":"pro"}',
          tags: ['vip', null, 'ümlaut'],
          related_ids: [uuid(2)],
          weights: [0.5, null, -3],
        });
        expect(Object.values(rows[1]!).every((v) => v === null)).toBe(true);
        expect(rows[2]).toMatchObject({
          title: '',
          count: '-9007199254740991',
          score: 'NaN',
          us: null,
          day: '1969-12-31',
          attributes: '"a JSON string"',
          tags: [],
          weights: ['Infinity'],
        });
      } finally {
        db.closeSync();
        duck.closeSync();
      }
    });
  });
}
