import type { SecretBox } from '../crypto/secret-box.ts';
import { presentTarget, targetLabel } from '../deliver/targets.ts';
import { maskSecret } from '../lib/secret-box.ts';
import { type Frequency, type FrequencyType, nextRuns } from './frequency.ts';
import type { RunFile, ScheduleConfig } from './model.ts';
import type { DeliveryRow, RunRow, ScheduleRow } from './repository.ts';
import type { RunConfig } from './run-file.ts';

export const SCHEDULES_PATH = '/api/v1/schedules';
const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

/**
 * The API's view of a schedule: an allow-list of fields; target secrets masked. With
 * `restricted` (a caller whose role may not run the schedule's export) the targets'
 * account identifiers (`access_key_id`) are masked too.
 */
export async function presentSchedule(
  row: ScheduleRow,
  options: {
    secrets: SecretBox;
    now: Date;
    lastRun?: RunRow | undefined;
    checkpoints?: CheckpointRow[];
    restricted?: boolean;
  },
) {
  const config = row.config;
  const self = `${SCHEDULES_PATH}/${row.id}`;
  const timing = { frequency: row.frequency, cron: row.cron, timezone: row.timezone };
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    frequency: presentFrequency(row.frequency),
    time: row.time_of_day,
    timezone: row.timezone,
    cron: row.cron,
    ...(await presentConfig(config, options.secrets, options.restricted ?? false)),
    next_run_at: iso(row.next_run_at),
    next_runs:
      row.status === 'active' && row.next_run_at
        ? [row.next_run_at, ...nextRuns(timing, row.next_run_at, 2)].map((d) => d.toISOString())
        : [],
    last_run: options.lastRun
      ? {
          id: options.lastRun.id,
          run_number: options.lastRun.run_number,
          status: options.lastRun.status,
          due_at: options.lastRun.due_at.toISOString(),
          finished_at: iso(options.lastRun.finished_at),
        }
      : null,
    ...(options.checkpoints
      ? {
          checkpoints: options.checkpoints.map((c) => ({
            dataset: c.dataset,
            run_id: c.run_id,
            updated_at: c.updated_at.toISOString(),
          })),
        }
      : {}),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    links: { self, runs: `${self}/runs`, run: `${self}/run` },
  };
}

function presentFrequency(frequency: Frequency): {
  type: FrequencyType;
  days?: string[];
  day_of_month?: number | 'last';
  expression?: string;
} {
  switch (frequency.type) {
    case 'weekly':
      return { type: 'weekly', days: [...frequency.days] };
    case 'monthly':
      return { type: 'monthly', day_of_month: frequency.day_of_month };
    case 'cron':
      return { type: 'cron', expression: frequency.expression };
    default:
      return { type: frequency.type };
  }
}

export interface CheckpointRow {
  dataset: string;
  run_id: string | null;
  updated_at: Date;
}

/** Target fields that name an account: shown only to callers who may run the schedule. */
const ACCOUNT_FIELDS = ['access_key_id'] as const;

async function presentConfig(config: ScheduleConfig, secrets: SecretBox, restricted: boolean) {
  const targets = await Promise.all(
    config.targets.map(async ({ target, required }) => {
      const shown = await presentTarget(target, secrets);
      if (restricted)
        for (const field of ACCOUNT_FIELDS)
          if (typeof shown[field] === 'string') shown[field] = maskSecret(shown[field]);
      return { ...shown, type: target.type, required };
    }),
  );
  return {
    datasets: config.datasets.map((d) => ({ ...d })),
    format: config.format,
    compression: config.compression,
    package: config.package,
    pii: config.pii,
    targets,
    notifications: config.notifications,
    retention: config.retention,
    layout: config.layout ?? 'files',
  };
}

export type ScheduleView = Awaited<ReturnType<typeof presentSchedule>>;

/** One run as the history shows it: status, counts, size, checksums and delivery results per target. */
export function presentRun(row: RunRow, deliveries: readonly DeliveryRow[]) {
  const config = row.config as RunConfig;
  const files = row.files.filter((f) => f.state === 'ready');
  // A lake run makes no file: its targets' deliveries are recorded under the run's id.
  const lake = config.layout === 'lake';
  const delivered = lake ? [{ export_id: row.id }] : files;
  return {
    id: row.id,
    schedule_id: row.schedule_id,
    run_number: row.run_number,
    trigger: row.trigger,
    status: row.status,
    due_at: row.due_at.toISOString(),
    created_at: row.created_at.toISOString(),
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
    attempts: row.attempts,
    records: lake ? Number(row.records) : files.reduce((n, f) => n + (f.records ?? 0), 0),
    tombstones: lake ? 0 : files.reduce((n, f) => n + (f.tombstones ?? 0), 0),
    bytes: lake ? Number(row.bytes) : files.reduce((n, f) => n + (f.bytes ?? 0), 0),
    checksum: files.length === 1 ? { algorithm: 'sha256' as const, value: files[0]!.sha256 ?? '' } : null,
    files: files.map(presentFile),
    deliveries: config.targets.map(({ target, required }, index) => {
      const mine = deliveries.filter((d) => d.target_index === index);
      const perFile = delivered.map((f) => {
        const rows = mine.filter((d) => d.export_id === f.export_id);
        const delivered = rows.find((d) => d.status === 'delivered');
        const last = delivered ?? rows.at(-1);
        return {
          export_id: f.export_id,
          status: delivered ? ('delivered' as const) : last ? ('failed' as const) : ('pending' as const),
          attempts: rows.reduce((n, d) => n + d.attempts, 0),
          location: last?.location ?? null,
          error: delivered ? null : (last?.error ?? null),
          error_code: delivered ? null : (last?.error_code ?? null),
          checksum_verified: delivered?.checksum_verified ?? false,
          at: iso(last?.created_at),
        };
      });
      const status: 'delivered' | 'failed' | 'pending' =
        perFile.length > 0 && perFile.every((f) => f.status === 'delivered')
          ? 'delivered'
          : perFile.some((f) => f.status === 'failed')
            ? 'failed'
            : 'pending';
      const label = mine[0]?.target_label ?? targetLabel(target);
      return {
        target: { index, type: target.type, name: target.name ?? null, label, required },
        status,
        files: perFile,
      };
    }),
    checkpoint_advanced: row.checkpoint_advanced,
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
  };
}

function presentFile(f: RunFile) {
  return {
    export_id: f.export_id,
    name: f.name ?? '',
    datasets: f.datasets,
    bytes: f.bytes ?? 0,
    records: f.records ?? 0,
    tombstones: f.tombstones ?? 0,
    sha256: f.sha256 ?? '',
    counts: f.counts ?? {},
    expires_at: f.expires_at ?? null,
    links: { export: `/api/v1/exports/${f.export_id}`, download: `/api/v1/exports/${f.export_id}/download` },
  };
}

export type RunView = ReturnType<typeof presentRun>;
