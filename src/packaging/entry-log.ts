import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { ChecksumEntry } from './checksums.ts';
import { FingerprintTable, fingerprint } from './fingerprints.ts';

/** Entries kept in memory before they are sorted and written out as one run (about 12 MB). */
const RUN_ENTRIES = 100_000;
/** Bytes gathered before the merged manifest hands a chunk on. */
const OUT_CHUNK = 256 * 1024;
/** Offset of the path in a manifest line: 64 hex digits and two spaces. */
const PATH_AT = 66;

/**
 * The files of one package, kept so that the package's memory does not grow with its file count
 * (a company package holds a file per conversation: millions of them). It answers two questions:
 *
 * - whether a path was already added: a table of 64-bit fingerprints of the paths (16 bytes a
 *   file at most), and, only when a fingerprint is already there, a look at the paths themselves
 *   (in memory, then in the runs on disk), so the answer is exact;
 * - `checksums.sha256`: its lines ("<hex>  <path>\n"), sorted by the UTF-8 bytes of the path,
 *   by an external merge sort: every `runEntries` lines are sorted in memory and written to a
 *   temporary file, and the runs are merged as the manifest is read.
 *
 * The merge is written here because the npm packages for external sorting are small, unkept
 * projects; a k-way merge of sorted line files is short and fully tested.
 */
export class PackageEntryLog {
  readonly #tmpBase: string;
  readonly #runEntries: number;
  readonly #fingerprints = new FingerprintTable();
  /**
   * Lines not yet in a run, as strings: a small Buffer would come from Node's shared pool and
   * keep its whole 8 KiB slab alive for as long as it waits here.
   */
  #pending: string[] = [];
  readonly #runs: string[] = [];
  #dir: Promise<string> | undefined;
  #count = 0;
  /** The run being written; the next one waits for it. */
  #flushing: Promise<void> = Promise.resolve();

  constructor(options: { tmpDir?: string | undefined; runEntries?: number | undefined } = {}) {
    this.#tmpBase = options.tmpDir ?? tmpdir();
    this.#runEntries = options.runEntries ?? RUN_ENTRIES;
  }

  /** Entries recorded. */
  get count(): number {
    return this.#count;
  }

  /**
   * Claims a path: false when it is certainly new (and now taken), true when it may have been
   * taken before, which `isRecorded` settles once every earlier entry is recorded.
   */
  claim(path: string): boolean {
    return !this.#fingerprints.add(fingerprint(path));
  }

  /** Whether an entry with this path was recorded (exact; reads the runs on disk). */
  async isRecorded(path: string): Promise<boolean> {
    await this.#flushing;
    const tail = `  ${path}\n`;
    if (this.#pending.some((line) => line.length === PATH_AT - 2 + tail.length && line.endsWith(tail)))
      return true;
    const key = Buffer.from(path);
    const matches = (line: Buffer) => line.length === PATH_AT + key.length + 1 && pathOf(line).equals(key);
    for (const run of this.#runs) {
      for await (const line of lines(run)) if (matches(line)) return true;
    }
    return false;
  }

  /** Records a written entry. */
  record(entry: ChecksumEntry): Promise<void> {
    this.#pending.push(`${entry.sha256}  ${entry.path}\n`);
    this.#count++;
    if (this.#pending.length < this.#runEntries) return Promise.resolve();
    const run = this.#pending;
    this.#pending = [];
    this.#flushing = this.#flushing.then(() => this.#writeRun(run));
    return this.#flushing;
  }

  /** `checksums.sha256` of every recorded entry, as a stream; call once, after the last `record`. */
  manifest(): Readable {
    return Readable.from(this.#merge(), { objectMode: false });
  }

  /** Removes the runs from disk (after the run being written, if any). */
  async dispose(): Promise<void> {
    await this.#flushing.catch(() => {
      // A run that failed to write failed its package already.
    });
    const dir = this.#dir;
    this.#dir = undefined;
    this.#pending = [];
    if (!dir) return;
    try {
      await rm(await dir, { recursive: true, force: true });
    } catch {
      // A temporary folder that was never made, or is already gone.
    }
  }

  async #writeRun(run: string[]): Promise<void> {
    this.#dir ??= mkdtemp(join(this.#tmpBase, 'ferry-entries-'));
    const file = join(await this.#dir, `run-${this.#runs.length + 1}`);
    await writeFile(file, Buffer.concat(sortedLines(run)));
    this.#runs.push(file);
  }

  async *#merge(): AsyncGenerator<Buffer> {
    await this.#flushing;
    const sources: LineSource[] = [
      arraySource(sortedLines(this.#pending)),
      ...this.#runs.map((run) => fileSource(run)),
    ];
    this.#pending = [];
    const heap = new LineHeap();
    for (const source of sources) {
      const line = await source.next();
      if (line) heap.push({ line, source });
    }
    let chunk: Buffer[] = [];
    let size = 0;
    for (;;) {
      const top = heap.peek();
      if (!top) break;
      chunk.push(top.line);
      size += top.line.length;
      if (size >= OUT_CHUNK) {
        yield Buffer.concat(chunk);
        chunk = [];
        size = 0;
      }
      const next = await top.source.next();
      if (next) heap.replaceTop({ line: next, source: top.source });
      else heap.pop();
    }
    if (chunk.length) yield Buffer.concat(chunk);
  }
}

/** Lines as bytes, sorted by the bytes of their paths. */
function sortedLines(lines: readonly string[]): Buffer[] {
  return lines.map((line) => Buffer.from(line)).sort(byPath);
}

function pathOf(line: Buffer): Buffer {
  return line.subarray(PATH_AT, line.length - 1);
}

function byPath(a: Buffer, b: Buffer): number {
  return Buffer.compare(pathOf(a), pathOf(b));
}

interface LineSource {
  /** The next line (with its newline), or null at the end. */
  next(): Promise<Buffer | null>;
}

function arraySource(sorted: readonly Buffer[]): LineSource {
  let i = 0;
  return { next: async () => sorted[i++] ?? null };
}

function fileSource(file: string): LineSource {
  const it = lines(file)[Symbol.asyncIterator]();
  return {
    next: async () => {
      const step = await it.next();
      return step.done ? null : step.value;
    },
  };
}

/** The lines of a run file, each with its newline, as Buffers (paths are compared as bytes). */
async function* lines(file: string): AsyncGenerator<Buffer> {
  let rest: Buffer | undefined;
  for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
    const data = rest ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10, start)) {
      yield data.subarray(start, nl + 1);
      start = nl + 1;
    }
    rest = start < data.length ? Buffer.from(data.subarray(start)) : undefined;
  }
  if (rest?.length) throw new Error(`${file}: the last line has no newline`);
}

interface HeapItem {
  line: Buffer;
  source: LineSource;
}

/** A binary min-heap of the runs' current lines, by path. */
class LineHeap {
  readonly #items: HeapItem[] = [];

  peek(): HeapItem | undefined {
    return this.#items[0];
  }

  push(item: HeapItem): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (byPath(items[parent]!.line, item.line) <= 0) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = item;
  }

  pop(): void {
    const last = this.#items.pop();
    if (last && this.#items.length) this.replaceTop(last);
  }

  replaceTop(item: HeapItem): void {
    const items = this.#items;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child = right < items.length && byPath(items[right]!.line, items[left]!.line) < 0 ? right : left;
      if (byPath(item.line, items[child]!.line) <= 0) break;
      items[i] = items[child]!;
      i = child;
    }
    items[i] = item;
  }
}
