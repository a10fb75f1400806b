import type { ExportJobs } from './repository.ts';

/** Why an attempt stopped before finishing, other than an error. */
export type StopReason = 'cancelled' | 'superseded';

/** Thrown (as an abort reason) when an attempt no longer owns its export. */
export class ExportStopped extends Error {
  override name = 'ExportStopped';
  readonly reason: StopReason;
  constructor(reason: StopReason) {
    super(
      reason === 'cancelled'
        ? 'the export was cancelled'
        : 'another attempt took the export over (this worker was presumed dead)',
    );
    this.reason = reason;
  }
}

/**
 * Progress of one attempt: counters are kept in memory and written at most once per
 * `intervalMs` (progress events arrive per batch of rows; a write each time would
 * cost more than the export). Each write doubles as a lease check: when the export
 * was cancelled or taken over, `onLost` is called with the reason, once.
 */
export class ProgressTracker {
  records = 0;
  estimated: number | null = null;
  bytes = 0;
  readonly #jobs: ExportJobs;
  readonly #exportId: string;
  readonly #attemptId: string;
  readonly #now: () => Date;
  readonly #onLost: (reason: StopReason) => void;
  readonly #timer: NodeJS.Timeout;
  #writing: Promise<void> | undefined;
  #lost = false;
  #stopped = false;

  constructor(options: {
    jobs: ExportJobs;
    exportId: string;
    attemptId: string;
    now: () => Date;
    intervalMs: number;
    onLost: (reason: StopReason) => void;
  }) {
    this.#jobs = options.jobs;
    this.#exportId = options.exportId;
    this.#attemptId = options.attemptId;
    this.#now = options.now;
    this.#onLost = options.onLost;
    this.#timer = setInterval(() => void this.flush(), options.intervalMs);
    this.#timer.unref();
  }

  update(progress: { records?: number; estimated?: number | null; bytes?: number }): void {
    if (progress.records !== undefined) this.records = progress.records;
    if (progress.estimated !== undefined) this.estimated = progress.estimated;
    if (progress.bytes !== undefined) this.bytes = progress.bytes;
  }

  snapshot() {
    return { records: this.records, estimated: this.estimated, bytes: this.bytes, at: this.#now() };
  }

  /** Writes the counters now (also when unchanged: the write is the lease check). */
  flush(): Promise<void> {
    if (this.#lost || this.#stopped) return Promise.resolve();
    this.#writing ??= this.#write().finally(() => {
      this.#writing = undefined;
    });
    return this.#writing;
  }

  async #write(): Promise<void> {
    let owned: boolean;
    try {
      owned = await this.#jobs.progress(this.#exportId, this.#attemptId, this.snapshot());
    } catch {
      // A failed progress write (database briefly unreachable) is not a reason to stop the
      // export; the next tick tries again.
      return;
    }
    if (owned || this.#lost || this.#stopped) return;
    this.#lost = true;
    const row = await this.#jobs.load(this.#exportId).catch(() => undefined);
    this.#onLost(row?.status === 'cancelled' || !row ? 'cancelled' : 'superseded');
  }

  /** No more writes or lease checks: the attempt has finished producing (or failed). */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }
}
