import type { Readable } from 'node:stream';
import { BasePackageWriter } from './base-writer.ts';
import { checkEntryPath } from './entry-path.ts';
import type { PackageEntryResult, PackageWriter, PackageWriterOptions } from './package-writer.ts';

/** A package written as one folder of another package (an organisation's export holds one per tenant). */
export interface NestedTarget {
  /** The package the files go into. */
  readonly parent: PackageWriter;
  /** The folder under the parent's root, e.g. `tenants/acme`. */
  readonly folder: string;
}

export function isNestedTarget(out: unknown): out is NestedTarget {
  return typeof out === 'object' && out !== null && 'parent' in out && 'folder' in out;
}

/**
 * Writes a package's files into `<folder>/` of another package instead of an archive of its own:
 * the folder holds exactly the files the package would hold under its root, its own
 * checksums.sha256 last (so `cd <folder> && sha256sum -c checksums.sha256` works as for the package
 * alone). Bytes and hashes are the parent's measurements of each file. The parent is finished
 * (or aborted) by whoever owns it.
 */
export class NestedPackageWriter extends BasePackageWriter {
  readonly #parent: PackageWriter;
  readonly #folder: string;
  #bytes = 0;

  constructor(target: NestedTarget, options: PackageWriterOptions) {
    super(options);
    this.#parent = target.parent;
    this.#folder = checkEntryPath(target.folder, 'folder');
  }

  protected async writeEntry(path: string, source: Readable | Buffer): Promise<PackageEntryResult> {
    const written = await this.#parent.add(`${this.#folder}/${path}`, source);
    this.#bytes += written.bytes;
    return { path, bytes: written.bytes, sha256: written.sha256 };
  }

  protected async close(): Promise<number> {
    return this.#bytes;
  }

  protected destroy(err: Error): void {
    // The parent's owner sees the failure where it called into this package, and aborts it.
    this.#parent.abort(err);
  }
}
