/**
 * Keyed pseudonyms, the JavaScript twins of `ferry_token` and `ferry_token_uuid`: the
 * SHA-256 of the export key (hex text) followed by the value. The same value and key give
 * the same token, so rows join within one export; every export has its own key, so tokens
 * of two exports do not correlate.
 */
import { createHash } from 'node:crypto';
import { invalid } from '../domain/ferry-error.ts';

const KEY = /^[0-9a-f]{32,}$/;

/** Checks an export key (at least 128 bits as lowercase or uppercase hex) and lowercases it. */
export function normalizeKey(key: string): string {
  const lower = key.toLowerCase();
  if (!KEY.test(lower)) {
    throw invalid('key', 'the anonymization key must be at least 32 hexadecimal characters (128 bits)');
  }
  return lower;
}

function digest(value: string, key: string): string {
  return createHash('sha256')
    .update(normalizeKey(key) + value, 'utf8')
    .digest('hex');
}

/** `anon_` and 16 hex characters, for string identifiers such as session ids. */
export function pseudonymToken(value: string, key: string): string {
  return `anon_${digest(value, key).slice(0, 16)}`;
}

/** The first 16 bytes of the hash as a UUID, for uuid identifiers. */
export function pseudonymUuid(value: string, key: string): string {
  const h = digest(value, key);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
