import { lstat, mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { loadTenant } from '../collect/tenant.ts';
import { packageDatasets, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { estimatePackage } from '../export-requests/export-job.ts';
import { stamp } from '../lib/stamp.ts';
import { exportCompanyPackage, writeCompanyPackage } from '../pipeline/company-package.ts';
import type { RunProgress } from '../pipeline/run.ts';
import { cliExportConfig, recordedExport, runToOutput } from './recorded-export.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { ArchiveKind } from '../domain/package-kind.ts';
import { DEFAULT_PII_LEVEL, parsePiiLevel } from '../domain/pii-level.ts';
import { withDatabase } from './context.ts';
import { createProgress, formatBytes } from './progress.ts';

interface PackageFlags {
  tenant: string;
  package?: ArchiveKind;
  datasets?: string;
  format?: string;
  pii?: string;
  from?: string;
  to?: string;
  csvGuard?: boolean;
  out?: string;
  /** Replace a package that is already at `out`. */
  overwrite?: boolean;
}

/** Refuses an `--out` that exists (`package_exists`) unless `--overwrite` was given. */
async function checkTarget(out: string, overwrite: boolean): Promise<void> {
  if (overwrite) return;
  const existing = await lstat(out).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (existing)
    throw new FerryError(
      'package_exists',
      `${out} already exists: Ferry never overwrites a package; choose another --out, remove it, or pass --overwrite`,
    );
}

/** `ferry export --tenant T --package zip|tar.gz|directory [--datasets a,b] [--format json] --out PATH`. */
export async function runPackageCommand(flags: PackageFlags): Promise<void> {
  const kind = flags.package!;
  const toStdout = !flags.out || flags.out === '-';
  if (kind === 'directory' && toStdout) throw invalid('--out', 'a directory package needs --out DIR');
  if (flags.format === 'markdown')
    throw invalid(
      '--format',
      `a package writes its tabular files as ${EXPORT_FORMATS.join(', ')}`,
      EXPORT_FORMATS,
    );
  // Before the export is recorded and counted: a refused target costs nothing.
  if (!toStdout) await checkTarget(flags.out!, flags.overwrite ?? false);
  const request = {
    tenantId: flags.tenant,
    kind,
    datasets: flags.datasets
      ?.split(',')
      .map((d) => d.trim())
      .filter(Boolean),
    format: flags.format,
    pii: flags.pii ? parsePiiLevel(flags.pii, '--pii') : DEFAULT_PII_LEVEL,
    from: flags.from,
    to: flags.to,
    csvGuard: flags.csvGuard ?? true,
  };
  await withDatabase(async (database) => {
    const tenant = await loadTenant(database, request.tenantId);
    const scoped = { ...request, tenantId: tenant.id };
    const config = cliExportConfig({
      datasets: [...(request.datasets ?? packageDatasets(REFERENCE_DATAMAP))],
      format: request.format ?? null,
      package: kind,
      from: request.from ?? null,
      to: request.to ?? null,
      pii: request.pii,
    });
    const progress = createProgress('package', 'records');
    const shown = { records: 0, bytes: 0, estimated: null as number | null };
    const onProgress = (p: RunProgress) => {
      if (p.records !== undefined) p = { ...p, records: Math.max(shown.records, p.records) };
      Object.assign(shown, p);
      progress.update(shown.records, shown.estimated, { bytes: formatBytes(shown.bytes) });
    };
    const estimate = () => estimatePackage(database, tenant.id, config);
    try {
      await recordedExport(database, tenant, config, async (local) => {
        // Progress arrives per dataset; the package's count is their sum.
        const perDataset = new Map<string, number>();
        const options = {
          exportId: local.id,
          signal: local.signal,
          onProgress: (p: { dataset: string; records: number }) => {
            perDataset.set(p.dataset, Math.max(perDataset.get(p.dataset) ?? 0, p.records));
            const records = [...perDataset.values()].reduce((a, b) => a + b, 0);
            local.progress({ records });
            onProgress({ records });
          },
        };
        if (kind === 'directory') {
          const estimated = await estimate().catch(() => null);
          local.progress({ estimated });
          onProgress({ estimated });
          const temp = `${flags.out}.partial-${process.pid}`;
          await mkdir(temp, { recursive: true });
          try {
            const outcome = await exportCompanyPackage(database, scoped, { dir: temp }, options);
            await local.complete(
              { name: path.basename(flags.out!), contentType: 'inode/directory' },
              { bytes: outcome.bytes, records: outcome.records, sha256: outcome.sha256 },
            );
            // Checked before the run; something that appeared since is not ours to remove.
            if (flags.overwrite) await rm(flags.out!, { recursive: true, force: true });
            else await checkTarget(flags.out!, false);
            await rename(temp, flags.out!);
            progress.stop();
            process.stderr.write(`wrote ${outcome.root} (${outcome.records} records) into ${flags.out}\n`);
          } catch (err) {
            await rm(temp, { recursive: true, force: true });
            throw err;
          }
          return;
        }
        const zip = kind === 'zip';
        const { file, produced } = await runToOutput(
          local,
          {
            estimate,
            produce: async (out, ctx) => {
              const written = await writeCompanyPackage(database, scoped, out, {
                ...options,
                signal: ctx.signal,
              });
              return { records: written.records, root: written.root };
            },
          },
          flags.out,
          {
            defaultName: `company-export-${stamp(new Date())}.${zip ? 'zip' : 'tar.gz'}`,
            contentType: zip ? 'application/zip' : 'application/gzip',
          },
          onProgress,
        );
        progress.stop();
        if (!toStdout) {
          process.stderr.write(
            `wrote ${produced.root} (${file.records} records) to ${flags.out} (${formatBytes(file.bytes)}, sha256 ${file.sha256})\n`,
          );
        }
      });
    } finally {
      progress.stop();
    }
  });
}
