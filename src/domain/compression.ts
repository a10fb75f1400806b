/** Compressions of a single-file export; a package (zip, tar.gz) is compressed as a whole instead. */
export const COMPRESSIONS = ['none', 'gzip', 'zstd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];
