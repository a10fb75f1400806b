import { invalid } from './ferry-error.ts';

/**
 * The part sizes a split company package may be asked for by name. Sizes are decimal
 * (1GB = 1,000,000,000 bytes), so a `4GB` part also fits a FAT32 file system, whose files
 * stop one byte short of 4 GiB.
 */
export const SPLIT_SIZES = {
  '1GB': 1_000_000_000,
  '2GB': 2_000_000_000,
  '4GB': 4_000_000_000,
  '10GB': 10_000_000_000,
  '50GB': 50_000_000_000,
} as const;
export type SplitSizeName = keyof typeof SPLIT_SIZES;
export const SPLIT_SIZE_NAMES = Object.keys(SPLIT_SIZES) as SplitSizeName[];

/** The smallest part size a request may give as a byte count: 1 MiB. */
export const MIN_SPLIT_BYTES = 1_048_576;
/** The largest part size: the largest named one. */
export const MAX_SPLIT_BYTES = SPLIT_SIZES['50GB'];

/** What `split_size` / `--split-size` accept, as an error names it. */
const ACCEPTED: readonly string[] = [
  ...SPLIT_SIZE_NAMES,
  `an integer byte count from ${MIN_SPLIT_BYTES} to ${MAX_SPLIT_BYTES}`,
];

/**
 * The part size in bytes of a split company package: one of the named sizes (`2GB`), or a
 * byte count from 1 MiB to 50 GB, as a number or a string of digits. Anything else is
 * `invalid_parameter` naming `param` and the accepted values.
 */
export function parseSplitSize(value: unknown, param: string): number {
  if (typeof value === 'string' && value in SPLIT_SIZES) return SPLIT_SIZES[value as SplitSizeName];
  const bytes = typeof value === 'string' && /^\d{1,16}$/.test(value) ? Number(value) : value;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes))
    throw invalid(param, `${JSON.stringify(value)} is not a part size`, ACCEPTED);
  if (bytes < MIN_SPLIT_BYTES || bytes > MAX_SPLIT_BYTES)
    throw invalid(
      param,
      `${bytes} bytes is outside ${MIN_SPLIT_BYTES} (1 MiB) to ${MAX_SPLIT_BYTES} (50GB)`,
      ACCEPTED,
    );
  return bytes;
}
