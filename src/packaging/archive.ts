import type { Writable } from 'node:stream';
import { invalid } from '../domain/ferry-error.ts';
import { ARCHIVE_KINDS, type ArchiveKind } from '../domain/package-kind.ts';
import { DirectoryPackageWriter } from './directory-writer.ts';
import { TarGzPackageWriter } from './tar-writer.ts';
import type { PackageWriter, PackageWriterOptions } from './package-writer.ts';
import { ZipPackageWriter } from './zip-writer.ts';

export type { PackageEntryResult, PackageWriter, PackageWriterOptions } from './package-writer.ts';

/** The writer of one package of `kind`: a stream for zip and tar.gz, a folder for directory. */
export function createPackageWriter(
  kind: ArchiveKind,
  out: Writable | { dir: string },
  options: PackageWriterOptions,
): PackageWriter {
  if (!(options.mtime instanceof Date) || Number.isNaN(options.mtime.getTime())) {
    throw invalid('mtime', 'must be a valid Date');
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
