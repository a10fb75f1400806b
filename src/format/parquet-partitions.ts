import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../domain/ferry-error.ts';
import { type ParquetRun, ParquetSession, type ParquetSpec } from './duckdb-parquet.ts';
import { isBlank } from './line-splitter.ts';
import { type ParquetOptions, parquet, parquetSpec } from './parquet-writer.ts';
import type { WriterContext } from './types.ts';
import { isInfinite, parseDateDays, parseRow, parseTimestampMicros, utcDateOfMicros } from './values.ts';

/** Hive's name for the partition of rows whose partition value is null. */
export const HIVE_NULL_PARTITION = '__HIVE_DEFAULT_PARTITION__';

export interface PartitionedParquetOptions extends ParquetOptions {
  /** A `timestamp` or `date` field of `ctx.fields`; a timestamp is partitioned by its UTC date. */
  readonly dateField: string;
  /**
   * Opens the file at a relative path (`dataset=<name>/date=YYYY-MM-DD/part-0.parquet`).
   * Each file is written to the end and `end()`ed before the next one is opened.
   */
  readonly openFile: (relativePath: string) => Writable;
}

/** One file a partitioned export wrote. */
export interface ParquetPartitionFile {
  readonly path: string;
  /** `YYYY-MM-DD`, or null for the rows whose date is null. */
  readonly date: string | null;
  readonly rows: number;
  readonly bytes: number;
}

/** The folder that holds every partition of a dataset (Hive layout): `dataset=<name>`. */
export function datasetFolder(dataset: string): string {
  return `dataset=${encodeURIComponent(dataset)}`;
}

/** The relative path of a partition file (Hive layout). */
export function partitionPath(dataset: string, date: string | null, part: number): string {
  return `${datasetFolder(dataset)}/date=${date ?? HIVE_NULL_PARTITION}/part-${part}.parquet`;
}

/**
 * Complete records of a chunk: `buffer` holds them (and possibly blank lines between
 * them), record `r` spans `starts[r]`–`ends[r]`, and `values[r]` is its partition
 * field's value (text or null for CSV, the JSON value for NDJSON).
 */
interface Records {
  buffer: Buffer;
  starts: number[];
  ends: number[];
  values: unknown[];
}

const QUOTE = 0x22;
const COMMA = 0x2c;
const NEWLINE = 0x0a;
const CR = 0x0d;

/**
 * Cuts a byte stream into complete records, keeping an incomplete tail for the next
 * chunk; each subclass says where a record ends and what its partition value is.
 */
abstract class RecordCutter {
  #pending: Buffer | undefined;

  push(chunk: Buffer): Records {
    return this.#scan(this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk, false);
  }

  end(): Records {
    return this.#scan(this.#pending ?? Buffer.alloc(0), true);
  }

  /** The record at `start`: where it ends and its value (`skip`: not a data record); undefined if incomplete. */
  protected abstract next(
    buffer: Buffer,
    start: number,
    last: boolean,
  ): { end: number; value: unknown; skip?: boolean } | undefined;

  #scan(buffer: Buffer, last: boolean): Records {
    const records: Records = { buffer, starts: [], ends: [], values: [] };
    let at = 0;
    while (at < buffer.length) {
      const record = this.next(buffer, at, last);
      if (!record) break;
      if (!record.skip) {
        records.starts.push(at);
        records.ends.push(record.end);
        records.values.push(record.value);
      }
      at = record.end;
    }
    // Copied: the caller may reuse the chunk's memory.
    this.#pending = at < buffer.length ? Buffer.from(buffer.subarray(at)) : undefined;
    return records;
  }
}

/**
 * Cuts PostgreSQL CSV into records (a quoted cell may hold newlines) and reads one
 * cell of each: text, `''` for a quoted empty cell, null for an empty unquoted one.
 * The first record is the header row; it is kept in `header`, not returned.
 */
class CsvRecords extends RecordCutter {
  header: Buffer | undefined;
  readonly #column: number;

  constructor(column: number) {
    super();
    this.#column = column;
  }

  protected next(buffer: Buffer, start: number, last: boolean) {
    const record = this.#record(buffer, start, last);
    if (!record || this.header) return record;
    this.header = Buffer.from(buffer.subarray(start, record.end));
    return { ...record, skip: true };
  }

  /** The record starting at `start`: where it ends and its partition cell; undefined if incomplete. */
  #record(buf: Buffer, start: number, last: boolean): { end: number; value: string | null } | undefined {
    let value: string | null = null;
    let i = start;
    let nl = -1; // the next newline at or after i, found again once i has passed it
    for (let cell = 0; ; cell++) {
      let after: number; // the byte after the cell
      if (buf[i] === QUOTE) {
        let q = buf.indexOf(QUOTE, i + 1);
        while (q >= 0 && buf[q + 1] === QUOTE) q = buf.indexOf(QUOTE, q + 2);
        if (q < 0 || (q + 1 >= buf.length && !last)) return undefined;
        if (cell === this.#column) value = buf.toString('utf8', i + 1, q).replaceAll('""', '"');
        after = q + 1;
      } else {
        if (nl < i) nl = buf.indexOf(NEWLINE, i);
        const comma = buf.indexOf(COMMA, i);
        after = comma >= 0 && (nl < 0 || comma < nl) ? comma : nl;
        if (after < 0) {
          if (!last) return undefined;
          after = buf.length;
        }
        const end = after > i && buf[after - 1] === CR && after === nl ? after - 1 : after;
        if (cell === this.#column && end > i) value = buf.toString('utf8', i, end);
      }
      if (after >= buf.length) return last ? { end: buf.length, value } : undefined;
      if (buf[after] === COMMA) {
        i = after + 1;
        continue;
      }
      if (buf[after] === NEWLINE) return { end: after + 1, value };
      if (buf[after] === CR && buf[after + 1] === NEWLINE) return { end: after + 2, value };
      throw new FerryError('format_error', 'the CSV input has a quoted cell followed by more text');
    }
  }
}

/** Cuts NDJSON into lines and reads one field of each; blank lines are skipped. */
class NdjsonRecords extends RecordCutter {
  readonly #field: string;

  constructor(field: string) {
    super();
    this.#field = field;
  }

  protected next(buffer: Buffer, start: number, last: boolean) {
    let end = buffer.indexOf(NEWLINE, start) + 1;
    if (end === 0) {
      if (!last) return undefined;
      end = buffer.length;
    }
    const line = buffer.toString('utf8', start, end);
    if (isBlank(line)) return { end, value: null, skip: true };
    return { end, value: parseRow(line)[this.#field] };
  }
}

interface OpenPartition {
  readonly date: string | null;
  readonly path: string;
  readonly run: ParquetRun;
  /** The Parquet bytes going into the partition's file; settles once the file has them all. */
  readonly written: Promise<void>;
  rows: number;
  bytes: number;
}

/**
 * Hive-style date partitioning: takes the database's rows ordered by `dateField` (CSV
 * with a header row, as the `parquet` writer asks the database for, or NDJSON with
 * `input: 'ndjson'`) and writes one Parquet file per date,
 * `dataset=<name>/date=YYYY-MM-DD/part-0.parquet`, through `openFile`. Each file is
 * written by DuckDB as for a single export (see `ParquetSession`; one DuckDB session
 * serves all the files in turn). Only one file is open at a time and each streams as
 * its row groups complete, so memory is bounded as for a single file. A date that comes
 * back after another one (input not ordered) gets a further file, `part-1.parquet`, so
 * no row is lost. The date column stays in the files; readers add `dataset` and `date`
 * from the path (`read_parquet(..., hive_partitioning = true)`). No rows → no files.
 *
 * `files` lists the finished files once the stream has emitted `finish`.
 */
export class PartitionedParquetWriter extends Writable {
  readonly #ctx: WriterContext;
  readonly #options: PartitionedParquetOptions;
  readonly #spec: ParquetSpec;
  readonly #dateOf: (value: unknown) => string | null;
  readonly #records: CsvRecords | NdjsonRecords;
  readonly #parts = new Map<string | null, number>();
  readonly #files: ParquetPartitionFile[] = [];
  #session: Promise<ParquetSession> | undefined;
  #current: OpenPartition | undefined;

  constructor(ctx: WriterContext, options: PartitionedParquetOptions) {
    super();
    const index = ctx.fields.findIndex((f) => f.name === options.dateField);
    const field = ctx.fields[index];
    if (!field || (field.type !== 'timestamp' && field.type !== 'date')) {
      const accepted = ctx.fields
        .filter((f) => f.type === 'timestamp' || f.type === 'date')
        .map((f) => f.name);
      throw new FerryError(
        'invalid_parameter',
        `dateField: ${options.dateField} is not a timestamp or date field of ${ctx.dataset} (accepted: ${accepted.join(', ')})`,
        { parameter: 'dateField', accepted },
      );
    }
    this.#ctx = ctx;
    this.#options = options;
    this.#spec = parquetSpec(ctx, { ...options, input: options.input ?? parquet.input });
    this.#dateOf = field.type === 'timestamp' ? timestampDate(field.name) : dateDate(field.name);
    this.#records = this.#spec.input === 'csv' ? new CsvRecords(index) : new NdjsonRecords(field.name);
  }

  get files(): readonly ParquetPartitionFile[] {
    return this.#files;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#add(() => this.#records.push(chunk)).then(() => done(), done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.#add(() => this.#records.end())
      .then(() => this.#close())
      .then(() => this.#closeSession())
      .then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const current = this.#current;
    this.#current = undefined;
    (async () => {
      await current?.run.abort();
      await this.#closeSession();
    })().then(
      () => done(err),
      (closeErr: Error) => done(err ?? closeErr),
    );
  }

  async #closeSession(): Promise<void> {
    const session = await this.#session?.catch(() => undefined);
    this.#session = undefined;
    await session?.close();
  }

  /** Sends each run of records with one date to that date's file, opening files as dates change. */
  async #add(next: () => Records): Promise<void> {
    const { buffer, starts, ends, values } = next();
    let from = 0; // first byte not yet sent
    for (let r = 0; r < values.length; r++) {
      const date = this.#dateOf(values[r]);
      if (!this.#current || this.#current.date !== date) {
        if (this.#current && starts[r]! > from)
          await this.#current.run.write(buffer.subarray(from, starts[r]));
        from = starts[r]!;
        await this.#close();
        await this.#open(date);
      }
      this.#current!.rows++;
    }
    const to = ends.at(-1) ?? 0;
    if (this.#current && to > from) await this.#current.run.write(buffer.subarray(from, to));
  }

  async #open(date: string | null): Promise<void> {
    this.#session ??= ParquetSession.open(this.#options.spool ? { spool: true } : {});
    const session = await this.#session;
    const part = this.#parts.get(date) ?? 0;
    this.#parts.set(date, part + 1);
    const path = partitionPath(this.#ctx.dataset, date, part);
    const file = this.#options.openFile(path);
    // A failing file fails the whole write with its own error.
    file.on('error', (err) => this.destroy(err));
    const run = session.run(this.#spec);
    const current: OpenPartition = {
      date,
      path,
      run,
      written: pipeline(run.output, file),
      rows: 0,
      bytes: 0,
    };
    current.written.catch(() => {});
    run.output.on('data', (bytes: Buffer) => {
      current.bytes += bytes.length;
    });
    this.#current = current;
    const header = this.#records instanceof CsvRecords ? this.#records.header : undefined;
    if (header) await run.write(header);
  }

  async #close(): Promise<void> {
    const current = this.#current;
    if (!current) return;
    await current.run.end();
    await current.written;
    this.#current = undefined;
    this.#files.push({ path: current.path, date: current.date, rows: current.rows, bytes: current.bytes });
  }
}

/** Hive date partitioning of the database's rows into Parquet files; see `PartitionedParquetWriter`. */
export function createPartitionedParquet(
  ctx: WriterContext,
  options: PartitionedParquetOptions,
): PartitionedParquetWriter {
  return new PartitionedParquetWriter(ctx, options);
}

/** Null, PostgreSQL's infinity, and the empty text `to_char` renders it as: no date. */
function noDate(value: unknown): boolean {
  return (
    value === null ||
    value === undefined ||
    (typeof value === 'string' && (value === '' || isInfinite(value)))
  );
}

function timestampDate(name: string): (value: unknown) => string | null {
  return (value) => {
    if (noDate(value)) return null;
    const micros = typeof value === 'string' ? parseTimestampMicros(value) : undefined;
    if (micros === undefined)
      throw new FerryError('format_error', `field ${name}: ${JSON.stringify(value)} is not a timestamp`);
    return utcDateOfMicros(micros);
  };
}

function dateDate(name: string): (value: unknown) => string | null {
  return (value) => {
    if (noDate(value)) return null;
    if (typeof value !== 'string' || parseDateDays(value) === undefined) {
      throw new FerryError('format_error', `field ${name}: ${JSON.stringify(value)} is not a date`);
    }
    return value.slice(0, 10);
  };
}
