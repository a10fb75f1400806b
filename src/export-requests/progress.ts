import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import type { ExportJobs } from './repository.ts';

/**
 * A running export's progress as the live stream announces it (docs/stream.md, the
 * `exports` stream): sent with `pg_notify` on the export channel of the schema, at most
 * once per progress write (once a second) and once when the export ends, so every
 * process's stream listener hears it, whichever worker runs the export.
 */
export interface ProgressNotice {
  readonly tenant_id: string;
  readonly export_id: string;
  /** Who asked for it: the stream shows an export to the roles that see every export, and to its owner. */
  readonly api_key_id: string | null;
  readonly team_member_id: string | null;
  readonly datasets: readonly string[];
  readonly status: string;
  readonly records: number;
  readonly records_estimated: number | null;
  readonly bytes: number;
  readonly percentage: number | null;
  readonly eta_seconds: number | null;
  readonly at: string;
}

/** The export progress channel of the schema that holds `export_requests` (63 bytes at most, as in SQL). */
export async function exportProgressChannel(database: Database): Promise<string | null> {
  const result = await sql<{ channel: string }>`
    SELECT left('ferry_exports_' || n.nspname, 63) AS channel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = to_regclass('export_requests')`.execute(database.db);
  return result.rows[0]?.channel ?? null;
}

/** Announces progress; a failed announcement costs a live update, never the export. */
export async function announceProgress(
  database: Database,
  channel: string,
  notice: ProgressNotice,
): Promise<void> {
  await sql`SELECT pg_notify(${channel}, ${JSON.stringify(notice)})`
    .execute(database.db)
    .catch(() => undefined);
}

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
  readonly #onWritten: ((snapshot: ReturnType<ProgressTracker['snapshot']>) => void) | undefined;
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
    /** After each write that found the export still owned: the live stream's announcement. */
    onWritten?: (snapshot: ReturnType<ProgressTracker['snapshot']>) => void;
  }) {
    this.#jobs = options.jobs;
    this.#exportId = options.exportId;
    this.#attemptId = options.attemptId;
    this.#now = options.now;
    this.#onLost = options.onLost;
    this.#onWritten = options.onWritten;
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
    const snapshot = this.snapshot();
    try {
      owned = await this.#jobs.progress(this.#exportId, this.#attemptId, snapshot);
    } catch {
      // A failed progress write (database briefly unreachable) is not a reason to stop the
      // export; the next tick tries again.
      return;
    }
    if (owned && !this.#stopped) this.#onWritten?.(snapshot);
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
