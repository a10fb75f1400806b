import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CopyQuery, literal, rangeFrom } from '../src/db/database.ts';
import { createTestDatabase, type TestDatabase } from './support/databases.ts';

const TEXTS = ["a'b", 'a\\b', "a\\'b", 'a,b', "'", '\\', 'é😀', 'plain'];

describe('key ranges', () => {
  it('bound the first key column alone as well, so the planner can estimate the range', () => {
    const query: CopyQuery = {
      projection: 't.id',
      from: 'FROM messages t WHERE t.tenant_id = 1{{KEY_RANGE}}',
      key: ['t.created_at', 't.id'],
      options: 'FORMAT csv',
    };
    const from = rangeFrom(query, { after: `'2026-01-01', 'a'`, through: `E'x\\\\''', 'b'` });
    expect(from).toContain(`AND (t.created_at, t.id) > ('2026-01-01', 'a') AND t.created_at >= '2026-01-01'`);
    expect(from).toContain(`AND t.created_at <= E'x\\\\'''`);
    // A key of one column needs no second bound.
    expect(rangeFrom({ ...query, key: ['t.id'] }, { after: `'a'` })).toBe(
      `FROM messages t WHERE t.tenant_id = 1 AND (t.id) > ('a')`,
    );
  });

  describe('on a database', () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase('pglite');
    });
    afterAll(() => t.drop());

    it('walks text keys with quotes and backslashes in ranges: every row once, in order', async () => {
      const values = TEXTS.flatMap((text, i) => [0, 1].map((n) => `(${literal(text)}, ${n}, ${i})`)).join(
        ', ',
      );
      const query: CopyQuery = {
        projection: 'v.k, v.n',
        from: `FROM (VALUES ${values}) AS v(k, n, i) WHERE true{{KEY_RANGE}}`,
        key: ['v.k', 'v.n'],
        options: 'FORMAT csv',
      };
      const all = await sql
        .raw<{ k: string; n: number }>(`SELECT v.k, v.n ${rangeFrom(query)} ORDER BY v.k, v.n`)
        .execute(t.database.db);
      const seen: string[] = [];
      let after: string | null = null;
      for (;;) {
        const page: { rows: { k: string; n: number }[] } = await sql
          .raw<{ k: string; n: number }>(
            `SELECT v.k, v.n ${rangeFrom(query, { after })} ORDER BY v.k, v.n LIMIT 3`,
          )
          .execute(t.database.db);
        if (page.rows.length === 0) break;
        const last = page.rows.at(-1)!;
        // The next page: after the last row, and through a bound that is itself a tricky text.
        const through = all.rows.at(-1)!;
        const bounded = await sql
          .raw<{ k: string; n: number }>(
            `SELECT v.k, v.n ${rangeFrom(query, { after, through: `${literal(through.k)}, ${through.n}` })} ORDER BY v.k, v.n LIMIT 3`,
          )
          .execute(t.database.db);
        expect(bounded.rows).toEqual(page.rows);
        seen.push(...page.rows.map((r) => `${r.k}/${r.n}`));
        after = `${literal(last.k)}, ${last.n}`;
      }
      expect(seen).toEqual(all.rows.map((r) => `${r.k}/${r.n}`));
      expect(seen).toHaveLength(TEXTS.length * 2);
    });
  });
});
