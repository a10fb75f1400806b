import { mkdir, rename, rm } from 'node:fs/promises';
import { exportCompanyPackage } from '../pipeline/company-package.ts';
import { EXPORT_FORMATS } from '../format/types.ts';
import { writeFileAtomically } from '../lib/atomic-file.ts';
import { invalid } from '../domain/ferry-error.ts';
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
    const progress = createProgress('package', 'records');
    let done = 0;
    const onProgress = (p: { records: number }) => {
      done = Math.max(done, p.records);
      progress.update(done, null);
    };
    try {
      if (kind === 'directory') {
        const temp = `${flags.out}.partial-${process.pid}`;
        await mkdir(temp, { recursive: true });
        try {
          const outcome = await exportCompanyPackage(database, request, { dir: temp }, { onProgress });
          await rm(flags.out!, { recursive: true, force: true });
          await rename(temp, flags.out!);
          progress.stop();
          process.stderr.write(`wrote ${outcome.root} (${outcome.records} records) into ${flags.out}\n`);
        } catch (err) {
          await rm(temp, { recursive: true, force: true });
          throw err;
        }
        return;
      }
      const outcome = toStdout
        ? await exportCompanyPackage(database, request, process.stdout, { onProgress })
        : await writeFileAtomically(flags.out!, (out) =>
            exportCompanyPackage(database, request, out, { onProgress }),
          );
      progress.stop();
      if (!toStdout) {
        process.stderr.write(
          `wrote ${outcome.root} (${outcome.records} records) to ${flags.out} (${formatBytes(outcome.bytes)}, sha256 ${outcome.sha256})\n`,
        );
      }
    } finally {
      progress.stop();
    }
  });
}
