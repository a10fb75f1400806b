import path from 'node:path';
import type { TenantInfo } from '../collect/tenant.ts';
import type { Database } from '../db/database.ts';
import type { ExportConfig } from '../domain/export-config.ts';
import { TENANT_SCOPE } from '../domain/export-scope.ts';
import { type LocalExport, startLocalExport } from '../export-requests/local-export.ts';
import { type FileSpec, type ProducedFile, type RunProgress, runFile } from '../pipeline/run.ts';
import { fileTarget, streamTarget } from './file-target.ts';

/** An export request of the command line in the API's words, for its record. */
export function cliExportConfig(
  fields: Partial<ExportConfig> & Pick<ExportConfig, 'datasets' | 'pii'>,
): ExportConfig {
  return {
    scope: TENANT_SCOPE,
    format: null,
    compression: null,
    package: 'none',
    from: null,
    to: null,
    filters: {},
    columns: null,
    timezone: null,
    options: {},
    bom: false,
    csv_guard: true,
    recipients: [],
    ...fields,
  };
}

/**
 * Runs `fn` as a recorded export (see `startLocalExport`): accepted (quotas, audit,
 * monthly count) before it starts, failed in the record when `fn` throws.
 */
export async function recordedExport<T>(
  database: Database,
  tenant: TenantInfo,
  config: ExportConfig,
  fn: (local: LocalExport) => Promise<T>,
): Promise<T> {
  const local = await startLocalExport(database, tenant, config);
  try {
    return await fn(local);
  } catch (err) {
    throw await local.fail(err);
  }
}

/**
 * The pipeline run of one file, as the worker runs it, into a local file (written
 * atomically) or stdout (`-` or no `--out`: streamed as produced). Progress goes to the
 * export's record and to `onProgress` (the bar).
 */
export async function runToOutput<R extends { records: number }>(
  local: LocalExport,
  spec: FileSpec<R>,
  out: string | undefined,
  output: { defaultName: string; contentType: string },
  onProgress: (progress: RunProgress) => void,
): Promise<{ file: ProducedFile; produced: R }> {
  const toStdout = !out || out === '-';
  const outcome = await runFile(
    { store: toStdout ? streamTarget(process.stdout) : fileTarget(out) },
    { maxBytes: local.maxBytes, tooLarge: local.tooLarge, ...spec },
    local.sink({ name: toStdout ? output.defaultName : path.basename(out), contentType: output.contentType }),
    {
      signal: local.signal,
      onProgress: (p) => {
        local.progress(p);
        onProgress(p);
      },
    },
  );
  if (outcome.status === 'lost') throw local.signal.reason ?? new Error('the export was cancelled');
  return { file: outcome.file, produced: outcome.produced };
}
