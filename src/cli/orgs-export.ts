import { lstat } from 'node:fs/promises';
import { packageDatasets, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { RequestPackageKind } from '../domain/package-kind.ts';
import { fileSpec } from '../export-requests/export-job.ts';
import { startLocalExport } from '../export-requests/local-export.ts';
import { organisationFileSpec, organisationRoot } from '../export-requests/organisation-export.ts';
import type { RunProgress } from '../pipeline/run.ts';
import { planOrganisationExport, recordClientShares } from '../organisations/exports.ts';
import { findOrganisation, operatorCaller } from '../organisations/model.ts';
import type { ExportBody } from '../export-requests/export-body.ts';
import { withDatabase } from './context.ts';
import { createProgress, formatBytes } from './progress.ts';
import { runToOutput } from './recorded-export.ts';

const list = (value: unknown) =>
  typeof value === 'string'
    ? value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : undefined;

/**
 * `ferry orgs export <org>`: the organisation's export across its tenants, run here as the
 * worker runs it (docs/organisations.md#aggregated-exports), by the operator as an admin of every
 * tenant. Recorded in the home tenant (actor `cli`) and in each client tenant's trail and count.
 */
export async function runOrganisationExport(
  ref: string,
  flags: Record<string, string | boolean | undefined>,
): Promise<void> {
  const out = typeof flags.out === 'string' ? flags.out : undefined;
  const toStdout = !out || out === '-';
  if (!toStdout && !flags.overwrite) {
    const existing = await lstat(out).catch(() => null);
    if (existing)
      throw new FerryError(
        'package_exists',
        `${out} already exists: Ferry never overwrites an export; choose another --out, remove it, or pass --overwrite`,
      );
  }
  const kind = (flags.package ?? 'zip') as RequestPackageKind;
  const datasets = list(flags.datasets) ?? (kind === 'none' ? [] : packageDatasets(REFERENCE_DATAMAP));
  if (datasets.length === 0) throw invalid('--datasets', 'name the dataset to export with --package none');
  const body = {
    datasets,
    package: kind,
    ...(typeof flags.format === 'string' ? { format: flags.format as ExportBody['format'] } : {}),
    ...(typeof flags.pii === 'string' ? { pii: flags.pii as ExportBody['pii'] } : {}),
    ...(typeof flags.from === 'string' ? { from: flags.from } : {}),
    ...(typeof flags.to === 'string' ? { to: flags.to } : {}),
    ...(list(flags.tenants) ? { tenants: list(flags.tenants) } : {}),
  };
  await withDatabase(async (database) => {
    const organisation = await findOrganisation(database, ref);
    const caller = await operatorCaller(database, organisation);
    const now = new Date();
    const planned = await planOrganisationExport(database, caller, body, now);
    const home = { id: caller.home.tenantId, plan: caller.home.plan };
    const local = await startLocalExport(database, home, planned.config);
    await recordClientShares(database, planned, local.id, now);
    const progress = createProgress('export', 'records');
    try {
      const tar = kind === 'tar.gz';
      const { file } = await runToOutput(
        local,
        organisationFileSpec(database, local.row, {}, fileSpec),
        out,
        {
          defaultName: `${organisationRoot(local.row.created_at)}.${tar ? 'tar.gz' : 'zip'}`,
          contentType: tar ? 'application/gzip' : 'application/zip',
        },
        (p: RunProgress) => progress.update(p.records ?? 0, null, { bytes: formatBytes(p.bytes ?? 0) }),
      ).catch(async (err: unknown) => {
        throw await local.fail(err);
      });
      progress.stop();
      if (!toStdout) {
        const tenants = planned.config.organisation!.tenants.map((t) => t.slug).join(', ');
        process.stderr.write(
          `wrote ${out} (${file.records} records from ${tenants}; ${formatBytes(file.bytes)}, sha256 ${file.sha256})\n`,
        );
      }
    } finally {
      progress.stop();
    }
  });
}
