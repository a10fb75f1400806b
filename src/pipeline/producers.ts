import { PassThrough } from 'node:stream';
import { type ChangeCursor, exportChanges } from '../collect/changes.ts';
import type { ExportRequest } from '../collect/request.ts';
import type { Database } from '../db/database.ts';
import type { ArchiveKind } from '../domain/package-kind.ts';
import { createPackageWriter, type PackageWriterOptions } from '../packaging/archive.ts';
import { type PackageRequest, writeCompanyPackage } from './company-package.ts';
import { writeDataset } from './export-dataset.ts';
import type { Producer } from './run.ts';

/** One dataset export (collect → format → compress) as a file's bytes. */
export function datasetProducer(
  database: Database,
  request: ExportRequest,
  options: { exportId: string; anonymizeKey?: string | undefined },
): Producer {
  return async (out, ctx) => {
    const written = await writeDataset(database, request, out, {
      exportId: options.exportId,
      ...(options.anonymizeKey ? { anonymizeKey: options.anonymizeKey } : {}),
      signal: ctx.signal,
      onProgress: (p) => ctx.records(p.records),
    });
    return { records: written.records };
  };
}

/** The company package (every chosen dataset, dictionary, viewer, checksums) as one archive. */
export function companyPackageProducer(
  database: Database,
  request: PackageRequest,
  options: { exportId: string },
): Producer {
  return async (out, ctx) => {
    // Progress arrives per dataset; the file's count is their sum.
    const perDataset = new Map<string, number>();
    const written = await writeCompanyPackage(database, request, out, {
      exportId: options.exportId,
      signal: ctx.signal,
      onProgress: (p) => {
        perDataset.set(p.dataset, Math.max(perDataset.get(p.dataset) ?? 0, p.records));
        ctx.records([...perDataset.values()].reduce((a, b) => a + b, 0));
      },
    });
    return { records: written.records };
  };
}

/** A file of a package: its path under the package root and what writes it. */
export interface PackageEntrySpec {
  readonly path: string;
  readonly produce: Producer;
}

/**
 * A package (ZIP or tar.gz) of entries written one after the other, each by its own
 * producer; the file's records are the sum of the entries'.
 */
export function packageProducer(
  kind: Exclude<ArchiveKind, 'directory'>,
  options: PackageWriterOptions,
  entries: readonly PackageEntrySpec[],
): Producer {
  return async (out, ctx) => {
    const writer = createPackageWriter(kind, out, options);
    let records = 0;
    try {
      for (const entry of entries) {
        const source = new PassThrough();
        const adding = writer.add(entry.path, source);
        const before = records;
        const [made] = await Promise.all([
          entry.produce(source, { ...ctx, records: (n) => ctx.records(before + n) }),
          adding,
        ]);
        records += made.records;
      }
      await writer.finish();
    } catch (err) {
      writer.abort(err as Error);
      throw err;
    }
    return { records };
  };
}

export interface ChangesProduced {
  /** Rows and tombstones written. */
  records: number;
  /** Rows written (upserts), without tombstones. */
  upserts: number;
  tombstones: number;
  /** Where the next run of the feed starts. */
  nextCursor: ChangeCursor;
}

/**
 * One run of the change feed of a dataset: the rows changed since `since` (null =
 * everything) and tombstones for the rows deleted since.
 */
export function changesProducer(
  database: Database,
  request: ExportRequest,
  since: ChangeCursor | null,
  options: { exportId: string; secret: string },
): Producer<ChangesProduced> {
  return async (out, ctx) => {
    const result = await exportChanges(database, request, since, out, {
      exportId: options.exportId,
      secret: options.secret,
      signal: ctx.signal,
    });
    return {
      records: result.records + result.tombstones,
      upserts: result.records,
      tombstones: result.tombstones,
      nextCursor: result.nextCursor,
    };
  };
}
