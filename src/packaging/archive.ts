import type { Writable } from 'node:stream';
import { invalid } from '../domain/ferry-error.ts';
import { ARCHIVE_KINDS, type ArchiveKind } from '../domain/package-kind.ts';
import { DirectoryPackageWriter } from './directory-writer.ts';
import { isNestedTarget, NestedPackageWriter, type NestedTarget } from './nested-writer.ts';
import { isSplitTarget, SplitPackageWriter, type SplitTarget } from './split-writer.ts';
import { TarGzPackageWriter } from './tar-writer.ts';
import type { PackageWriter, PackageWriterOptions } from './package-writer.ts';
import { ZipPackageWriter } from './zip-writer.ts';

export type { PackageEntryResult, PackageWriter, PackageWriterOptions, SplitPart } from './package-writer.ts';
export type { SplitTarget } from './split-writer.ts';
export type { NestedTarget } from './nested-writer.ts';

/**
 * Where a package goes: a stream (zip, tar.gz), a folder (directory), parts (a split zip or
 * tar.gz), or a folder of another package (any kind).
 */
export type PackageOutput = Writable | { dir: string } | SplitTarget | NestedTarget;

/**
 * The writer of one package of `kind`: a stream for zip and tar.gz, a folder for
 * directory, or a split target for a zip or tar.gz in parts; any kind into a folder of
 * another package.
 */
export function createPackageWriter(
  kind: ArchiveKind,
  out: PackageOutput,
  options: PackageWriterOptions,
): PackageWriter {
  if (!(options.mtime instanceof Date) || Number.isNaN(options.mtime.getTime())) {
    throw invalid('mtime', 'must be a valid Date');
  }
  if (isNestedTarget(out)) return new NestedPackageWriter(out, options);
  if (isSplitTarget(out)) {
    if (kind !== 'zip' && kind !== 'tar.gz')
      throw invalid('kind', `a ${String(kind)} package cannot be split into parts`, ['zip', 'tar.gz']);
    return new SplitPackageWriter(kind, out, options);
  }
  const stream = 'dir' in out && typeof out.dir === 'string' && !('write' in out) ? null : (out as Writable);
  switch (kind) {
    case 'zip':
    case 'tar.gz':
      if (!stream) throw invalid('out', `a ${kind} package is written to a stream, not a folder`);
      return kind === 'zip' ? new ZipPackageWriter(stream, options) : new TarGzPackageWriter(stream, options);
    case 'directory':
      if (stream) throw invalid('out', 'a directory package is written to { dir }, not a stream');
      return new DirectoryPackageWriter((out as { dir: string }).dir, options);
    default:
      throw invalid('kind', `unknown package kind "${String(kind)}"`, ARCHIVE_KINDS);
  }
}
