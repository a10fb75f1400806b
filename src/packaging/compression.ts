import type { Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { Compression } from '../domain/compression.ts';

/** What a compression adds to a file: a stream stage, a name suffix and a media type. */
export interface CompressionCodec {
  /** The compressing stage, or null when bytes pass as they are. */
  create(): Transform | null;
  /** Appended to the file name, e.g. `.gz`; empty for none. */
  readonly suffix: string;
  /** Media type of the compressed file; null keeps the format's own. */
  readonly contentType: string | null;
}

/** Every compression's codec; a new compression is a compile error until it is listed here. */
export const COMPRESSION_CODECS = {
  none: { create: () => null, suffix: '', contentType: null },
  gzip: {
    // Level 1: exports are transport copies; higher levels cost 3-5x the time for ~10% size.
    create: () => zlib.createGzip({ level: 1 }),
    suffix: '.gz',
    contentType: 'application/gzip',
  },
  zstd: {
    create: () => zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } }),
    suffix: '.zst',
    contentType: 'application/zstd',
  },
} as const satisfies Record<Compression, CompressionCodec>;

/** The codec of a compression. */
export function compressionCodec(compression: Compression): CompressionCodec {
  return COMPRESSION_CODECS[compression];
}
