import { lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { loadTenant } from '../collect/tenant.ts';
import { packageDatasets, REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { estimatePackage } from '../export-requests/export-job.ts';
import { stamp } from '../lib/stamp.ts';
import { exportCompanyPackage, writeCompanyPackage } from '../pipeline/company-package.ts';
import { type SplitNames, splitPackageProducer } from '../pipeline/producers.ts';
import { type RunProgress, runFileSet } from '../pipeline/run.ts';
import { splitFileNames, splitFileRole } from '../export-requests/split-names.ts';
import type { LocalExport } from '../export-requests/local-export.ts';
import { parseSplitSize } from '../domain/split-size.ts';
import type { PackageRequest } from '../pipeline/company-package.ts';
import type { Database } from '../db/database.ts';
import { folderTarget } from './file-target.ts';
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
  /** Parts of at most this size (`2GB`, or bytes), written beside `out`. */
  splitSize?: string;
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

/** Where a split package goes: the folder of `--out` and the names its files take there. */
interface SplitOutput {
  readonly dir: string;
  readonly base: string;
  readonly partSize: number;
  readonly names: SplitNames;
}

/**
 * `--out acme.zip --split-size 2GB`: parts `acme.part001.zip`, … beside it, with
 * `acme.parts.json` and `acme.parts.sha256`.
 */
function splitOutput(flags: PackageFlags, kind: 'zip' | 'tar.gz'): SplitOutput {
  const partSize = parseSplitSize(flags.splitSize, '--split-size');
  const out = flags.out!;
  const base = path.basename(out).replace(/\.(zip|tar\.gz|tgz)$/, '');
  return { dir: path.dirname(path.resolve(out)), base, partSize, names: splitFileNames(base, kind, false) };
}

/** Files in the folder that belong to a split package named `base` (parts, manifest, checksums). */
async function splitFilesIn(split: SplitOutput): Promise<string[]> {
  const names = await readdir(split.dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  return names.filter((name) => name.startsWith(`${split.base}.`) && splitFileRole(name) !== null);
}

/**
 * A split package (`--split-size`), as the worker writes one: the parts, the manifest and
 * the checksums, recorded together once all are written.
 */
async function runSplitPackage(
  database: Database,
  local: LocalExport,
  request: PackageRequest & { kind: 'zip' | 'tar.gz' },
  split: SplitOutput,
  options: {
    estimate: () => Promise<number | null>;
    overwrite: boolean;
    onProgress: (p: RunProgress) => void;
  },
): Promise<string> {
  // Checked before the run; something that appeared since is not ours to replace.
  if (!options.overwrite) await checkSplitTarget(split, false);
  await mkdir(split.dir, { recursive: true });
  const before = await splitFilesIn(split);
  const outcome = await runFileSet(
    { store: folderTarget(split.dir) },
    {
      maxBytes: local.maxBytes,
      tooLarge: local.tooLarge,
      estimate: options.estimate,
      produce: splitPackageProducer(database, request, {
        exportId: local.id,
        partSize: split.partSize,
        names: split.names,
      }),
    },
    local.setSink((name) => splitFileRole(name)?.role === 'part'),
    {
      signal: local.signal,
      onProgress: (p) => {
        local.progress(p);
        options.onProgress(p);
      },
    },
  );
  if (outcome.status === 'lost') throw local.signal.reason ?? new Error('the export was cancelled');
  // Parts of an earlier, larger package under the same name would look like this one's.
  const written = new Set(outcome.files.map((f) => f.name));
  for (const name of before) if (!written.has(name)) await rm(path.join(split.dir, name), { force: true });
  const { produced } = outcome;
  const bytes = produced.parts.reduce((n, p) => n + p.bytes, 0);
  return (
    `wrote ${produced.root} (${produced.records} records) in ${produced.parts.length} parts to ${split.dir} ` +
    `(${formatBytes(bytes)}); manifest ${produced.manifest.name} (sha256 ${produced.manifest.sha256}), ` +
    `check with: sha256sum -c ${produced.checksums.name}\n`
  );
}

/** Refuses to write a split package over one of the same name (`package_exists`) unless `--overwrite`. */
async function checkSplitTarget(split: SplitOutput, overwrite: boolean): Promise<void> {
  if (overwrite) return;
  const existing = await splitFilesIn(split);
  if (existing.length)
    throw new FerryError(
      'package_exists',
      `${path.join(split.dir, existing[0]!)} already exists: Ferry never overwrites a package; choose another --out, remove it, or pass --overwrite`,
    );
}

/** `ferry export --tenant T --package zip|tar.gz|directory [--datasets a,b] [--format json] [--split-size 2GB] --out PATH`. */
export async function runPackageCommand(flags: PackageFlags): Promise<void> {
  const kind = flags.package!;
  const toStdout = !flags.out || flags.out === '-';
  if (kind === 'directory' && toStdout) throw invalid('--out', 'a directory package needs --out DIR');
  let split: SplitOutput | undefined;
  if (flags.splitSize !== undefined) {
    if (kind === 'directory')
      throw invalid('--split-size', 'splits a zip or tar.gz package into parts', ['zip', 'tar.gz']);
    if (toStdout) throw invalid('--out', 'a split package needs --out FILE: its parts are written beside it');
    split = splitOutput(flags, kind);
  }
  if (flags.format === 'markdown')
    throw invalid(
      '--format',
      `a package writes its tabular files as ${EXPORT_FORMATS.join(', ')}`,
      EXPORT_FORMATS,
    );
  // Before the export is recorded and counted: a refused target costs nothing.
  if (split) await checkSplitTarget(split, flags.overwrite ?? false);
  else if (!toStdout) await checkTarget(flags.out!, flags.overwrite ?? false);
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
      ...(split ? { split_size: split.partSize } : {}),
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
        if (split && kind !== 'directory') {
          const done = await runSplitPackage(database, local, { ...scoped, kind }, split, {
            estimate,
            overwrite: flags.overwrite ?? false,
            onProgress,
          });
          progress.stop();
          process.stderr.write(done);
          return;
        }
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
