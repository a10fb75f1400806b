/**
 * The catalog of stable error codes. Every error a user can see (HTTP problem
 * response, CLI message) carries one of these codes; the code, its status and its
 * title never change once released, so clients may branch on them. Each code is
 * documented in docs/errors.md (a test keeps the two in step).
 */
export const ERRORS = {
  invalid_parameter: {
    status: 400,
    title: 'Invalid parameter',
    description:
      'A path, query, header or body parameter is missing, has the wrong type or is not one of the ' +
      'accepted values. `errors` names each parameter and, for enumerations, the accepted values.',
  },
  invalid_expression: {
    status: 400,
    title: 'Invalid expression',
    description:
      "A calculated field's expression cannot be used: a syntax error, an unknown column or " +
      'function, a type that does not fit, or a limit of length or nesting. The message names the ' +
      'field, the position (1-based) and the token found there.',
  },
  malformed_request: {
    status: 400,
    title: 'Malformed request',
    description:
      'The request could not be read at all: the body is not valid JSON, is empty although a ' +
      'Content-Type was sent, or the request line is unusable.',
  },
  unsupported_format: {
    status: 400,
    title: 'Unsupported format',
    description:
      'The requested export format, compression or encoding is not available for this dataset. ' +
      'The message lists the formats that are.',
  },
  unauthorized: {
    status: 401,
    title: 'Unauthorized',
    description:
      'No credentials were sent, or the API key or session is unknown, expired or revoked. ' +
      'Send a valid API key in the `Authorization: Bearer` header.',
  },
  api_key_expired: {
    status: 401,
    title: 'API key expired',
    description:
      'The API key is genuine but its expiry time has passed (set when it was created, or by a ' +
      'rotation whose overlap window has ended). The detail says when it expired and, after a ' +
      'rotation, the prefix of the key that replaced it. Use the new key, or rotate or create one.',
  },
  forbidden: {
    status: 403,
    title: 'Forbidden',
    description:
      'The credentials are valid but their role or scopes do not allow this action on this tenant.',
  },
  ip_not_allowed: {
    status: 403,
    title: 'Address not allowed',
    description:
      "The request comes from an address outside the account's or the API key's IP allow-list " +
      '(CIDR ranges set with `PUT /api/v1/account/ip-allowlist` or `allowed_ips` on the key). The ' +
      'refusal is recorded in the audit trail as `ip.refused`.',
  },
  tenant_not_in_organisation: {
    status: 403,
    title: 'Tenant not in organisation',
    description:
      "The `Ferry-Tenant` header (or the dashboard's tenant switcher) names a tenant that the " +
      "caller's organisation does not manage, whether that tenant exists or not, or the caller is " +
      "not an organisation key at all. The refusal is recorded in the caller's own audit trail as " +
      '`organisation.tenant_refused`.',
  },
  link_invalid: {
    status: 403,
    title: 'Download link invalid',
    description:
      'The signed download link was altered (export, file, expiry or signature) or has expired. Ask ' +
      '`GET /api/v1/exports/{id}/download` for a new link.',
  },
  not_found: {
    status: 404,
    title: 'Not found',
    description:
      'No such route, or the resource does not exist in this tenant. Resources of other tenants ' +
      'are reported as not found too, so their existence is not revealed.',
  },
  conflict: {
    status: 409,
    title: 'Conflict',
    description:
      'The request conflicts with the current state of the resource, e.g. cancelling a finished ' +
      'export, or erasing data that is under a legal hold.',
  },
  account_closed: {
    status: 403,
    title: 'Account closed',
    description:
      'The tenant account is closed: in its grace period only reading, exporting, downloading and ' +
      'reopening the account are allowed; once purged, nothing is.',
  },
  verification_failed: {
    status: 400,
    title: 'Verification failed',
    description:
      'The one-time code of a data subject request is wrong, expired or used up (three attempts, 30 ' +
      'minutes). `attempts_left` says how many tries remain; when none do, ask for a new code.',
  },
  package_exists: {
    status: 409,
    title: 'Package exists',
    description:
      'The output folder or file of an export package already exists; Ferry never overwrites one. ' +
      'Choose another destination or remove the old package.',
  },
  stream_lagging: {
    status: 409,
    title: 'Stream lagging',
    description:
      'Live stream (WebSocket) only: the client read events more slowly than they arrived and its ' +
      'buffer on the server filled up, so it was disconnected (close code 4008). Reconnect and ' +
      'subscribe with the `last_event_id` from the message to resume without gaps.',
  },
  gone: {
    status: 410,
    title: 'Gone',
    description:
      'The resource existed but is no longer available: an expired download link, or an export ' +
      'file removed by its retention period.',
  },
  request_timeout: {
    status: 408,
    title: 'Request timeout',
    description:
      'The client did not send the complete request (headers and body) in time, so the server closed ' +
      'the connection. Send the request again on a faster or less loaded connection.',
  },
  payload_too_large: {
    status: 413,
    title: 'Payload too large',
    description: 'The request body exceeds the size limit of this endpoint.',
  },
  uri_too_long: {
    status: 414,
    title: 'URI too long',
    description:
      'A path parameter (an id, a file name) is longer than any valid value can be. Check the URL; ' +
      'ids are 36-character UUIDs.',
  },
  unsupported_media_type: {
    status: 415,
    title: 'Unsupported media type',
    description: 'The request body has a Content-Type this endpoint does not accept (usually it wants JSON).',
  },
  upgrade_required: {
    status: 426,
    title: 'Upgrade required',
    description:
      'The endpoint is a WebSocket (the live stream): connect with `Upgrade: websocket` instead of a ' +
      'plain HTTP request.',
  },
  idempotency_key_reused: {
    status: 422,
    title: 'Idempotency key reused',
    description:
      'The Idempotency-Key was already used with a different request body. Use a new key for a new request.',
  },
  range_not_satisfiable: {
    status: 416,
    title: 'Range not satisfiable',
    description:
      'The byte range asked for with a `Range` header lies outside the file. Ask for a range within its size.',
  },
  headers_too_large: {
    status: 431,
    title: 'Request headers too large',
    description:
      'The request headers together exceed the size the server accepts (16 KiB). Send fewer or ' +
      'shorter headers, for example without large cookies.',
  },
  rate_limited: {
    status: 429,
    title: 'Too many requests',
    description:
      'Too many requests from this client in a short time. Wait for the number of seconds in the ' +
      '`Retry-After` header and try again.',
  },
  quota_exceeded: {
    status: 429,
    title: 'Quota exceeded',
    description:
      "The tenant's plan quota (exports, rows or bytes in the current period) is used up. The quota " +
      'resets at the start of the next period, or raise it by changing the plan. The problem names the ' +
      'quota in `quota` and when it frees in `resets_at`.',
  },
  internal: {
    status: 500,
    title: 'Internal error',
    description:
      'An unexpected error. Nothing about it is disclosed in the response; the server logged it with ' +
      'the `request_id` shown in the problem, which an operator can look up.',
  },
  format_error: {
    status: 500,
    title: 'Format error',
    description:
      'A stored value could not be written in the requested format (for example a timestamp column ' +
      'holding text). The message names the field and shows the start of the value.',
  },
  invalid_datapackage: {
    status: 500,
    title: 'Invalid data package',
    description:
      "The datapackage.json Ferry generated breaks the Frictionless Data Package v2 profile. This is a bug in Ferry's data map or packaging; the export is not delivered.",
  },
  package_aborted: {
    status: 500,
    title: 'Package aborted',
    description: 'Writing an export package was stopped before it finished; no partial package is kept.',
  },
  package_closed: {
    status: 500,
    title: 'Package closed',
    description: 'Something was added to an export package after it was finished. This is a bug in Ferry.',
  },
  secret_key_invalid: {
    status: 500,
    title: 'Secret key invalid',
    description:
      'FERRY_SECRET_KEY is missing or too short (at least 32 characters) for sealing stored secrets.',
  },
  secret_unreadable: {
    status: 500,
    title: 'Secret unreadable',
    description:
      'A stored secret (integration credentials, delivery passwords, webhook and TOTP secrets) cannot be ' +
      'decrypted: its data key does not open with the configured master keys (a rotated master key was ' +
      'removed before `ferry keys rotate-master` finished), or, for a secret sealed before the keyring, ' +
      'FERRY_SECRET_KEY changed. The secret itself is never shown; re-enter it or restore the key.',
  },
  master_key_unavailable: {
    status: 500,
    title: 'Master key unavailable',
    description:
      'The master key could not be read from its configured source: the file named by ' +
      'FERRY_ENCRYPTION_KEY_FILE is missing or unreadable, the FERRY_ENCRYPTION_KEY_COMMAND failed or ' +
      'timed out, or what they hold is not base64 keys of 32 bytes, one a line. The key and the ' +
      "command's output are never shown.",
  },
  decryption_failed: {
    status: 500,
    title: 'Decryption failed',
    description:
      'A file encrypted at rest could not be decrypted: it was altered or truncated, or its data key ' +
      'does not open with the configured master keys (FERRY_ENCRYPTION_KEY, its file or command). No ' +
      'unverified plaintext is ever returned.',
  },
  export_interrupted: {
    status: 500,
    title: 'Export interrupted',
    description:
      'The workers running an export stopped (crashed, were killed or lost the database) more often than ' +
      'the retry limit allows, so the export was given up. No partial file is kept; repeat the export.',
  },
  database_in_use: {
    status: 503,
    title: 'Database in use',
    description:
      'The embedded database (PGlite) is open in another Ferry process; it serves one process at a ' +
      'time. Stop the other process, or run Ferry on PostgreSQL to share one database.',
  },
  service_unavailable: {
    status: 503,
    title: 'Service unavailable',
    description:
      'A dependency (the database, the object store) is not reachable, or the server is shutting ' +
      'down. Retry later, ideally on another replica.',
  },
  outbound_blocked: {
    status: 400,
    title: 'Outbound address refused',
    description:
      'A webhook URL or a delivery host (S3 endpoint, SFTP server) resolves to a private, loopback, ' +
      'link-local or otherwise non-public address, which Ferry never connects to. Use a public host; an ' +
      'operator can allow internal hosts with FERRY_OUTBOUND_ALLOW.',
  },
  delivery_failed: {
    status: 502,
    title: 'Delivery failed',
    description:
      'A delivery target (S3, SFTP, email, webhook) did not accept the file after all retries. The ' +
      'message quotes what the destination answered; fix the target and run the delivery again.',
  },
  host_key_mismatch: {
    status: 502,
    title: 'Host key mismatch',
    description:
      "The SFTP server presented a host key whose SHA256 fingerprint differs from the target's pinned " +
      '`host_key`. Ferry did not log in. If the server really changed its key, update `host_key`.',
  },
  checksum_mismatch: {
    status: 502,
    title: 'Checksum mismatch',
    description:
      'The bytes at a delivery destination did not match the export file (size or SHA-256), so the ' +
      'copy was removed and the attempt failed. It is retried; persistent mismatches point at the destination.',
  },
  backup_corrupt: {
    status: 422,
    title: 'Backup corrupt',
    description:
      'A backup failed its check: a manifest, signature, key file or chunk is missing, altered or ' +
      'truncated. The message names the backup, the destination, the table and the chunk. Nothing was ' +
      'restored from it; restore another backup, or the same one from its other destination.',
  },
  backup_key_unavailable: {
    status: 422,
    title: 'Backup key unavailable',
    description:
      "The backup's data key cannot be opened: it was destroyed (the account was purged), or neither " +
      "the operator's secret key nor a given age identity unwraps it. Without the key the backup cannot be read.",
  },
  import_unreadable: {
    status: 422,
    title: 'Import file unreadable',
    description:
      'A file of an import is malformed: invalid JSON, CSV that is not RFC 4180, a row with the wrong ' +
      'number of fields, a package whose `checksums.sha256` or `datapackage.json` does not match its ' +
      'files. The message names the file and the line or byte offset. The import stops there: a plan or an ' +
      'all-or-nothing import writes nothing, a partial import keeps the batches it committed before.',
  },
  import_unsafe: {
    status: 422,
    title: 'Import archive unsafe',
    description:
      'An archive of an import was refused while it was unpacked, before anything was imported: an entry escapes the ' +
      'archive (`../`, an absolute path, a drive letter, a backslash, NUL) or is a link, or the ' +
      'archive holds another archive. The message names the entry.',
  },
  import_limit_exceeded: {
    status: 413,
    title: 'Import limit exceeded',
    description:
      'An import file exceeds a configured limit: total uncompressed size, number of archive entries, ' +
      'compression ratio, size of one field or of one record. The message names the limit, its ' +
      'environment variable and the value. The import stops there: a plan or an all-or-nothing import writes nothing, a ' +
      'partial import keeps the batches it committed before.',
  },
  import_conflict: {
    status: 409,
    title: 'Import conflict',
    description:
      'The import was started with the conflict policy `fail` and an item differs from a row the ' +
      'tenant already has. The message names the item and the fields that differ; the plan ' +
      '(`dry_run`) lists every conflict before anything is written.',
  },
  import_rejected: {
    status: 422,
    title: 'Import rejected',
    description:
      'An all-or-nothing import found items it cannot import, so it wrote nothing. The report lists ' +
      'each rejected item and its reason, and the rejected-items file holds them with an `errors` column.',
  },
  email_not_configured: {
    status: 503,
    title: 'Email not configured',
    description:
      'Email delivery or notification was asked for, but the operator has not configured an SMTP ' +
      'server (FERRY_SMTP_URL and FERRY_MAIL_FROM).',
  },
} as const satisfies Record<string, ErrorDefinition>;

export interface ErrorDefinition {
  readonly status: number;
  readonly title: string;
  readonly description: string;
}

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

/**
 * The catalog entry for an error code, e.g. a `FerryError`'s. A code missing from
 * the catalog is a programming error: it is reported as `internal`, so a typo can
 * never invent a status.
 */
export function errorDefinition(code: string): ErrorDefinition & { readonly code: ErrorCode } {
  const known: ErrorCode = isErrorCode(code) ? code : 'internal';
  return { code: known, ...ERRORS[known] };
}

/** The first catalog code with an HTTP status, for errors that only carry a status. */
export function codeForStatus(status: number): ErrorCode | undefined {
  return ERROR_CODES.find((code) => ERRORS[code].status === status);
}
