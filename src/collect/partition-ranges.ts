import { sql } from 'kysely';
import { type CopyQuery, type Database, type KeyRange, literal, rangeFrom } from '../db/database.ts';

/** Sampled keys aimed for: enough for even partitions, few enough to read in a moment. */
const SAMPLE_TARGET = 20_000;

/**
 * Splits a dataset query into at most `parts` consecutive key ranges that together hold every
 * row exactly once: `(-∞, b1]`, `(b1, b2]`, …, `(bn, +∞)`. The boundaries are quantiles of a
 * block sample of the main table (`TABLESAMPLE SYSTEM`, filtered like the export), so the
 * ranges hold about as many rows each; an uneven sample only makes them uneven, never wrong.
 * Returns one unbounded range when the query's FROM does not start with its main table
 * (`FROM <table> t`) or the sample is too small to split.
 */
export async function planKeyRanges(
  database: Pick<Database, 'db'>,
  query: CopyQuery,
  source: string,
  estimatedRows: number,
  parts: number,
): Promise<KeyRange[]> {
  const main = `FROM ${source} t`;
  if (parts < 2 || estimatedRows < parts || !query.from.startsWith(`${main} `)) return [{}];
  const percent = Math.min(100, (SAMPLE_TARGET / estimatedRows) * 100);
  const sampled: CopyQuery = {
    ...query,
    from: `FROM ${source} t TABLESAMPLE SYSTEM (${percent.toFixed(6)})${query.from.slice(main.length)}`,
  };
  const keyText = query.key.map((k) => `(${k})::text`).join(', ');
  const result = await sql<{ key: (string | null)[] }>`${sql.raw(
    `SELECT ARRAY[${keyText}] AS key ${rangeFrom(sampled)} ORDER BY ${query.key.join(', ')}`,
  )}`.execute(database.db);
  const keys = result.rows.map((r) => r.key);
  // A NULL in a key compares as unknown: a range bounded by it would lose rows.
  if (keys.some((key) => key.some((v) => v === null))) return [{}];
  // Fewer than a few sampled rows per part cannot place boundaries sensibly.
  const count = Math.min(parts, Math.floor(keys.length / 4));
  if (count < 2) return [{}];
  const bounds: string[] = [];
  for (let i = 1; i < count; i++) {
    const key = keys[Math.floor((i * keys.length) / count)]!;
    const bound = key.map((v) => literal(v)).join(', ');
    if (bounds.at(-1) !== bound) bounds.push(bound);
  }
  return [
    { through: bounds[0]! },
    ...bounds.slice(1).map((through, i) => ({ after: bounds[i]!, through })),
    { after: bounds.at(-1)! },
  ];
}
