import type { SplitNames } from '../pipeline/producers.ts';

/** What a file of a split package export is, by its name. */
export type SplitFileRole =
  | { readonly role: 'part'; readonly number: number }
  | { readonly role: 'manifest' }
  | { readonly role: 'checksums' };

const PART = /\.part(\d{3,})\.(?:zip|tar\.gz)(?:\.age)?$/;
const MANIFEST = /\.parts\.json(?:\.age)?$/;
const CHECKSUMS = /\.parts\.sha256$/;

/**
 * The files of a split package named after `base` (`company-export-20261122T101500Z`, or
 * the CLI's `--out` without its extension): `<base>.part001.zip` … (three digits at least,
 * more past part 999), `<base>.parts.json` and `<base>.parts.sha256`. The parts and the
 * manifest gain `.age` when the export is encrypted for recipients; the checksums file
 * never is.
 */
export function splitFileNames(base: string, kind: 'zip' | 'tar.gz', encrypted: boolean): SplitNames {
  const age = encrypted ? '.age' : '';
  return {
    part: (number) => `${base}.part${String(number).padStart(3, '0')}.${kind}${age}`,
    manifest: `${base}.parts.json${age}`,
    checksums: `${base}.parts.sha256`,
  };
}

/** The role of a file that `splitFileNames` named; null for any other name. */
export function splitFileRole(name: string): SplitFileRole | null {
  const part = PART.exec(name);
  if (part) return { role: 'part', number: Number(part[1]) };
  if (MANIFEST.test(name)) return { role: 'manifest' };
  if (CHECKSUMS.test(name)) return { role: 'checksums' };
  return null;
}
