import type { ErrorCode } from './error-catalog.ts';

/**
 * Ferry's error type. Every error a user can see carries a stable `code` from the
 * catalog in error-catalog.ts (HTTP status, title), so a code the catalog lacks does
 * not compile, and a message that says what was wrong and, for validation errors,
 * the accepted values.
 */
export class FerryError extends Error {
  override name = 'FerryError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

export function invalid(param: string, message: string, accepted?: readonly (string | number)[]): FerryError {
  const suffix = accepted ? ` (accepted: ${accepted.join(', ')})` : '';
  return new FerryError('invalid_parameter', `${param}: ${message}${suffix}`, {
    parameter: param,
    ...(accepted ? { accepted } : {}),
  });
}
