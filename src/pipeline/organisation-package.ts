import { PassThrough, Readable } from 'node:stream';
import type { ExportRequest } from '../collect/request.ts';
import type { Database } from '../db/database.ts';
import { createPackageWriter, type PackageWriter } from '../packaging/archive.ts';
import { FERRY_VERSION } from '../version.ts';
import { analyticsTotals } from './analytics-totals.ts';
import { type PackageRequest, writeCompanyPackage } from './company-package.ts';
import { writeDataset } from './export-dataset.ts';
import type { Producer } from './run.ts';

/**
 * An organisation's export across its tenants (docs/organisations.md#aggregated-exports): one
 * archive with `tenants/<slug>/` per tenant, holding exactly what that tenant's own export of the
 * same request holds (its company package's files, or its one dataset file), then
 * `organisation/analytics_totals.csv` (the analytics report summed over the tenants),
 * `metadata.json` and the archive's `checksums.sha256`, which covers every file.
 */

/** What one tenant's folder holds: its company package, or one dataset file. */
export type TenantContent =
  | { readonly package: PackageRequest }
  | { readonly dataset: ExportRequest; readonly file: string };

export interface TenantFolder {
  readonly tenant: { readonly id: string; readonly slug: string; readonly name: string };
  /** `tenants/<slug>`. */
  readonly folder: string;
  readonly content: TenantContent;
}

export interface OrganisationPackageSpec {
  readonly kind: 'zip' | 'tar.gz';
  /** The archive's root folder, e.g. `organisation-export-20261122-1403`. */
  readonly root: string;
  readonly exportId: string;
  readonly organisation: { readonly id: string; readonly name: string };
  readonly tenants: readonly TenantFolder[];
  /** Each tenant's analytics request for the totals, in tenant order. */
  readonly analytics: readonly ExportRequest[];
  /** The columns of the totals (the analytics report's, in its order). */
  readonly analyticsColumns: readonly string[];
  /** The request as the metadata shows it. */
  readonly request: Readonly<Record<string, unknown>>;
}

export const ANALYTICS_TOTALS_PATH = 'organisation/analytics_totals.csv';

/**
 * The organisation package as a file's bytes. Every tenant's folder and file is written with the
 * same export id and time, so a folder is byte for byte the tenant's own export made with them.
 */
export function organisationPackageProducer(database: Database, spec: OrganisationPackageSpec): Producer {
  return async (out, ctx) => {
    const now = new Date();
    const outer = createPackageWriter(spec.kind, out, { root: spec.root, mtime: now });
    let records = 0;
    const written: { id: string; slug: string; name: string; folder: string; records: number }[] = [];
    try {
      for (const folder of spec.tenants) {
        const before = records;
        const count = await writeTenant(database, outer, folder, {
          exportId: spec.exportId,
          now,
          signal: ctx.signal,
          progress: (n) => ctx.records(before + n),
        });
        records += count;
        written.push({ ...folder.tenant, folder: folder.folder, records: count });
      }
      let periods = -1;
      await outer.add(
        ANALYTICS_TOTALS_PATH,
        Readable.from(
          (async function* () {
            for await (const line of analyticsTotals(
              database,
              spec.analytics,
              spec.analyticsColumns,
              ctx.signal,
            )) {
              periods++;
              yield line;
            }
          })(),
        ),
      );
      const metadata = {
        export_id: spec.exportId,
        export_date: now.toISOString(),
        ferry_version: FERRY_VERSION,
        organisation: spec.organisation,
        request: spec.request,
        tenants: written,
        analytics_totals: { file: ANALYTICS_TOTALS_PATH, periods: Math.max(0, periods) },
        timestamps: 'ISO 8601, UTC',
      };
      await outer.add('metadata.json', `${JSON.stringify(metadata, null, 2)}\n`);
      await outer.finish();
    } catch (err) {
      outer.abort(err as Error);
      throw err;
    }
    return { records };
  };
}

async function writeTenant(
  database: Database,
  outer: PackageWriter,
  folder: TenantFolder,
  options: { exportId: string; now: Date; signal: AbortSignal; progress: (records: number) => void },
): Promise<number> {
  const { content } = folder;
  if ('package' in content) {
    const perDataset = new Map<string, number>();
    const done = await writeCompanyPackage(
      database,
      content.package,
      { parent: outer, folder: folder.folder },
      {
        exportId: options.exportId,
        now: options.now,
        signal: options.signal,
        onProgress: (p) => {
          perDataset.set(p.dataset, Math.max(perDataset.get(p.dataset) ?? 0, p.records));
          options.progress([...perDataset.values()].reduce((a, b) => a + b, 0));
        },
      },
    );
    return done.records;
  }
  const source = new PassThrough();
  const [done] = await Promise.all([
    writeDataset(database, content.dataset, source, {
      exportId: options.exportId,
      now: options.now,
      signal: options.signal,
      onProgress: (p) => options.progress(p.records),
    }),
    outer.add(`${folder.folder}/${content.file}`, source),
  ]);
  return done.records;
}
