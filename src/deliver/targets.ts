import net from 'node:net';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { maskSecret } from '../lib/secret-box.ts';
import { type OutboundPolicy, resolveOutbound } from '../lib/ssrf.ts';
import { checkPathTemplate } from './template.ts';
import {
  type DeliveryTarget,
  type DeliveryTargetInput,
  INSECURE_ACCEPT_ANY,
  type SealedSecret,
  SERVER_SIDE_ENCRYPTION,
  TARGET_TYPES,
  type TargetType,
} from './types.ts';

/** Fields holding secrets, per target type: sealed when stored, masked when shown. */
const SECRET_FIELDS = {
  s3: ['secret_access_key'],
  sftp: ['password', 'private_key', 'passphrase'],
  email: [],
  webhook: [],
  folder: [],
} as const satisfies Record<TargetType, readonly string[]>;

const FIELDS = {
  s3: [
    'type',
    'name',
    'bucket',
    'prefix',
    'region',
    'endpoint',
    'force_path_style',
    'access_key_id',
    'secret_access_key',
    'server_side_encryption',
    'kms_key_id',
    'verify',
  ],
  sftp: [
    'type',
    'name',
    'host',
    'port',
    'username',
    'password',
    'private_key',
    'passphrase',
    'directory',
    'host_key',
  ],
  email: ['type', 'name', 'to', 'attach'],
  webhook: ['type', 'name', 'endpoint_id'],
  folder: ['type', 'name', 'path'],
} as const satisfies Record<TargetType, readonly string[]>;

/** Largest number of recipients of one email target. */
export const MAX_RECIPIENTS = 20;

const EMAIL = /^[^\s@<>(),;:"]+@[^\s@<>(),;:"]+\.[^\s@<>(),;:"]+$/;
const HOST =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Reads one object's fields with messages naming `<field>.<name>`. */
class Fields {
  readonly #input: Record<string, unknown>;
  readonly #field: string;
  constructor(input: Record<string, unknown>, field: string) {
    this.#input = input;
    this.#field = field;
  }
  path(name: string): string {
    return `${this.#field}.${name}`;
  }
  string(name: string, options: { required?: boolean; max?: number; pattern?: RegExp; hint?: string } = {}) {
    const value = this.#input[name];
    if (value === undefined || value === null || value === '') {
      if (options.required) throw invalid(this.path(name), 'is required');
      return undefined;
    }
    if (typeof value !== 'string') throw invalid(this.path(name), 'must be a string');
    if (value.length > (options.max ?? 2000))
      throw invalid(this.path(name), `must be at most ${options.max ?? 2000} characters`);
    if (options.pattern && !options.pattern.test(value))
      throw invalid(this.path(name), options.hint ?? 'has an invalid format');
    return value;
  }
  required(name: string, options: { max?: number; pattern?: RegExp; hint?: string } = {}): string {
    return this.string(name, { ...options, required: true })!;
  }
  integer(name: string, range: { min: number; max: number }): number | undefined {
    const value = this.#input[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > range.max)
      throw invalid(this.path(name), `must be an integer from ${range.min} to ${range.max}`);
    return value;
  }
  boolean(name: string, fallback: boolean): boolean {
    const value = this.#input[name];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') throw invalid(this.path(name), 'must be true or false');
    return value;
  }
  choice<T extends string>(name: string, accepted: readonly T[], fallback?: T): T | undefined {
    const value = this.#input[name];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'string' || !(accepted as readonly string[]).includes(value))
      throw invalid(this.path(name), 'must be one of the accepted values', accepted);
    return value as T;
  }
}

/**
 * Validates one delivery target as entered (plain-text secrets) and fills defaults.
 * Errors are `invalid_parameter` naming the field, e.g. `targets[1].host_key`.
 * Host names are only checked for form here; the outbound guard checks where they
 * lead when delivering.
 */
export function parseTarget(input: unknown, field = 'target'): DeliveryTargetInput {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw invalid(field, 'must be an object with a "type"', TARGET_TYPES);
  const record = input as Record<string, unknown>;
  const f = new Fields(record, field);
  const type = f.choice('type', TARGET_TYPES);
  if (!type) throw invalid(f.path('type'), 'is required', TARGET_TYPES);
  for (const key of Object.keys(record)) {
    if (!(FIELDS[type] as readonly string[]).includes(key))
      throw invalid(f.path(key), `is not a field of a ${type} target`, FIELDS[type]);
  }
  const name = f.string('name', { max: 100 });
  const common = name ? { name } : {};
  switch (type) {
    case 's3':
      return parseS3(f, common);
    case 'sftp':
      return parseSftp(f, common);
    case 'email':
      return parseEmail(record, f, common);
    case 'webhook':
      return {
        type,
        ...common,
        endpoint_id: f.required('endpoint_id', {
          pattern: UUID,
          hint: 'must be the id of a registered webhook',
        }),
      };
    case 'folder': {
      const folder = f.required('path', { max: 1024 });
      if (!folder.startsWith('/') || folder.split('/').some((s) => s === '..' || s === '.'))
        throw invalid(f.path('path'), 'must be an absolute path without "." or ".." segments');
      return { type, ...common, path: folder.length > 1 ? folder.replace(/\/+$/, '') : folder };
    }
  }
}

function parseS3(f: Fields, common: { name?: string }): DeliveryTargetInput {
  const endpoint = f.string('endpoint', { max: 500 });
  if (endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw invalid(f.path('endpoint'), 'must be a URL such as https://s3.example.com');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw invalid(f.path('endpoint'), 'must be an http or https URL');
    if (url.username || url.password)
      throw invalid(
        f.path('endpoint'),
        'must not contain credentials; use access_key_id and secret_access_key',
      );
  }
  // Required: without them the SDK would fall back to the server's own credentials.
  const accessKeyId = f.required('access_key_id', { max: 128 });
  const secret = f.required('secret_access_key', { max: 256 });
  const sse = f.choice('server_side_encryption', SERVER_SIDE_ENCRYPTION);
  const kmsKeyId = f.string('kms_key_id', { max: 2048 });
  if (kmsKeyId && sse !== 'aws:kms')
    throw invalid(f.path('kms_key_id'), 'is only used with server_side_encryption "aws:kms"');
  return {
    type: 's3',
    ...common,
    bucket: f.required('bucket', {
      max: 255,
      pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/,
      hint:
        'must be a bucket name: 2 to 255 characters out of letters, digits, ".", "_" and "-", ' +
        'starting with a letter or digit (Amazon S3 itself: 3 to 63 lower-case letters, digits, "." and "-", ' +
        'starting and ending with a letter or digit)',
    }),
    prefix: checkPathTemplate(f.string('prefix', { max: 512 }) ?? '', f.path('prefix')),
    region:
      f.string('region', {
        max: 64,
        pattern: /^[a-z0-9-]+$/,
        hint: 'must be a region such as eu-central-1',
      }) ?? 'us-east-1',
    ...(endpoint ? { endpoint } : {}),
    force_path_style: f.boolean('force_path_style', endpoint !== undefined),
    access_key_id: accessKeyId,
    secret_access_key: secret,
    ...(sse ? { server_side_encryption: sse } : {}),
    ...(kmsKeyId ? { kms_key_id: kmsKeyId } : {}),
    verify: f.choice('verify', ['head', 'read'] as const, 'head')!,
  };
}

function parseSftp(f: Fields, common: { name?: string }): DeliveryTargetInput {
  const host = f.required('host', { max: 253 });
  if (!net.isIP(host.replace(/^\[|\]$/g, '')) && !HOST.test(host))
    throw invalid(f.path('host'), 'must be a host name or an IP address');
  const port = f.integer('port', { min: 1, max: 65_535 }) ?? 22;
  const password = f.string('password', { max: 1024 });
  const privateKey = f.string('private_key', { max: 16_384 });
  const passphrase = f.string('passphrase', { max: 1024 });
  if (!password && !privateKey) throw invalid(f.path('private_key'), 'set private_key or password');
  if (privateKey && !/^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(privateKey.trim()))
    throw invalid(
      f.path('private_key'),
      'must be a private key in OpenSSH or PEM format (-----BEGIN … PRIVATE KEY-----)',
    );
  if (passphrase && !privateKey) throw invalid(f.path('passphrase'), 'is only used with private_key');
  const hostKey = f.required('host_key', { max: 100 });
  if (hostKey !== INSECURE_ACCEPT_ANY && !FINGERPRINT.test(hostKey))
    throw invalid(
      f.path('host_key'),
      'must be the SHA256 fingerprint of the server host key as `ssh-keygen -l -f <key>` prints it (SHA256:…), or "insecure-accept-any"',
    );
  const directory = f.string('directory', { max: 1024 }) ?? '.';
  return {
    type: 'sftp',
    ...common,
    host,
    port,
    username: f.required('username', {
      max: 128,
      pattern: /^[^\s:@/]+$/,
      hint: 'must not contain spaces, ":", "@" or "/"',
    }),
    ...(password ? { password } : {}),
    ...(privateKey ? { private_key: privateKey } : {}),
    ...(passphrase ? { passphrase } : {}),
    directory:
      directory === '.' ? '.' : checkPathTemplate(directory, f.path('directory'), { absolute: true }),
    host_key: hostKey,
  };
}

function parseEmail(
  record: Record<string, unknown>,
  f: Fields,
  common: { name?: string },
): DeliveryTargetInput {
  const to = record.to;
  const list = typeof to === 'string' ? [to] : to;
  if (!Array.isArray(list) || list.length === 0)
    throw invalid(f.path('to'), 'must list at least one email address');
  if (list.length > MAX_RECIPIENTS)
    throw invalid(f.path('to'), `must list at most ${MAX_RECIPIENTS} addresses`);
  list.forEach((address, i) => {
    if (typeof address !== 'string' || address.length > 254 || !EMAIL.test(address))
      throw invalid(`${f.path('to')}[${i}]`, 'must be an email address');
  });
  return { type: 'email', ...common, to: list as string[], attach: f.boolean('attach', false) };
}

/** The stored form of a target: secret fields sealed by the secret box. */
export async function sealTarget(target: DeliveryTargetInput, secrets: SecretBox): Promise<DeliveryTarget> {
  const out: Record<string, unknown> = { ...target };
  for (const field of SECRET_FIELDS[target.type]) {
    const value = (target as unknown as Record<string, string | undefined>)[field];
    if (value !== undefined) out[field] = { sealed: await secrets.seal(value) } satisfies SealedSecret;
  }
  return out as unknown as DeliveryTarget;
}

/** A stored target with its secrets opened, for the adapter that delivers. */
export async function openTarget(target: DeliveryTarget, secrets: SecretBox): Promise<DeliveryTargetInput> {
  const out: Record<string, unknown> = { ...target };
  for (const field of SECRET_FIELDS[target.type]) {
    const value = (target as unknown as Record<string, SealedSecret | undefined>)[field];
    if (value !== undefined) out[field] = await secrets.open(value.sealed);
  }
  return out as unknown as DeliveryTargetInput;
}

/**
 * A stored target as the API shows it: every secret masked (`••••abcd`), or
 * `••••` when it can no longer be opened (its key is gone).
 */
export async function presentTarget(
  target: DeliveryTarget,
  secrets: SecretBox,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { ...target };
  for (const field of SECRET_FIELDS[target.type]) {
    const value = (target as unknown as Record<string, SealedSecret | undefined>)[field];
    if (value === undefined) continue;
    try {
      out[field] = maskSecret(await secrets.open(value.sealed));
    } catch (err) {
      if (!(err instanceof FerryError)) throw err;
      out[field] = '••••';
    }
  }
  return out;
}

/** The secret values of an opened target, so error messages can be scrubbed of them. */
export function targetSecrets(target: DeliveryTargetInput): string[] {
  return SECRET_FIELDS[target.type]
    .map((field) => (target as unknown as Record<string, unknown>)[field])
    .filter((v): v is string => typeof v === 'string' && v.length >= 4);
}

/** A readable label without secrets: `s3://bucket/prefix/`, `sftp://user@host:22/dir`, … */
export function targetLabel(target: DeliveryTarget | DeliveryTargetInput): string {
  switch (target.type) {
    case 's3':
      return `s3://${target.bucket}/${target.prefix}`;
    case 'sftp':
      return `sftp://${target.username}@${target.host}:${target.port}/${target.directory.replace(/^\//, '')}`;
    case 'email':
      return `mailto:${target.to.join(',')}`;
    case 'webhook':
      return `webhook:${target.endpoint_id}`;
    case 'folder':
      return `file://${target.path}`;
  }
}

/**
 * Refuses S3 endpoints and SFTP hosts that resolve to an address the outbound guard never
 * connects to (loopback, link-local with the metadata service, private, …; hosts in
 * FERRY_OUTBOUND_ALLOW pass), as webhook URLs are refused at registration: a schedule
 * that could only ever fail its delivery is not saved. A name that does not resolve now
 * is accepted; the guard checks every delivery again. Errors are `invalid_parameter`
 * naming the field, e.g. `targets[0].endpoint`.
 */
export async function checkTargetAddresses(
  targets: readonly { readonly target: DeliveryTarget }[],
  outbound: OutboundPolicy,
  field = 'targets',
): Promise<void> {
  for (const [i, { target }] of targets.entries()) {
    const checked =
      target.type === 's3' && target.endpoint
        ? { name: 'endpoint', host: new URL(target.endpoint).hostname }
        : target.type === 'sftp'
          ? { name: 'host', host: target.host }
          : undefined;
    if (!checked) continue;
    try {
      await resolveOutbound(checked.host, outbound);
    } catch (err) {
      if (!(err instanceof FerryError)) throw err;
      if (err.code === 'outbound_blocked' && err.details?.address !== undefined)
        throw invalid(`${field}[${i}].${checked.name}`, err.message);
    }
  }
}
