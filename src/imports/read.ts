import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { TokenParser, Tokenizer } from '@streamparser/json';
import { parse as parseCsv } from 'csv-parse';
import { FerryError } from '../domain/ferry-error.ts';
import type { ImportLimits } from './types.ts';

/**
 * Streamed readers of untrusted import files: JSON (a top-level array, or arrays under
 * keys as API responses hold them), NDJSON and CSV. Memory is bounded by the limits: no
 * record, field or line is held beyond `maxRecordBytes` / `maxFieldBytes`, whatever the
 * file's size. Every error names the file and the byte offset or line.
 */

const CHUNK = 256 * 1024;

/**
 * Bytes read per run, for progress. A run hands its sources one `limits` object, which every
 * reader here receives, so the readers count for the run without each source passing a meter.
 */
const meters = new WeakMap<ImportLimits, { bytes: number }>();

/** A byte meter for the readers given this `limits` object (a copy per run). */
export function meterLimits(limits: ImportLimits): { limits: ImportLimits; meter: { bytes: number } } {
  const own = { ...limits };
  const meter = { bytes: 0 };
  meters.set(own, meter);
  return { limits: own, meter };
}

function count(limits: ImportLimits, bytes: number): void {
  const meter = meters.get(limits);
  if (meter) meter.bytes += bytes;
}

export function unreadable(file: string, where: string, message: string): FerryError {
  return new FerryError('import_unreadable', `${file}${where ? ` ${where}` : ''}: ${message}`, { file });
}

export function limitExceeded(limit: keyof ImportLimits, value: number, what: string): FerryError {
  return new FerryError(
    'import_limit_exceeded',
    `${what} exceeds the import limit ${limit} (${LIMIT_VARIABLES[limit]}=${value})`,
    { limit, variable: LIMIT_VARIABLES[limit], value },
  );
}

export const LIMIT_VARIABLES: Record<keyof ImportLimits, string> = {
  maxBytes: 'FERRY_IMPORT_MAX_BYTES',
  maxEntries: 'FERRY_IMPORT_MAX_ENTRIES',
  maxRatio: 'FERRY_IMPORT_MAX_RATIO',
  maxFieldBytes: 'FERRY_IMPORT_MAX_FIELD_BYTES',
  maxRecordBytes: 'FERRY_IMPORT_MAX_RECORD_BYTES',
};

/** Integers beyond 2^53 stay exact: they come back as their digits (ids, counters). */
class ExactTokenizer extends Tokenizer {
  // The parser's type says number; the value only travels on to the engine, which takes digit text.
  override parseNumber(text: string): number {
    const n = Number(text);
    if (Number.isInteger(n) && !Number.isSafeInteger(n) && /^-?\d+$/.test(text))
      return text as unknown as number;
    return n;
  }
}

export interface JsonRecord {
  readonly value: unknown;
  /** The key of the value in its parent: an array index, or a property name. */
  readonly key: string | number | undefined;
  /** Byte offset just after the record in the file. */
  readonly offset: number;
}

export interface JsonReadOptions {
  /**
   * JSONPath-like selectors of the values to yield (`$.*` the items of a top-level array,
   * `$.tickets.*` those of an API response's `tickets`, `$.export_metadata` one object).
   */
  readonly paths: readonly string[];
  readonly limits: ImportLimits;
  /** Display name of the file in errors (default: its base name). */
  readonly name?: string;
}

/** Records of a JSON file (or NDJSON, by its extension `.ndjson`/`.jsonl`), streamed. */
export async function* jsonRecords(file: string, options: JsonReadOptions): AsyncGenerator<JsonRecord> {
  if (isNdjson(file)) {
    for await (const line of ndjsonRecords(file, options.limits, options.name)) yield line;
    return;
  }
  const name = options.name ?? path.basename(file);
  const { maxFieldBytes, maxRecordBytes } = options.limits;
  // A file no larger than one field may be (a conversation of a package, an API page) is read
  // whole and parsed natively: nothing in it can exceed a limit, and JSON.parse is far faster.
  const size = (await stat(file)).size;
  if (size <= Math.min(maxFieldBytes, maxRecordBytes)) {
    yield* smallJsonRecords(file, name, size, options);
    return;
  }
  const tokenizer = new ExactTokenizer({ stringBufferSize: 0 });
  const parser = new TokenParser({ paths: [...options.paths], keepStack: false });
  let offset = 0;
  let recordStart = 0;
  const ready: JsonRecord[] = [];
  tokenizer.onToken = (info) => {
    offset = info.offset;
    if (typeof info.value === 'string' && Buffer.byteLength(info.value) > maxFieldBytes)
      throw limitExceeded('maxFieldBytes', maxFieldBytes, `${name} at byte ${info.offset}: a string`);
    if (info.offset - recordStart > maxRecordBytes)
      throw limitExceeded('maxRecordBytes', maxRecordBytes, `${name} at byte ${info.offset}: a record`);
    parser.write(info);
  };
  parser.onValue = ({ value, key }) => {
    ready.push({ value, key, offset });
    recordStart = offset;
  };
  parser.onError = (err) => {
    throw err;
  };
  let total = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK })) {
    try {
      tokenizer.write(chunk as Buffer);
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw unreadable(
        name,
        `near byte ${total + Math.max(0, offset - total)}`,
        `invalid JSON (${jsonMessage(err)})`,
      );
    }
    total += (chunk as Buffer).length;
    count(options.limits, (chunk as Buffer).length);
    // A value still open (one endless string) emits no token: the span since the last record is the bound.
    if (total - recordStart > maxRecordBytes)
      throw limitExceeded('maxRecordBytes', maxRecordBytes, `${name} at byte ${total}: a record`);
    if (ready.length > 0) yield* ready.splice(0);
  }
  try {
    tokenizer.end();
  } catch (err) {
    throw unreadable(
      name,
      `at byte ${total}`,
      `invalid JSON: the file ends inside a value (${jsonMessage(err)})`,
    );
  }
  if (!tokenizer.isEnded && total > 0)
    throw unreadable(name, `at byte ${total}`, 'invalid JSON: the file ends inside a value');
  if (total === 0) throw unreadable(name, '', 'the file is empty');
  yield* ready.splice(0);
}

async function* smallJsonRecords(
  file: string,
  name: string,
  size: number,
  options: JsonReadOptions,
): AsyncGenerator<JsonRecord> {
  const bytes = await readFile(file);
  count(options.limits, bytes.length);
  let value: unknown;
  try {
    value = parseExact(bytes.toString('utf8').replace(/^\uFEFF/, ''));
  } catch (err) {
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    if (bytes.length === 0) throw unreadable(name, '', 'the file is empty');
    throw unreadable(name, at ? `near byte ${at}` : '', `invalid JSON (${jsonMessage(err)})`);
  }
  for (const selector of options.paths) {
    const steps = selector
      .replace(/^\$\.?/, '')
      .split('.')
      .filter(Boolean);
    const all = steps.at(-1) === '*';
    let node: unknown = value;
    for (const step of all ? steps.slice(0, -1) : steps) {
      node =
        node && typeof node === 'object' && !Array.isArray(node)
          ? (node as Record<string, unknown>)[step]
          : undefined;
    }
    if (node === undefined) continue;
    if (!all) {
      yield { value: node, key: steps.at(-1), offset: size };
      continue;
    }
    if (Array.isArray(node))
      for (const [i, item] of node.entries()) yield { value: item, key: i, offset: size };
    else if (node && typeof node === 'object')
      for (const [k, item] of Object.entries(node)) yield { value: item, key: k, offset: size };
  }
}

function jsonMessage(err: unknown): string {
  return (err as Error).message.replace(/ in state \w+$/, '').slice(0, 200);
}

export function isNdjson(file: string): boolean {
  return /\.(ndjson|jsonl)$/i.test(file);
}

/** One JSON value per line; blank lines are skipped. */
async function* ndjsonRecords(
  file: string,
  limits: ImportLimits,
  display?: string,
): AsyncGenerator<JsonRecord> {
  const name = display ?? path.basename(file);
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let line = 0;
  let offset = 0;
  const parseLine = (bytes: Buffer): JsonRecord | null => {
    line += 1;
    const text = bytes.toString('utf8').trim();
    if (text === '') return null;
    try {
      return { value: parseExact(text), key: line, offset };
    } catch (err) {
      throw unreadable(name, `line ${line}`, `invalid JSON (${(err as Error).message.slice(0, 200)})`);
    }
  };
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK }) as AsyncIterable<Buffer>) {
    count(limits, chunk.length);
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      const whole = pending.length > 0 ? Buffer.concat([...pending, part]) : part;
      pending = [];
      pendingBytes = 0;
      offset += whole.length + 1;
      if (whole.length > limits.maxRecordBytes)
        throw limitExceeded('maxRecordBytes', limits.maxRecordBytes, `${name} line ${line + 1}: a record`);
      const record = parseLine(whole);
      if (record) yield record;
      start = nl + 1;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > limits.maxRecordBytes)
        throw limitExceeded('maxRecordBytes', limits.maxRecordBytes, `${name} line ${line + 1}: a record`);
    }
  }
  if (pendingBytes > 0) {
    offset += pendingBytes;
    const record = parseLine(Buffer.concat(pending));
    if (record) yield record;
  }
}

/** JSON.parse with integers beyond 2^53 kept as their digits (as `jsonRecords` does). */
export function parseExact(text: string): unknown {
  // The reviver costs; only text with an integer of 16 digits or more can need it.
  if (!/\d{16}/.test(text)) return JSON.parse(text);
  return JSON.parse(text, (_key, value, context?: { source?: string }) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && Number.isInteger(value)) {
      const source = context?.source;
      if (source && /^-?\d+$/.test(source)) return source;
    }
    return value;
  });
}

export interface CsvRow {
  readonly row: readonly string[];
  /** Line of the row's first character (1-based). */
  readonly line: number;
}

/** The header and rows of an RFC 4180 CSV file (a UTF-8 byte-order mark is skipped). */
export async function* csvRows(
  file: string,
  limits: ImportLimits,
  name = path.basename(file),
): AsyncGenerator<CsvRow> {
  const stream = createReadStream(file, { highWaterMark: CHUNK });
  stream.on('data', (chunk) => count(limits, chunk.length));
  const parser = stream.pipe(
    parseCsv({
      bom: true,
      info: true,
      relax_column_count: false,
      max_record_size: limits.maxFieldBytes,
      skip_empty_lines: true,
    }),
  );
  try {
    for await (const { record, info } of parser as AsyncIterable<{
      record: string[];
      info: { lines: number; bytes: number };
    }>) {
      let bytes = 0;
      for (const cell of record) bytes += cell.length;
      if (bytes > limits.maxRecordBytes)
        throw limitExceeded('maxRecordBytes', limits.maxRecordBytes, `${name} line ${info.lines}: a row`);
      yield { row: record, line: info.lines };
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    const e = err as Error & { code?: string; lines?: number };
    if (e.code === 'CSV_MAX_RECORD_SIZE')
      throw limitExceeded('maxFieldBytes', limits.maxFieldBytes, `${name} line ${e.lines ?? '?'}: a field`);
    throw unreadable(name, e.lines ? `line ${e.lines}` : '', `invalid CSV (${e.message.slice(0, 200)})`);
  } finally {
    parser.destroy();
  }
}

/** The first character of a JSON file that is not white space (`[` or `{`), to pick its selectors. */
export async function jsonShape(file: string): Promise<'array' | 'object' | 'other'> {
  for await (const chunk of createReadStream(file, { highWaterMark: 4096 }) as AsyncIterable<Buffer>) {
    const text = chunk
      .toString('utf8')
      .replace(/^\uFEFF/, '')
      .trimStart();
    if (text === '') continue;
    return text[0] === '[' ? 'array' : text[0] === '{' ? 'object' : 'other';
  }
  return 'other';
}
