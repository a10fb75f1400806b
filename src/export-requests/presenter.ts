import type { ExportConfig } from '../domain/export-config.ts';
import { type ExportFileRow, type ExportRow, isLocalExport } from './repository.ts';
import type { ExportStatus } from '../domain/export-state.ts';
import { splitFileRole } from './split-names.ts';

export const EXPORTS_PATH = '/api/v1/exports';

/** What the API shows of an export: an allow-list of fields (the response schema enforces it again). */
export interface ExportView {
  id: string;
  status: ExportStatus;
  kind: 'dataset' | 'package';
  datasets: string[];
  request: Omit<ExportConfig, 'recipients' | 'history_from' | 'split_size' | 'organisation'> & {
    encryption: { recipients: string[] } | null;
    split_size: number | null;
    /** An organisation's export: the organisation and the tenants it runs in, one folder each. */
    organisation?: OrganisationView;
  };
  progress: {
    records: number;
    records_estimated: number | null;
    bytes: number;
    percentage: number | null;
    eta_seconds: number | null;
    updated_at: string | null;
  };
  files: {
    id: string;
    name: string;
    bytes: number;
    records: number;
    sha256: string;
    content_type: string;
    encrypted: boolean;
  }[];
  /** A package split into parts: the parts, their manifest and checksums (null for one file). */
  split: SplitView | null;
  error: { code: string; message: string } | null;
  attempts: number;
  download_count: number;
  repeat_of: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  expires_at: string | null;
  files_deleted_at: string | null;
  links: { self: string; download?: string; repeat: string };
}

export interface OrganisationView {
  id: string;
  name: string;
  tenants: { id: string; slug: string; name: string; folder: string }[];
}

/** A file of a split package as the API lists it, with the API link that issues its download link. */
export interface SplitFileView {
  id: string;
  name: string;
  bytes: number;
  sha256: string;
  download?: string;
}

export interface SplitView {
  /** The largest part, in bytes, as requested. */
  size: number;
  /** The parts in order (empty until the export is completed). */
  parts: (SplitFileView & { part: number; records: number })[];
  /** `<name>.parts.json`: which files each part holds; its SHA-256 is the export's checksum. */
  manifest: SplitFileView | null;
  /** `<name>.parts.sha256`: `sha256sum -c` lines for the parts and the manifest. */
  checksums: SplitFileView | null;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

function splitView(row: ExportRow, files: readonly ExportFileRow[], self: string): SplitView | null {
  const size = row.config.split_size;
  if (size === undefined || size === null) return null;
  const view: SplitView = { size, parts: [], manifest: null, checksums: null };
  if (row.status !== 'completed') return view;
  const linked = !isLocalExport(row);
  const describe = (f: ExportFileRow): SplitFileView => ({
    id: f.id,
    name: f.name,
    bytes: Number(f.bytes),
    sha256: f.sha256,
    ...(linked ? { download: `${self}/download?file=${encodeURIComponent(f.name)}` } : {}),
  });
  for (const file of files) {
    const role = splitFileRole(file.name);
    if (role?.role === 'part')
      view.parts.push({ part: role.number, ...describe(file), records: Number(file.records) });
    else if (role?.role === 'manifest') view.manifest = describe(file);
    else if (role?.role === 'checksums') view.checksums = describe(file);
  }
  view.parts.sort((a, b) => a.part - b.part);
  return view;
}

export function presentExport(row: ExportRow, files: readonly ExportFileRow[], now: Date): ExportView {
  const { recipients, history_from: _window, split_size: splitSize, organisation, ...config } = row.config;
  const self = `${EXPORTS_PATH}/${row.id}`;
  return {
    id: row.id,
    status: row.status,
    kind: row.kind,
    datasets: row.datasets,
    request: {
      ...config,
      encryption: recipients.length ? { recipients } : null,
      split_size: splitSize ?? null,
      ...(organisation
        ? {
            organisation: {
              id: organisation.id,
              name: organisation.name,
              tenants: organisation.tenants.map((t) => ({
                id: t.id,
                slug: t.slug,
                name: t.name,
                folder: `tenants/${t.folder}`,
              })),
            },
          }
        : {}),
    },
    progress: progressOf(row, now),
    files:
      row.status === 'completed'
        ? files.map((f) => ({
            id: f.id,
            name: f.name,
            bytes: Number(f.bytes),
            records: Number(f.records),
            sha256: f.sha256,
            content_type: f.content_type,
            encrypted: f.encrypted,
          }))
        : [],
    split: splitView(row, files, self),
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    attempts: row.attempts,
    download_count: row.download_count,
    repeat_of: row.repeat_of,
    created_at: row.created_at.toISOString(),
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
    expires_at: iso(row.expires_at),
    files_deleted_at: iso(row.files_deleted_at),
    links: {
      self,
      ...(row.status === 'completed' && !isLocalExport(row) ? { download: `${self}/download` } : {}),
      repeat: `${self}/repeat`,
    },
  };
}

/** Percentage done and seconds left from the counters: what the API and the live stream show. */
export function progressFigures(
  input: { status: string; records: number; estimated: number | null; startedAt: Date | null },
  now: Date,
): { percentage: number | null; eta_seconds: number | null } {
  const { records, estimated } = input;
  if (input.status === 'completed') return { percentage: 100, eta_seconds: 0 };
  if (estimated === null || (input.status !== 'running' && input.status !== 'packaging'))
    return { percentage: null, eta_seconds: null };
  const fraction = estimated === 0 ? 1 : Math.min(1, records / estimated);
  let eta: number | null = null;
  if (input.startedAt && fraction > 0) {
    const elapsed = Math.max(0, (now.getTime() - input.startedAt.getTime()) / 1000);
    eta = Math.round((elapsed * (1 - fraction)) / fraction);
  }
  return { percentage: Math.round(fraction * 1000) / 10, eta_seconds: eta };
}

function progressOf(row: ExportRow, now: Date): ExportView['progress'] {
  const records = Number(row.records_done);
  const estimated = row.records_estimated === null ? null : Number(row.records_estimated);
  const { percentage, eta_seconds: eta } = progressFigures(
    { status: row.status, records, estimated, startedAt: row.started_at },
    now,
  );
  return {
    records,
    records_estimated: estimated,
    bytes: Number(row.bytes_done),
    percentage,
    eta_seconds: eta,
    updated_at: iso(row.progress_at),
  };
}
