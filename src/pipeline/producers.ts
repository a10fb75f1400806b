import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type ChangeCursor, exportChanges } from '../collect/changes.ts';
import type { ExportRequest } from '../collect/request.ts';
import type { Database } from '../db/database.ts';
import type { ArchiveKind } from '../domain/package-kind.ts';
import { createPackageWriter, type PackageWriterOptions } from '../packaging/archive.ts';
import { partsChecksums, type StoredPart, splitManifest } from '../packaging/split-manifest.ts';
import { type PackageRequest, writeCompanyPackage } from './company-package.ts';
import { writeDataset } from './export-dataset.ts';
import type { FileSetOutput, FileSetProduced, FileSetProducer, Producer, StoredFile } from './run.ts';

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

/** The file names of a split package: its parts, its manifest and the parts' checksums. */
export interface SplitNames {
  /** Part `number` (1, 2, …), e.g. `company-export-….part001.zip`. */
  part(number: number): string;
  /** The manifest, e.g. `company-export-….parts.json`. */
  readonly manifest: string;
  /** The checksums of the parts and the manifest, e.g. `company-export-….parts.sha256`. */
  readonly checksums: string;
}

/** What a split package run wrote. */
export interface SplitProduced extends FileSetProduced {
  root: string;
  parts: StoredFile[];
  manifest: StoredFile;
  checksums: StoredFile;
}

/**
 * The company package in parts of at most `partSize` bytes (see SplitPackageWriter), then
 * its manifest (`names.manifest`: which files each part holds, each part's size and
 * SHA-256 as stored) and `names.checksums` (`sha256sum` lines for the parts and the
 * manifest; never encrypted, so it checks encrypted parts before they are decrypted).
 * Each part's records are those of the files it holds.
 */
export function splitPackageProducer(
  database: Database,
  request: PackageRequest & { kind: 'zip' | 'tar.gz' },
  options: { exportId: string; partSize: number; names: SplitNames },
): FileSetProducer<SplitProduced> {
  return async (out, ctx) => {
    const contentType = request.kind === 'zip' ? 'application/zip' : 'application/gzip';
    const opened: ReturnType<FileSetOutput['open']>[] = [];
    const perDataset = new Map<string, number>();
    const written = await writeCompanyPackage(
      database,
      request,
      {
        partSize: options.partSize,
        openPart: (number) => {
          const file = out.open(options.names.part(number), contentType);
          opened.push(file);
          return file.stream;
        },
      },
      {
        exportId: options.exportId,
        signal: ctx.signal,
        onProgress: (p) => {
          perDataset.set(p.dataset, Math.max(perDataset.get(p.dataset) ?? 0, p.records));
          ctx.records([...perDataset.values()].reduce((a, b) => a + b, 0));
        },
      },
    );
    const layout = written.parts ?? [];
    const parts = await Promise.all(opened.map((file) => file.stored));
    const manifestFile = out.open(options.names.manifest, 'application/json');
    await pipeline(
      Readable.from(
        splitManifest({
          exportId: options.exportId,
          root: written.root,
          kind: request.kind,
          splitSize: options.partSize,
          created: new Date(),
          parts: layout,
          stored: parts satisfies StoredPart[],
        }),
      ),
      manifestFile.stream,
    );
    const manifest = await manifestFile.stored;
    const checksumsFile = out.open(options.names.checksums, 'text/plain; charset=utf-8', { encrypt: false });
    checksumsFile.stream.end(partsChecksums([...parts, manifest]));
    const checksums = await checksumsFile.stored;
    const fileRecords: Record<string, number> = {};
    for (const [i, part] of layout.entries())
      fileRecords[parts[i]!.name] = part.files.reduce((n, f) => n + (written.counts[f.path] ?? 0), 0);
    return { records: written.records, fileRecords, root: written.root, parts, manifest, checksums };
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
