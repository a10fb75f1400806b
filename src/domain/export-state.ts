/**
 * The export state machine, persisted in `export_requests.status`:
 *
 * ```
 * queued → running → packaging → completed → expired
 *   │  ↑      │  │        │  │
 *   │  └──────┘  │        │  └→ queued (retry after a failed attempt)
 *   │  (retry)   └→ failed ←┘
 *   └→ cancelled ← running, packaging
 * ```
 *
 * - `queued`: accepted and waiting for a worker (also between retries).
 * - `running`: a worker is collecting and formatting the data.
 * - `packaging`: the data is written; the file is being sealed (checksum verified,
 *   committed to storage). An export is `completed` only once its file is committed.
 * - `completed`: the files can be downloaded until `expires_at`.
 * - `failed`, `cancelled`: final; no file is kept.
 * - `expired`: the files were removed (retention period over, or deleted on request).
 */
export const EXPORT_STATUSES = [
  'queued',
  'running',
  'packaging',
  'completed',
  'failed',
  'cancelled',
  'expired',
] as const;
export type ExportStatus = (typeof EXPORT_STATUSES)[number];

/** States in which a worker may still be (or soon be) working on the export. */
export const ACTIVE_STATUSES = ['queued', 'running', 'packaging'] as const satisfies readonly ExportStatus[];

/** States an export never leaves. */
export const FINAL_STATUSES = ['failed', 'cancelled', 'expired'] as const satisfies readonly ExportStatus[];

const TRANSITIONS: Readonly<Record<ExportStatus, readonly ExportStatus[]>> = {
  queued: ['running', 'cancelled', 'failed'],
  running: ['running', 'packaging', 'queued', 'failed', 'cancelled'],
  packaging: ['completed', 'running', 'queued', 'failed', 'cancelled'],
  completed: ['expired'],
  failed: [],
  cancelled: [],
  expired: [],
};

export function canTransition(from: ExportStatus, to: ExportStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** The states from which `to` can be reached: the `WHERE status IN (...)` of a transition. */
export function predecessors(to: ExportStatus): ExportStatus[] {
  return EXPORT_STATUSES.filter((from) => TRANSITIONS[from].includes(to));
}

export function isActive(status: ExportStatus): boolean {
  return (ACTIVE_STATUSES as readonly ExportStatus[]).includes(status);
}
