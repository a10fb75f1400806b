/**
 * The ceiling every export benchmark is measured against: what a database administrator would
 * run instead of Ferry, a raw dump of the same rows with psql:
 *
 *   \copy (select * from <table> where tenant_id = '…') to <file> csv header
 *
 * No projection, no rendering, no order: the cheapest way to get the rows out of PostgreSQL.
 */
import { execFileSync } from 'node:child_process';
import { REFERENCE_TABLES } from '../src/datamap/reference-tables.ts';

export const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export function seconds(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Runs psql statements with `search_path` set to the schema; returns the seconds they took. */
export function psqlSeconds(schema: string, statement: string): number {
  return seconds(() => {
    execFileSync('psql', [
      PG_URL,
      '-v',
      'ON_ERROR_STOP=1',
      '-q',
      '-c',
      `SET search_path = ${schema}`,
      '-c',
      statement,
    ]);
  });
}

/** Seconds of `\copy (select * from <table> where tenant_id = …) to <file> csv header`. */
export function rawDumpSeconds(schema: string, tenant: string, table: string, file: string): number {
  return psqlSeconds(
    schema,
    `\\copy (select * from ${table} where tenant_id = '${tenant}') to '${file}' csv header`,
  );
}

/** The data map's tables that hold tenant rows (every table a company package reads). */
export const TENANT_TABLES: readonly string[] = Object.keys(REFERENCE_TABLES).filter((t) => t !== 'tenants');

/** Seconds of the raw dumps of several tables, one after the other (their sum). */
export function rawDumpsSeconds(
  schema: string,
  tenant: string,
  tables: readonly string[],
  file: string,
): number {
  return tables.reduce((sum, table) => sum + rawDumpSeconds(schema, tenant, table, file), 0);
}
