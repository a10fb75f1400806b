import { invalid } from '../domain/ferry-error.ts';

/** The manifest every package ends with; no entry may take its name. */
export const CHECKSUMS_FILE = 'checksums.sha256';

/** Longest entry path accepted, in UTF-8 bytes (tar and zip readers cope with far more; Windows does not). */
const MAX_PATH_BYTES = 1024;

/**
 * Characters no segment may contain: control characters, the backslash (a separator on Windows and
 * an escape in `sha256sum` manifests) and the characters Windows forbids in file names.
 */
const FORBIDDEN = /[\u0000-\u001f\u007f\\<>:"|?*]/;

/**
 * Checks one relative entry path (`messages.csv`, `conversations/<id>.json`) and returns it unchanged.
 * Rejects absolute paths, `.` and `..` segments, empty segments, backslashes and characters that would
 * break extraction on Windows or the `sha256sum` manifest, so an archive can never write outside its
 * root folder.
 */
export function checkEntryPath(path: unknown, param = 'path'): string {
  if (typeof path !== 'string' || path.length === 0) throw invalid(param, 'must be a non-empty string');
  if (path.startsWith('/'))
    throw invalid(param, `must be relative, got an absolute path "${printable(path)}"`);
  if (FORBIDDEN.test(path)) {
    throw invalid(
      param,
      `"${printable(path)}" contains a character that is not allowed (control characters, \\ < > : " | ? *)`,
    );
  }
  if (Buffer.byteLength(path) > MAX_PATH_BYTES)
    throw invalid(param, `is longer than ${MAX_PATH_BYTES} bytes`);
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw invalid(
        param,
        `"${printable(path)}" has an empty, "." or ".." segment; use plain relative paths`,
      );
    }
    if (segment.endsWith(' ') || segment.endsWith('.')) {
      throw invalid(param, `"${printable(path)}" has a segment ending in a space or a dot`);
    }
  }
  return path;
}

/** The folder name every entry is placed under, e.g. `company-export-2026-11-22`: one safe segment. */
export function checkRoot(root: unknown): string {
  const checked = checkEntryPath(root, 'root');
  if (checked.includes('/')) throw invalid('root', `must be a single folder name, got "${checked}"`);
  return checked;
}

/** The parent folders of an entry path, outermost first: `a/b/c.json` → `a`, `a/b`. */
export function parentFolders(path: string): string[] {
  const segments = path.split('/');
  const folders: string[] = [];
  for (let i = 1; i < segments.length; i++) folders.push(segments.slice(0, i).join('/'));
  return folders;
}

function printable(path: string): string {
  // Keep control characters out of error messages and logs.
  return path.replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 200);
}
