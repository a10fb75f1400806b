import { Transform, type TransformCallback } from 'node:stream';
import { finished } from 'node:stream/promises';
import { invalid } from '../domain/ferry-error.ts';
import {
  PARQUET_CODECS,
  type ParquetCodec,
  type ParquetRun,
  ParquetSession,
  type ParquetSpec,
} from './duckdb-parquet.ts';
import type { FormatWriter, WriterContext, WriterInput } from './types.ts';

export { PARQUET_CODECS, type ParquetCodec };

export interface ParquetOptions {
  /** Page compression. SNAPPY (default) is read by every Parquet reader; ZSTD is smaller. */
  readonly codec?: ParquetCodec;
  /**
   * Rows per row group (default 32,768). DuckDB closes a group at a multiple of its
   * 2,048-row vectors, so a group holds this many rows rounded up to one; the last
   * group of the file may be up to one row group plus 2,048 rows.
   */
  readonly rowGroupRows?: number;
  /**
   * What the input bytes are: NDJSON rows (default), or PostgreSQL CSV with a header
   * row, as `WriterInput` describes them.
   */
  readonly input?: WriterInput;
  /**
   * Spool the input to a temporary file and convert it once complete, instead of
   * streaming through named pipes. Used anyway where named pipes cannot be made.
   */
  readonly spool?: boolean;
}

export const DEFAULT_ROW_GROUP_ROWS = 32_768;

/** The conversion a writer context and options describe; bad options throw here. */
export function parquetSpec(
  ctx: Pick<WriterContext, 'dataset' | 'fields' | 'metadata'>,
  options: ParquetOptions,
): ParquetSpec {
  const codec = options.codec ?? 'SNAPPY';
  if (!PARQUET_CODECS.includes(codec)) {
    throw invalid('codec', `unknown Parquet codec ${JSON.stringify(codec)}`, PARQUET_CODECS);
  }
  const rowGroupRows = options.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS;
  if (!Number.isInteger(rowGroupRows) || rowGroupRows < 1) {
    throw invalid('rowGroupRows', `must be a positive integer, got ${rowGroupRows}`);
  }
  const input = options.input ?? 'ndjson';
  if (input !== 'csv' && input !== 'ndjson') {
    throw invalid('input', `unknown input ${JSON.stringify(input)}`, ['csv', 'ndjson']);
  }
  return { dataset: ctx.dataset, fields: ctx.fields, metadata: ctx.metadata, input, codec, rowGroupRows };
}

/**
 * The input bytes, converted to one Parquet file by DuckDB in this process (see
 * `ParquetSession`). DuckDB reads the bytes as they arrive and the file's bytes are
 * pushed as DuckDB writes them, row group by row group, so the output streams while
 * the input is still arriving. Memory is bounded by DuckDB's limit and one row group,
 * not by the row count. Backpressure runs both ways: a slow reader of the output
 * stops DuckDB, which stops taking input.
 */
class ParquetTransform extends Transform {
  readonly #spec: ParquetSpec;
  readonly #spool: boolean;
  #started: Promise<{ session: ParquetSession; run: ParquetRun }> | undefined;
  #run: ParquetRun | undefined;

  constructor(spec: ParquetSpec, spool: boolean) {
    super();
    this.#spec = spec;
    this.#spool = spool;
  }

  #start(): Promise<{ session: ParquetSession; run: ParquetRun }> {
    this.#started ??= (async () => {
      const session = await ParquetSession.open({ spool: this.#spool });
      let run: ParquetRun;
      try {
        run = session.run(this.#spec);
      } catch (err) {
        await session.close();
        throw err;
      }
      this.#run = run;
      run.output.on('data', (bytes: Buffer) => {
        if (!this.push(bytes)) run.output.pause();
      });
      run.output.on('error', (err: Error) => this.destroy(err));
      // A conversion that fails while no write or flush is waiting still fails the stream.
      run.done.catch((err: Error) => this.destroy(err));
      return { session, run };
    })();
    return this.#started;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#start()
      .then(({ run }) => run.write(chunk))
      .then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    this.#start()
      .then(async ({ session, run }) => {
        await run.end();
        await finished(run.output, { writable: false });
        await session.close();
      })
      .then(() => done(), done);
  }

  override _read(size: number): void {
    this.#run?.output.resume();
    super._read(size);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (!this.#started) {
      done(err);
      return;
    }
    this.#started
      .then(
        async ({ session, run }) => {
          await run.abort();
          await session.close();
        },
        () => {},
      )
      .then(
        () => done(err),
        (closeErr: Error) => done(err ?? closeErr),
      );
  }
}

/**
 * A byte transform from the database's rows (NDJSON by default, or CSV: see
 * `ParquetOptions.input`) to one Parquet file. Bad options throw here, not later as
 * a stream error.
 */
export function createParquetTransform(ctx: WriterContext, options: ParquetOptions = {}): Transform {
  return new ParquetTransform(parquetSpec(ctx, options), options.spool ?? false);
}

/**
 * Parquet: typed, compressed columns (see parquet-schema.ts for the type mapping),
 * row groups of 32,768 rows, SNAPPY, written by DuckDB from the database's CSV.
 * Export metadata is stored in the footer's key-value metadata (`ferry.export_metadata`).
 */
export const parquet: FormatWriter = {
  format: 'parquet',
  extension: 'parquet',
  contentType: 'application/vnd.apache.parquet',
  input: 'csv',
  create: (ctx) => createParquetTransform(ctx, { input: 'csv' }),
};
