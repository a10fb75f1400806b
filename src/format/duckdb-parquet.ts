import { execFile } from 'node:child_process';
import { closeSync, constants, createReadStream, createWriteStream, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { FerryError } from '../domain/ferry-error.ts';
import { fieldError, readColumns, selectList, sqlString } from './parquet-schema.ts';
import type { FieldSpec, WriterInput } from './types.ts';

export const PARQUET_CODECS = ['SNAPPY', 'ZSTD', 'UNCOMPRESSED'] as const;
export type ParquetCodec = (typeof PARQUET_CODECS)[number];

/** What one conversion reads and writes. */
export interface ParquetSpec {
  readonly dataset: string;
  readonly fields: readonly FieldSpec[];
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly input: WriterInput;
  readonly codec: ParquetCodec;
  readonly rowGroupRows: number;
}

/**
 * DuckDB's budget per conversion. The COPY streams: it holds the row group being
 * written (and its dictionaries), never the whole input; above the limit it spills
 * to the session's temporary folder.
 */
const MEMORY_LIMIT = '256MB';
/**
 * Longest input row (one CSV record or NDJSON line). DuckDB's CSV reader needs buffers
 * at least this large and takes one for every read from the pipe (at most 64 KiB each),
 * so a larger limit costs memory and time on every export.
 */
export const MAX_ROW_BYTES = 8 * 1024 * 1024;
/**
 * Conversions running at once in this process. Each holds one thread of libuv's pool
 * (4 by default) for as long as its COPY runs, blocked on the pipes while the export
 * streams; the rest of the pool stays free for file, zlib and crypto work.
 */
const MAX_RUNNING = 2;

let running = 0;
const waiting: (() => void)[] = [];

/** Waits for one of the `MAX_RUNNING` slots; the returned function gives it back (once). */
async function acquireSlot(): Promise<() => void> {
  if (running < MAX_RUNNING) running++;
  else await new Promise<void>((resolve) => waiting.push(resolve));
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const next = waiting.shift();
    // The slot passes straight to the next waiter, or is freed.
    if (next) next();
    else running--;
  };
}

const execFileAsync = promisify(execFile);

/** Creates the two named pipes; false where that is not possible (Windows, no `mkfifo`). */
async function makePipes(paths: readonly string[]): Promise<boolean> {
  if (process.platform === 'win32') return false;
  try {
    await execFileAsync('mkfifo', ['-m', '600', ...paths]);
    return true;
  } catch {
    return false;
  }
}

const CSV_REASON =
  /^(?:Maximum line size of \d+ bytes exceeded\..*|Expected Number of Columns: .*|Value with unterminated quote found\.|Invalid unicode .*)$/m;

/** A DuckDB error as Ferry reports it: a rejected value or unreadable input is a `format_error`. */
function conversionError(err: unknown, input: WriterInput): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const field = fieldError(err.message);
  if (field) return new FerryError('format_error', field.message, { field: field.field, type: field.type });
  const first = err.message.split('\n', 1)[0]!;
  const invalid = /^(?:Invalid Input|Conversion) Error: (.*)$/.exec(first);
  if (!invalid) return err;
  // The first line says where; the CSV reader's reason is a line of its own further down.
  // The row itself (quoted in between) stays out of the message.
  const reason = CSV_REASON.exec(err.message)?.[0];
  const what = invalid[1]!.replace(/ in file "[^"]*"/, '') + (reason ? `: ${reason}` : '');
  return new FerryError('format_error', `the ${input === 'csv' ? 'CSV' : 'NDJSON'} input: ${what}`);
}

/**
 * DuckDB in this process, with its own temporary folder, for a sequence of Parquet
 * conversions (one at a time). It streams through two named pipes in that folder:
 * Node writes the database's bytes into one while DuckDB reads them, and reads the
 * Parquet file from the other while DuckDB writes it, so reading, converting and
 * writing overlap and neither file is ever on disk. Where named pipes cannot be
 * made, the input is spooled to a file and converted once complete, and the Parquet
 * file is read back from disk.
 *
 * `close()` must be called once the last run has ended or been aborted: it frees the
 * instance, deletes the folder and gives back the process-wide slot `open` waited for.
 */
export class ParquetSession {
  readonly #dir: string;
  readonly #instance: DuckDBInstance;
  readonly #connection: DuckDBConnection;
  readonly #pipes: { input: string; output: string } | undefined;
  readonly #release: () => void;
  #runs = 0;
  #closed: Promise<void> | undefined;

  private constructor(
    dir: string,
    instance: DuckDBInstance,
    connection: DuckDBConnection,
    pipes: { input: string; output: string } | undefined,
    release: () => void,
  ) {
    this.#dir = dir;
    this.#instance = instance;
    this.#connection = connection;
    this.#pipes = pipes;
    this.#release = release;
  }

  /** Opens a session: waits for a slot, makes the folder and pipes, starts DuckDB. */
  static async open(options: { spool?: boolean } = {}): Promise<ParquetSession> {
    const release = await acquireSlot();
    let dir: string | undefined;
    let instance: DuckDBInstance | undefined;
    let connection: DuckDBConnection | undefined;
    try {
      dir = await mkdtemp(join(tmpdir(), 'ferry-parquet-'));
      const paths = { input: join(dir, 'input.pipe'), output: join(dir, 'output.pipe') };
      const pipes = !options.spool && (await makePipes([paths.input, paths.output])) ? paths : undefined;
      instance = await DuckDBInstance.create(':memory:', {
        threads: '1',
        memory_limit: MEMORY_LIMIT,
        temp_directory: join(dir, 'spill'),
        preserve_insertion_order: 'true',
        autoinstall_known_extensions: 'false',
        autoload_known_extensions: 'false',
      });
      connection = await instance.connect();
      // Timestamps without an offset are UTC; the session's zone decides that, not the machine's.
      await connection.run(`SET TimeZone = 'UTC'`);
      await connection.run('SET lock_configuration = true');
      return new ParquetSession(dir, instance, connection, pipes, release);
    } catch (err) {
      connection?.closeSync();
      instance?.closeSync();
      if (dir) await rm(dir, { recursive: true, force: true });
      release();
      throw err;
    }
  }

  /** Starts one conversion; the previous run must have ended. */
  run(spec: ParquetSpec): ParquetRun {
    const n = this.#runs++;
    const source = this.#pipes?.input ?? join(this.#dir, `input-${n}`);
    const target = this.#pipes?.output ?? join(this.#dir, `output-${n}.parquet`);
    const sql = copySql(spec, source, target);
    const records = new RecordCount(spec.input);
    const copy = async () => {
      const written = (await this.#connection.run(sql)).rowsChanged;
      records.check(written);
    };
    const interrupt = () => this.#connection.interrupt();
    return this.#pipes
      ? new PipeRun(this.#pipes, spec.input, records, copy, interrupt)
      : new SpoolRun({ input: source, output: target }, spec.input, records, copy, interrupt);
  }

  /** Closes DuckDB, deletes the folder and frees the slot. Safe to call more than once. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      try {
        this.#connection.closeSync();
        this.#instance.closeSync();
        await rm(this.#dir, { recursive: true, force: true });
      } finally {
        this.#release();
      }
    })();
    return this.#closed;
  }
}

const QUOTE = 0x22;
const NEWLINE = 0x0a;

/**
 * Counts the records of the input as it is written, independently of DuckDB, and
 * checks that the file has exactly as many rows: input DuckDB reads differently from
 * how PostgreSQL wrote it fails the export instead of losing rows. CSV: line ends
 * outside quoted cells (cells may hold newlines), less the header row; NDJSON: lines
 * holding anything but spaces.
 */
class RecordCount {
  readonly #csv: boolean;
  #records = 0;
  #inQuotes = false;
  /** The last byte seen is a line end (or nothing has been seen). */
  #atLineStart = true;
  /** NDJSON: the line not yet ended holds only spaces so far. */
  #blankSoFar = true;

  constructor(input: WriterInput) {
    this.#csv = input === 'csv';
  }

  add(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#csv) this.#countCsv(chunk);
    else this.#countLines(chunk);
    this.#atLineStart = chunk[chunk.length - 1] === NEWLINE;
  }

  /** The number of rows the input holds. */
  get rows(): number {
    if (!this.#csv) return this.#records + (this.#blankSoFar ? 0 : 1);
    return Math.max(0, this.#records + (this.#atLineStart ? 0 : 1) - 1);
  }

  check(written: number): void {
    if (written !== this.rows) {
      throw new FerryError(
        'format_error',
        `the Parquet file has ${written} rows but its ${this.#csv ? 'CSV' : 'NDJSON'} input has ${this.rows}`,
      );
    }
  }

  #countCsv(chunk: Buffer): void {
    let i = 0;
    // The next newline at or after i, searched again only once i has passed it.
    let nl = chunk.indexOf(NEWLINE);
    while (i < chunk.length) {
      const q = chunk.indexOf(QUOTE, i);
      if (this.#inQuotes) {
        if (q < 0) return;
        this.#inQuotes = false; // a doubled quote "" re-enters quotes on the next byte
        i = q + 1;
        continue;
      }
      if (nl >= 0 && nl < i) nl = chunk.indexOf(NEWLINE, i);
      if (nl >= 0 && (q < 0 || nl < q)) {
        this.#records++;
        i = nl + 1;
      } else if (q >= 0) {
        this.#inQuotes = true;
        i = q + 1;
      } else {
        return;
      }
    }
  }

  #countLines(chunk: Buffer): void {
    let start = 0;
    // A line counts once it has a byte other than a space, tab or carriage return.
    let blank = this.#blankSoFar;
    for (let nl = chunk.indexOf(NEWLINE); ; nl = chunk.indexOf(NEWLINE, start)) {
      const end = nl < 0 ? chunk.length : nl;
      if (blank && !isSpace(chunk, start, end)) blank = false;
      if (nl < 0) break;
      if (!blank) this.#records++;
      blank = true;
      start = nl + 1;
    }
    this.#blankSoFar = blank;
  }
}

function isSpace(chunk: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = chunk[i]!;
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  }
  return true;
}

/** The COPY statement of one conversion. */
function copySql(spec: ParquetSpec, source: string, target: string): string {
  const columns = readColumns(spec.fields, spec.input);
  const read =
    spec.input === 'csv'
      ? // PostgreSQL's CSV: a header row, `""` for an empty string and nothing for a null.
        `read_csv(${sqlString(source)}, columns = ${columns}, header = true, auto_detect = false, ` +
        `delim = ',', quote = '"', escape = '"', new_line = '\\n', allow_quoted_nulls = false, ` +
        `strict_mode = true, max_line_size = ${MAX_ROW_BYTES}, buffer_size = ${MAX_ROW_BYTES})`
      : `read_ndjson(${sqlString(source)}, columns = ${columns}, auto_detect = false, records = true, ` +
        `maximum_object_size = ${MAX_ROW_BYTES})`;
  const metadata =
    `{'ferry.dataset': ${sqlString(spec.dataset)}, ` +
    `'ferry.export_metadata': ${sqlString(JSON.stringify(spec.metadata))}}`;
  return (
    `COPY (SELECT ${selectList(spec.fields, spec.input)} FROM ${read}) TO ${sqlString(target)} ` +
    `(FORMAT parquet, COMPRESSION ${spec.codec.toLowerCase()}, ROW_GROUP_SIZE ${spec.rowGroupRows}, ` +
    `KV_METADATA ${metadata}, USE_TMP_FILE false)`
  );
}

/**
 * One conversion: `write` the input bytes, `end` it, read the Parquet file from
 * `output` (it ends once the file is complete). `abort` stops it and waits until
 * DuckDB has let go of the files; after the run has ended it only closes `output`.
 */
export interface ParquetRun {
  readonly output: Readable;
  /** Settles when the conversion has finished; rejects with its error, also while no write is waiting. */
  readonly done: Promise<void>;
  /** Resolves when the next chunk may be written (backpressure); rejects when the conversion failed. */
  write(chunk: Buffer): Promise<void>;
  /** Ends the input and resolves once the Parquet file is complete (its last bytes may still be in `output`). */
  end(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * A run through the session's named pipes.
 *
 * Opening a pipe blocks until its other end is open too, so the order matters. Node
 * opens the output pipe first, non-blocking, as its reader, plus a writer of its own
 * that it holds until the COPY has finished, so the reader sees the end of the file
 * only after DuckDB's last byte and never before DuckDB has opened it. The input pipe
 * is opened for writing (non-blocking) only once DuckDB has opened it for reading,
 * polled, so no byte is ever written into a pipe nobody reads, and closing it is the
 * end of input DuckDB sees.
 */
class PipeRun implements ParquetRun {
  readonly output: Socket;
  readonly done: Promise<void>;
  readonly #inputPath: string;
  readonly #records: RecordCount;
  readonly #interrupt: () => void;
  #holdFd: number | undefined;
  #writer: Promise<Socket> | undefined;
  #settled = false;
  #failure: Error | undefined;
  /** Writes waiting for the input pipe to drain; a failed COPY rejects them. */
  readonly #waiting = new Set<(err: Error) => void>();
  #aborted: Promise<void> | undefined;

  constructor(
    paths: { input: string; output: string },
    input: WriterInput,
    records: RecordCount,
    copy: () => Promise<void>,
    interrupt: () => void,
  ) {
    this.#inputPath = paths.input;
    this.#records = records;
    this.#interrupt = interrupt;
    const readFd = openSync(paths.output, constants.O_RDONLY | constants.O_NONBLOCK);
    this.#holdFd = openSync(paths.output, constants.O_WRONLY | constants.O_NONBLOCK);
    this.output = new Socket({ fd: readFd, readable: true, writable: false });
    this.done = copy().then(
      () => {
        this.#settled = true;
        // The Parquet file is complete: let the reader reach its end.
        this.#letGo();
        for (const reject of this.#waiting)
          reject(new Error('the Parquet conversion ended before its input'));
      },
      (err: unknown) => {
        this.#settled = true;
        this.#failure = conversionError(err, input);
        this.#letGo();
        for (const reject of this.#waiting) reject(this.#failure);
        throw this.#failure;
      },
    );
    // Whoever waits on the run sees the failure; this only keeps it from being unhandled.
    this.done.catch(() => {});
  }

  #letGo(): void {
    if (this.#holdFd === undefined) return;
    closeSync(this.#holdFd);
    this.#holdFd = undefined;
  }

  /** The input pipe's writer, opened as soon as DuckDB reads the pipe. */
  #openWriter(): Promise<Socket> {
    this.#writer ??= (async () => {
      for (;;) {
        try {
          const fd = openSync(this.#inputPath, constants.O_WRONLY | constants.O_NONBLOCK);
          const socket = new Socket({ fd, readable: false, writable: true });
          // A failed write rejects the pending write() with the COPY's own error (see #failed).
          socket.on('error', () => {});
          return socket;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
        }
        // ENXIO: DuckDB has not opened the pipe yet.
        if (this.#settled) throw this.#failure ?? new Error('the Parquet conversion ended before its input');
        await delay(1);
      }
    })();
    return this.#writer;
  }

  /** The COPY's error if it failed, else `err`. */
  async #failed(err: unknown): Promise<never> {
    await this.done.catch(() => {});
    throw this.#failure ?? err;
  }

  async write(chunk: Buffer): Promise<void> {
    try {
      const socket = await this.#openWriter();
      this.#records.add(chunk);
      if (socket.write(chunk)) return;
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          socket.off('drain', drained);
          socket.off('close', closed);
          this.#waiting.delete(done);
          if (err) reject(err);
          else resolve();
        };
        const drained = () => done();
        const closed = () => done(new Error('the Parquet conversion stopped reading its input'));
        socket.on('drain', drained);
        socket.on('close', closed);
        this.#waiting.add(done);
      });
    } catch (err) {
      return this.#failed(err);
    }
  }

  async end(): Promise<void> {
    try {
      const socket = await this.#openWriter();
      socket.end();
      await finished(socket, { readable: false });
    } catch (err) {
      return this.#failed(err);
    }
    await this.done;
  }

  abort(): Promise<void> {
    this.#aborted ??= (async () => {
      void this.#writer?.then((socket) => socket.destroy()).catch(() => {});
      if (this.#settled) {
        this.output.destroy();
        return;
      }
      this.#interrupt();
      // The Parquet bytes still coming are dropped, so DuckDB is never stuck writing them.
      this.output.on('data', () => {});
      this.output.resume();
      // DuckDB may be waiting to open the input pipe (no writer yet): a writer that opens and
      // closes at once lets it through to the end of input. Repeated until the COPY is over.
      const poke = setInterval(() => {
        try {
          closeSync(openSync(this.#inputPath, constants.O_WRONLY | constants.O_NONBLOCK));
        } catch {
          // ENXIO: nobody is opening it right now.
        }
      }, 5);
      try {
        await this.done.catch(() => {});
      } finally {
        clearInterval(poke);
        this.output.destroy();
      }
    })();
    return this.#aborted;
  }
}

/** A run through files: the input is written to disk, converted at `end`, then read back. */
class SpoolRun implements ParquetRun {
  readonly output = new PassThrough();
  readonly done: Promise<void>;
  readonly #files: { input: string; output: string };
  readonly #inputKind: WriterInput;
  readonly #records: RecordCount;
  readonly #file: Writable;
  readonly #copy: () => Promise<void>;
  readonly #interrupt: () => void;
  readonly #finish: { resolve: () => void; reject: (err: Error) => void };
  #converting: Promise<void> | undefined;
  #converted = false;
  #aborted: Promise<void> | undefined;

  constructor(
    files: { input: string; output: string },
    input: WriterInput,
    records: RecordCount,
    copy: () => Promise<void>,
    interrupt: () => void,
  ) {
    this.#files = files;
    this.#inputKind = input;
    this.#records = records;
    this.#copy = copy;
    this.#interrupt = interrupt;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.done = promise;
    this.done.catch(() => {});
    this.#finish = { resolve, reject };
    this.#file = createWriteStream(files.input);
    this.#file.on('error', (err) => reject(err));
  }

  async write(chunk: Buffer): Promise<void> {
    this.#records.add(chunk);
    if (this.#file.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        this.#file.off('drain', drained);
        this.#file.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const drained = () => done();
      this.#file.on('drain', drained);
      this.#file.on('error', done);
    });
  }

  end(): Promise<void> {
    this.#converting ??= (async () => {
      try {
        this.#file.end();
        await finished(this.#file);
        try {
          await this.#copy();
        } catch (err) {
          throw conversionError(err, this.#inputKind);
        }
        await rm(this.#files.input, { force: true });
      } catch (err) {
        this.#finish.reject(err as Error);
        throw err;
      }
      this.#converted = true;
      this.#finish.resolve();
      // The file goes out in the background; `output` ends after its last byte.
      pipeline(createReadStream(this.#files.output), this.output)
        .then(() => rm(this.#files.output, { force: true }))
        .catch(() => {});
    })();
    return this.#converting;
  }

  abort(): Promise<void> {
    this.#aborted ??= (async () => {
      this.#file.destroy();
      if (this.#converting && !this.#converted) {
        // Only a COPY still running is interrupted; the connection may be closed once it is over.
        this.#interrupt();
        await this.#converting.catch(() => {});
      }
      this.output.destroy();
    })();
    return this.#aborted;
  }
}
