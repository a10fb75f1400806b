import { once } from 'node:events';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { FerryError } from '../domain/ferry-error.ts';
import { isBlank, LineSplitter } from './line-splitter.ts';
import { ParquetEncoder, type ParquetOptions } from './parquet-writer.ts';
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
 * Hive-style date partitioning: takes NDJSON bytes (rows ordered by `dateField`) and
 * writes one Parquet file per date, `dataset=<name>/date=YYYY-MM-DD/part-0.parquet`,
 * through `openFile`. Only one file is open at a time and each streams as its row
 * groups complete, so memory is bounded as for a single file. A date that comes back
 * after another one (input not ordered) gets a further file, `part-1.parquet`, so no
 * row is lost. The date column stays in the files; readers add `dataset` and `date`
 * from the path (`read_parquet(..., hive_partitioning = true)`). No rows → no files.
 *
 * `files` lists the finished files once the stream has emitted `finish`.
 */
export class PartitionedParquetWriter extends Writable {
  readonly #ctx: WriterContext;
  readonly #options: PartitionedParquetOptions;
  readonly #dateOf: (value: unknown) => string | null;
  readonly #splitter = new LineSplitter();
  readonly #parts = new Map<string | null, number>();
  readonly #files: ParquetPartitionFile[] = [];
  #current:
    | { date: string | null; path: string; file: Writable; encoder: ParquetEncoder; full: boolean }
    | undefined;

  constructor(ctx: WriterContext, options: PartitionedParquetOptions) {
    super();
    const field = ctx.fields.find((f) => f.name === options.dateField);
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
    this.#dateOf = field.type === 'timestamp' ? timestampDate(field.name) : dateDate(field.name);
  }

  get files(): readonly ParquetPartitionFile[] {
    return this.#files;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#addLines(this.#splitter.push(chunk)).then(() => done(), done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.#addLines(this.#splitter.end())
      .then(() => this.#close())
      .then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.#current?.file.destroy(err ?? undefined);
    this.#current = undefined;
    done(err);
  }

  async #addLines(lines: string[]): Promise<void> {
    for (const line of lines) {
      if (isBlank(line)) continue;
      const row = parseRow(line);
      const date = this.#dateOf(row[this.#options.dateField]);
      if (!this.#current || this.#current.date !== date) {
        await this.#close();
        this.#open(date);
      }
      this.#current!.encoder.add(row, line.length);
      if (this.#current!.full) {
        this.#current!.full = false;
        await once(this.#current!.file, 'drain');
      }
    }
  }

  #open(date: string | null): void {
    const part = this.#parts.get(date) ?? 0;
    this.#parts.set(date, part + 1);
    const path = partitionPath(this.#ctx.dataset, date, part);
    const file = this.#options.openFile(path);
    // A failing file fails the whole write (and is never left as an unhandled 'error').
    file.on('error', (err) => this.destroy(err));
    const current = {
      date,
      path,
      file,
      full: false,
      encoder: new ParquetEncoder(this.#ctx, this.#options, (bytes) => {
        if (!file.write(bytes)) current.full = true;
      }),
    };
    this.#current = current;
  }

  async #close(): Promise<void> {
    const current = this.#current;
    if (!current) return;
    this.#current = undefined;
    current.encoder.finish();
    current.file.end();
    await finished(current.file);
    this.#files.push({
      path: current.path,
      date: current.date,
      rows: current.encoder.rows,
      bytes: current.encoder.bytes,
    });
  }
}

/** Hive date partitioning of NDJSON rows into Parquet files; see `PartitionedParquetWriter`. */
export function createPartitionedParquet(
  ctx: WriterContext,
  options: PartitionedParquetOptions,
): PartitionedParquetWriter {
  return new PartitionedParquetWriter(ctx, options);
}

function timestampDate(name: string): (value: unknown) => string | null {
  return (value) => {
    if (value === null || value === undefined || (typeof value === 'string' && isInfinite(value)))
      return null;
    const micros = typeof value === 'string' ? parseTimestampMicros(value) : undefined;
    if (micros === undefined)
      throw new FerryError('format_error', `field ${name}: ${JSON.stringify(value)} is not a timestamp`);
    return utcDateOfMicros(micros);
  };
}

function dateDate(name: string): (value: unknown) => string | null {
  return (value) => {
    if (value === null || value === undefined || (typeof value === 'string' && isInfinite(value)))
      return null;
    if (typeof value !== 'string' || parseDateDays(value) === undefined) {
      throw new FerryError('format_error', `field ${name}: ${JSON.stringify(value)} is not a date`);
    }
    return value.slice(0, 10);
  };
}
