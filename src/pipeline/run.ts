import { pipeline, type Readable, type Writable } from 'node:stream';
import { encryptForRecipients } from '../crypto/age.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { MeteredHash } from '../lib/metered-hash.ts';
import type { ObjectStore, PendingObject } from '../store/object-store.ts';

/** What a producer may use while it writes. */
export interface ProduceContext {
  readonly signal: AbortSignal;
  /** Reports the records written so far (progress). */
  readonly records: (count: number) => void;
}

/**
 * Writes a file's bytes into `out` and says how many records it holds. It ends `out`
 * (a pipeline into it does); one that leaves it open has it ended when it resolves.
 * Extra fields of the result (counts, cursors) come back to the caller unchanged.
 */
export type Producer<R extends { records: number } = { records: number }> = (
  out: Writable,
  ctx: ProduceContext,
) => Promise<R>;

/** What a run produces. */
export interface FileSpec<R extends { records: number } = { records: number }> {
  readonly produce: Producer<R>;
  /** Records the file is expected to hold, for progress; asked before producing; a failure means unknown. */
  readonly estimate?: (() => Promise<number | null>) | undefined;
  /** age recipients: when given, the stored file is encrypted for them. */
  readonly recipients?: readonly string[] | undefined;
  /** The plan's file size limit, on the bytes produced (before encryption). */
  readonly maxBytes?: number | null | undefined;
  /** The error for a file past `maxBytes` (a `quota_exceeded` whose message fits the caller). */
  readonly tooLarge?: ((maxBytes: number) => Error) | undefined;
}

/** A file as stored, committed and checked: what a sink records. */
export interface ProducedFile {
  readonly key: string;
  readonly contentType: string;
  /** Size and SHA-256 of the stored bytes (the encrypted ones for an age-encrypted file). */
  readonly bytes: number;
  readonly sha256: string;
  readonly records: number;
  readonly encrypted: boolean;
}

/** Where a run puts its file and how the caller records it. */
export interface FileSink {
  readonly key: string;
  readonly contentType: string;
  /**
   * The last step before the file becomes visible, once its checksum is verified: the
   * caller's state change that proves the attempt still owns the work (e.g. to
   * `packaging`). False means the attempt lost: the bytes are discarded.
   */
  readonly beforeCommit?: (() => Promise<boolean>) | undefined;
  /**
   * Records the committed file (the caller's state change, e.g. the export completed).
   * False means the attempt lost meanwhile: the committed object is deleted again.
   */
  readonly complete: (file: ProducedFile) => Promise<boolean>;
}

export interface RunProgress {
  records?: number;
  bytes?: number;
  estimated?: number | null;
}

export interface RunControl {
  readonly signal: AbortSignal;
  /** Progress as it happens: records from the producer, bytes produced, the estimate. */
  readonly onProgress?: ((progress: RunProgress) => void) | undefined;
}

export interface RunDeps {
  /** Where the file goes: the object store, or (the command line) a local file or stdout. */
  readonly store: Pick<ObjectStore, 'put' | 'delete'>;
}

export type RunOutcome<R> =
  | { readonly status: 'completed'; readonly file: ProducedFile; readonly produced: R }
  /** The attempt lost its claim (before the commit, or while recording): nothing of it is left visible. */
  | { readonly status: 'lost' };

/**
 * The one run of an export file: the spec's producer writes the bytes, which are
 * counted and hashed once (and held to the size limit), optionally age-encrypted, and
 * streamed into a pending object of the store at the same time. The store's checksum
 * must match what was produced before the object is committed; only then does the
 * sink record it. Nothing produced by a failed or aborted run stays: pending bytes are
 * discarded, and an object committed by an attempt that lost its claim is deleted.
 * An abort rejects with the signal's reason.
 */
export async function runFile<R extends { records: number }>(
  deps: RunDeps,
  spec: FileSpec<R>,
  sink: FileSink,
  control: RunControl,
): Promise<RunOutcome<R>> {
  const { signal } = control;
  const progress = (p: RunProgress) => control.onProgress?.(p);
  const recipients = spec.recipients ?? [];
  const encrypted = recipients.length > 0;
  const meter = new MeteredHash({
    maxBytes: spec.maxBytes ?? null,
    ...(spec.tooLarge ? { tooLarge: spec.tooLarge } : {}),
    onBytes: (bytes) => progress({ bytes }),
  });
  // Errors of the meter reach the run through the producer and the store (both see the stream
  // fail); without this listener, one that comes before the store attached its own would crash.
  meter.on('error', () => {});
  const body: Readable = encrypted ? pipeline(meter, encryptForRecipients(recipients), () => {}) : meter;
  const putting = deps.store.put(sink.key, body, { contentType: sink.contentType });
  // A store that gives up stops reading: fail the producer's writes instead of leaving them waiting.
  putting.catch((err: unknown) => meter.destroy(asError(err)));
  const producing = (async () => {
    if (spec.estimate) progress({ estimated: await spec.estimate().catch(() => null) });
    const produced = await spec.produce(meter, { signal, records: (records) => progress({ records }) });
    if (!meter.writableEnded && !meter.destroyed) meter.end();
    return produced;
  })().catch((err: unknown) => {
    meter.destroy(asError(err));
    throw err;
  });

  const [made, stored] = await Promise.allSettled([producing, putting]);
  if (made.status === 'rejected' || stored.status === 'rejected') {
    if (stored.status === 'fulfilled') await stored.value.discard().catch(() => {});
    if (signal.aborted) throw signal.reason;
    throw made.status === 'rejected' ? made.reason : (stored as PromiseRejectedResult).reason;
  }
  const pending = stored.value;
  const records = made.value.records;
  const onVerified = () => progress({ records, bytes: pending.bytes });
  if (!(await verifyAndClaim(pending, meter, encrypted, sink, onVerified))) return { status: 'lost' };

  let committed = false;
  try {
    await pending.commit();
    committed = true;
    const file: ProducedFile = {
      key: sink.key,
      contentType: sink.contentType,
      bytes: pending.bytes,
      sha256: pending.sha256,
      records,
      encrypted,
    };
    if (await sink.complete(file)) return { status: 'completed', file, produced: made.value };
    await deps.store.delete(sink.key);
    return { status: 'lost' };
  } catch (err) {
    if (!committed) await pending.discard().catch(() => {});
    else await deps.store.delete(sink.key).catch(() => {});
    throw err;
  }
}

/**
 * Checks that the store holds exactly the bytes produced (for an encrypted file the
 * store saw ciphertext, which the producer never did: nothing to compare), then asks the
 * sink whether the attempt may commit. The bytes are discarded unless the answer is yes.
 */
async function verifyAndClaim(
  pending: PendingObject,
  meter: MeteredHash,
  encrypted: boolean,
  sink: FileSink,
  verified: () => void,
): Promise<boolean> {
  try {
    checkStored(pending, meter, encrypted);
    verified();
    if (!sink.beforeCommit || (await sink.beforeCommit())) return true;
  } catch (err) {
    await pending.discard().catch(() => {});
    throw err;
  }
  await pending.discard().catch(() => {});
  return false;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A file of a set as the store holds it (pending until the set is committed): what a download returns. */
export interface StoredFile {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly encrypted: boolean;
}

/** Where a producer of several files writes them. */
export interface FileSetOutput {
  /**
   * Starts a file of the set: its bytes go into `stream` (ended by the producer), through
   * the run's meter and size limit, age encryption when the set has recipients (unless
   * `encrypt` is false; an encrypted file is `application/octet-stream`), into a pending
   * object of the store. `stored` settles once the store holds every byte, with the size
   * and SHA-256 a download returns; nothing is visible until the whole set is committed.
   */
  open(
    name: string,
    contentType: string,
    options?: { encrypt?: boolean },
  ): { stream: Writable; stored: Promise<StoredFile> };
}

/** What a producer of several files says it wrote. */
export interface FileSetProduced {
  records: number;
  /** Records per file name; a file not named holds none. */
  fileRecords?: Readonly<Record<string, number>>;
}

/** Writes the files of a set, one `out.open()` each, and says what they hold. */
export type FileSetProducer<R extends FileSetProduced = FileSetProduced> = (
  out: FileSetOutput,
  ctx: ProduceContext,
) => Promise<R>;

/** What a run of several files produces; limits as for one file, the size limit on their sum. */
export interface FileSetSpec<R extends FileSetProduced = FileSetProduced>
  extends Omit<FileSpec<{ records: number }>, 'produce'> {
  readonly produce: FileSetProducer<R>;
}

/** A file of a set as stored, committed and checked. */
export interface ProducedSetFile extends ProducedFile {
  readonly name: string;
}

/** Where a run of several files puts them and how the caller records them. */
export interface FileSetSink {
  /** The object key of a file of the set, by name. */
  keyOf(name: string): string;
  /** As for one file: the caller's state change before the files become visible. */
  readonly beforeCommit?: (() => Promise<boolean>) | undefined;
  /** Records the committed files, in the order they were opened; false deletes them again. */
  readonly complete: (files: readonly ProducedSetFile[]) => Promise<boolean>;
}

export type FileSetOutcome<R> =
  | { readonly status: 'completed'; readonly files: readonly ProducedSetFile[]; readonly produced: R }
  | { readonly status: 'lost' };

interface OpenedFile {
  readonly name: string;
  readonly key: string;
  readonly contentType: string;
  readonly meter: MeteredHash;
  readonly encrypted: boolean;
  readonly putting: Promise<PendingObject>;
}

/**
 * `runFile` for a set of files that stand or fall together (the parts of a split package
 * and their manifest): each file the producer opens is counted and hashed once, held with
 * the others to the size limit, optionally age-encrypted, and streamed into a pending
 * object of its own. Once the producer is done, every stored checksum must match what was
 * produced; then the sink's `beforeCommit`, the commit of every file, and the sink's
 * `complete` with all of them. A failure or an abort leaves none of them: pending bytes
 * are discarded and committed objects of an attempt that lost its claim are deleted.
 */
export async function runFileSet<R extends FileSetProduced>(
  deps: RunDeps,
  spec: FileSetSpec<R>,
  sink: FileSetSink,
  control: RunControl,
): Promise<FileSetOutcome<R>> {
  const { signal } = control;
  const progress = (p: RunProgress) => control.onProgress?.(p);
  const recipients = spec.recipients ?? [];
  const maxBytes = spec.maxBytes ?? null;
  const tooLarge = spec.tooLarge ?? ((max: number) => new Error(`the files grew past ${max} bytes`));
  const opened: OpenedFile[] = [];
  let total = 0;

  const out: FileSetOutput = {
    open(name, contentType, options = {}) {
      const encrypted = recipients.length > 0 && options.encrypt !== false;
      let counted = 0;
      const meter = new MeteredHash({
        onBytes: (bytes) => {
          total += bytes - counted;
          counted = bytes;
          if (maxBytes !== null && total > maxBytes) throw tooLarge(maxBytes);
          progress({ bytes: total });
        },
      });
      meter.on('error', () => {});
      const body: Readable = encrypted ? pipeline(meter, encryptForRecipients(recipients), () => {}) : meter;
      const key = sink.keyOf(name);
      const type = encrypted ? 'application/octet-stream' : contentType;
      const putting = deps.store.put(key, body, { contentType: type });
      putting.catch((err: unknown) => meter.destroy(asError(err)));
      opened.push({ name, key, contentType: type, meter, encrypted, putting });
      const stored = putting.then((pending) => {
        checkStored(pending, meter, encrypted);
        return { name, bytes: pending.bytes, sha256: pending.sha256, encrypted };
      });
      // The run reports a failed store itself; a producer that does not wait for `stored` may drop it.
      stored.catch(() => {});
      return { stream: meter, stored };
    },
  };

  const producing = (async () => {
    if (spec.estimate) progress({ estimated: await spec.estimate().catch(() => null) });
    const produced = await spec.produce(out, { signal, records: (records) => progress({ records }) });
    for (const file of opened) if (!file.meter.writableEnded && !file.meter.destroyed) file.meter.end();
    return produced;
  })().catch((err: unknown) => {
    for (const file of opened) file.meter.destroy(asError(err));
    throw err;
  });

  const made = await producing.then(
    (value) => ({ status: 'fulfilled' as const, value }),
    (reason: unknown) => ({ status: 'rejected' as const, reason }),
  );
  const stores = await Promise.allSettled(opened.map((file) => file.putting));
  const pending = stores.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const discardAll = () => Promise.all(pending.map((p) => p.discard().catch(() => {})));
  const storeFailure = stores.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (made.status === 'rejected' || storeFailure) {
    await discardAll();
    if (signal.aborted) throw signal.reason;
    throw made.status === 'rejected' ? made.reason : storeFailure!.reason;
  }
  const records = made.value.records;
  try {
    for (const [i, file] of opened.entries()) checkStored(pending[i]!, file.meter, file.encrypted);
    progress({ records, bytes: total });
    if (sink.beforeCommit && !(await sink.beforeCommit())) {
      await discardAll();
      return { status: 'lost' };
    }
  } catch (err) {
    await discardAll();
    throw err;
  }

  const committed: string[] = [];
  try {
    for (const object of pending) {
      await object.commit();
      committed.push(object.key);
    }
    const files: ProducedSetFile[] = opened.map((file, i) => ({
      name: file.name,
      key: file.key,
      contentType: file.contentType,
      bytes: pending[i]!.bytes,
      sha256: pending[i]!.sha256,
      records: made.value.fileRecords?.[file.name] ?? 0,
      encrypted: file.encrypted,
    }));
    if (await sink.complete(files)) return { status: 'completed', files, produced: made.value };
    for (const key of committed) await deps.store.delete(key);
    return { status: 'lost' };
  } catch (err) {
    await Promise.all(pending.slice(committed.length).map((p) => p.discard().catch(() => {})));
    for (const key of committed) await deps.store.delete(key).catch(() => {});
    throw err;
  }
}

/** The store must hold exactly the bytes produced (for an encrypted file it saw ciphertext: nothing to compare). */
function checkStored(pending: PendingObject, meter: MeteredHash, encrypted: boolean): void {
  if (!encrypted && (pending.sha256 !== meter.sha256 || pending.bytes !== meter.bytes))
    throw new FerryError(
      'internal',
      `checksum mismatch between the produced file (${meter.bytes} bytes, sha256 ${meter.sha256}) and ` +
        `the stored object "${pending.key}" (${pending.bytes} bytes, sha256 ${pending.sha256})`,
    );
}
