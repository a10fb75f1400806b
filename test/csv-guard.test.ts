import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { literal } from '../src/db/database.ts';
import { csvGuard, csvGuardJsonSql, csvGuardSql } from '../src/transform/csv-guard.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

/** Text cell → guarded cell. */
const CASES: [string, string][] = [
  ['=1+1', "'=1+1"],
  ['=HYPERLINK("http://evil.example","x")', `'=HYPERLINK("http://evil.example","x")`],
  ['+1', "'+1"],
  // Text that looks like a negative number is guarded too; numeric cells never reach the guard.
  ['-5', "'-5"],
  ['@SUM(A1:A2)', "'@SUM(A1:A2)"],
  ['\tcmd', "'\tcmd"],
  ['\rcmd', "'\rcmd"],
  ['＝1+1', "'＝1+1"],
  ['＋1', "'＋1"],
  ['－1', "'－1"],
  ['＠SUM(A1)', "'＠SUM(A1)"],
  ['plain text', 'plain text'],
  ['', ''],
  ["'already quoted", "'already quoted"],
  [' =1+1', ' =1+1'],
  ['a=b', 'a=b'],
  ['5-3', '5-3'],
  ['\ncmd', '\ncmd'],
  ['😀=1', '😀=1'],
];

describe('csv guard (JavaScript)', () => {
  it('neutralises formula triggers and leaves other text alone', () => {
    for (const [input, expected] of CASES) expect(csvGuard(input), JSON.stringify(input)).toBe(expected);
  });

  it('guards a leading NUL, which only JavaScript strings can hold', () => {
    expect(csvGuard('\0=1')).toBe("'\0=1");
  });
});

for (const dialect of DIALECTS) {
  describe(`csv guard in SQL on ${dialect}`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(() => t.drop());

    it('gives the same cells as the JavaScript twin', async () => {
      const values = CASES.map(([input], n) => `(${n}, ${literal(input)})`).join(', ');
      const { rows } = await sql
        .raw<{ n: number; out: string }>(
          `SELECT v.n, ${csvGuardSql('v.x')} AS out FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
        )
        .execute(t.database.db);
      expect(rows.map((r) => r.out)).toEqual(CASES.map(([input]) => csvGuard(input)));
    });

    it('is inlined into the query, not called per row', async () => {
      // A STRICT SQL function is never inlined: the plan would show the call.
      const { rows } = await sql
        .raw<Record<string, string>>(
          `EXPLAIN (VERBOSE) SELECT ${csvGuardSql('v.x')} FROM (VALUES ('=1'), ('x')) AS v(x)`,
        )
        .execute(t.database.db);
      const plan = rows.map((r) => Object.values(r)[0]).join('\n');
      expect(plan).toContain('ascii');
      expect(plan).not.toContain('ferry_csv_guard');
    });

    it('guards a computed value with the same cells, read once and inlined', async () => {
      // Around anything but a column the guard names its value once, so PostgreSQL inlines it
      // even when the value is expensive (a scrubber's result) instead of calling it per cell.
      const computed = "(v.x || '')";
      expect(csvGuardSql(computed)).toContain('ferry_csv_guard_computed');
      const values = CASES.map(([input], n) => `(${n}, ${literal(input)})`).join(', ');
      const { rows } = await sql
        .raw<{ n: number; out: string }>(
          `SELECT v.n, ${csvGuardSql(computed)} AS out FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
        )
        .execute(t.database.db);
      expect(rows.map((r) => r.out)).toEqual(CASES.map(([input]) => csvGuard(input)));
      const { rows: plan } = await sql
        .raw<Record<string, string>>(
          `EXPLAIN (VERBOSE) SELECT ${csvGuardSql('md5(v.x)')}, ${csvGuardJsonSql('jsonb_build_array(v.x)')} FROM (VALUES ('=1'), ('x')) AS v(x)`,
        )
        .execute(t.database.db);
      const text = plan.map((r) => Object.values(r)[0]).join('\n');
      expect(text).toContain('regexp_replace');
      expect(text).not.toContain('ferry_csv_guard');
      const { rows: nulls } = await sql
        .raw<{ a: string | null; b: string | null }>(
          `SELECT ${csvGuardSql('NULL::text')} AS a, ${csvGuardJsonSql('NULL::jsonb')} AS b`,
        )
        .execute(t.database.db);
      expect(nulls[0]).toEqual({ a: null, b: null });
    });

    /**
     * Guards each document (the first is `-5`) through `csvGuardJsonSql(expr)` over `v.x`, as
     * jsonb, json and text, and expects what the JavaScript guard gives for its text.
     */
    async function expectGuardedLikeJavaScript(documents: string[], expr: string): Promise<void> {
      for (const type of ['jsonb', 'json', 'text']) {
        const values = documents.map((d, n) => `(${n}, ${literal(d)}::${type})`).join(', ');
        const { rows } = await sql
          .raw<{ n: number; out: string; plain: string }>(
            `SELECT v.n, ${csvGuardJsonSql(expr)} AS out, v.x::text AS plain FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
          )
          .execute(t.database.db);
        expect(
          rows.map((r) => r.out),
          type,
        ).toEqual(rows.map((r) => csvGuard(r.plain)));
        expect(rows[0]!.out, type).toBe("'-5");
      }
    }

    it('guards computed JSON the same way, as jsonb, json or text', async () => {
      const documents = [
        '-5',
        '-0.25',
        '5',
        '"=1+1"',
        '"-1"',
        '{"a": "=1"}',
        '[-1, 2]',
        'null',
        'true',
        ' -5',
      ];
      const computed = `(CASE WHEN v.n >= 0 THEN v.x END)`;
      expect(csvGuardJsonSql(computed)).toContain('ferry_csv_guard_json_computed');
      await expectGuardedLikeJavaScript(documents, computed);
    });

    it('guards JSON text the same way, as jsonb, json or text', async () => {
      const documents = ['-5', '-0.25', '5', '"=1+1"', '{"a": "=1"}', '[-1, 2]', 'null', 'true'];
      await expectGuardedLikeJavaScript(documents, 'v.x');
      const { rows } = await sql
        .raw<{ out: string | null }>(`SELECT ${csvGuardJsonSql('NULL::jsonb')} AS out`)
        .execute(t.database.db);
      expect(rows[0]!.out).toBeNull();
    });

    it('keeps NULL as NULL and guards cells written by COPY', async () => {
      const { rows } = await sql
        .raw<{ out: string | null }>(`SELECT ${csvGuardSql('NULL')} AS out`)
        .execute(t.database.db);
      expect(rows[0]!.out).toBeNull();
      const out = t.database.copyOut({
        projection: `${csvGuardSql('v.x')} AS cell`,
        from: `FROM (VALUES (1, '=1+1'), (2, '-5'), (3, 'ok')) AS v(n, x) WHERE true{{KEY_RANGE}}`,
        key: ['v.n'],
        options: 'FORMAT csv',
        header: true,
      });
      const chunks: Buffer[] = [];
      for await (const chunk of out) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).toString('utf8')).toBe("cell\n'=1+1\n'-5\nok\n");
    });
  });
}
