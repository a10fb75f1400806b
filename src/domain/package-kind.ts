/**
 * Every form an export's output takes: one file (`none`), or the company package
 * written as a ZIP, a gzipped tar or a plain folder. The lists below are subsets of
 * this one declaration, so a new kind is added in one place.
 */
export const PACKAGE_KINDS = ['none', 'zip', 'tar.gz', 'directory'] as const;
export type PackageKind = (typeof PACKAGE_KINDS)[number];

/** The kinds a package writer produces (src/packaging/archive.ts): every kind but one file. */
export type ArchiveKind = Exclude<PackageKind, 'none'>;
export const ARCHIVE_KINDS: readonly ArchiveKind[] = PACKAGE_KINDS.filter(
  (kind): kind is ArchiveKind => kind !== 'none',
);

/**
 * The kinds an API export or a schedule may ask for. A folder is written to the local
 * disk by the CLI only; stored exports are single objects.
 */
export type RequestPackageKind = Exclude<PackageKind, 'directory'>;
export const REQUEST_PACKAGE_KINDS: readonly RequestPackageKind[] = PACKAGE_KINDS.filter(
  (kind): kind is RequestPackageKind => kind !== 'directory',
);
