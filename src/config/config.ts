import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { parseAllowEntry } from '../lib/ssrf.ts';

/** Limits on untrusted import files (FERRY_IMPORT_*; docs/import.md#limits). */
export interface ImportLimits {
  /** Total uncompressed bytes of an archive. */
  readonly maxBytes: number;
  /** Entries of an archive. */
  readonly maxEntries: number;
  /** Uncompressed to compressed size, per entry and for the archive. */
  readonly maxRatio: number;
  /** Bytes of one CSV field or JSON string. */
  readonly maxFieldBytes: number;
  /** Bytes of one CSV row or one JSON record. */
  readonly maxRecordBytes: number;
}

export const DEFAULT_IMPORT_LIMITS: ImportLimits = {
  maxBytes: 50 * 1024 ** 3,
  maxEntries: 5_000_000,
  maxRatio: 200,
  maxFieldBytes: 1024 ** 2,
  maxRecordBytes: 8 * 1024 ** 2,
};

/**
 * Ferry's typed configuration. This module is the only reader of `process.env`;
 * everything else receives a frozen `Config` from the composition root.
 */
const schema = z.object({
  DATABASE_URL: z.string().url().optional(),
  DATABASE_SCHEMA: z
    .string()
    .regex(/^[a-z_][a-z0-9_]*$/, 'must be a lower-case SQL identifier')
    .optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(1000).default(10),
  DATABASE_PREPARED_STATEMENTS: z.enum(['on', 'off']).default('on'),
  FERRY_DATA_DIR: z.string().default('./data'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FERRY_SECRET_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  FERRY_PREVIOUS_SECRET_KEYS: z
    .string()
    .refine(
      (v) => v.split(',').every((k) => k.trim().length >= 32),
      'must be earlier FERRY_SECRET_KEY values separated by commas, each at least 32 characters',
    )
    .optional(),
  FERRY_DEMO: z.enum(['auto', 'off']).default('auto'),
  FERRY_IP_LOCATION: z.enum(['on', 'off']).default('off'),
  FERRY_PUBLIC_URL: z.string().url().optional(),
  FERRY_STORAGE: z.enum(['local', 's3']).default('local'),
  FERRY_STORAGE_ENCRYPTION: z.enum(['auto', 'on', 'off']).default('auto'),
  FERRY_S3_BUCKET: z.string().min(1).optional(),
  FERRY_S3_REGION: z.string().min(1).default('us-east-1'),
  FERRY_S3_ENDPOINT: z.string().url().optional(),
  FERRY_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  FERRY_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  FERRY_S3_FORCE_PATH_STYLE: z.enum(['true', 'false']).optional(),
  FERRY_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  FERRY_JOB_HEARTBEAT_SECONDS: z.coerce.number().int().min(10).max(3600).default(30),
  FERRY_JOB_SUPERVISE_SECONDS: z.coerce.number().int().min(1).max(3600).default(60),
  FERRY_JOB_RETRY_DELAY_SECONDS: z.coerce.number().int().min(1).max(3600).default(15),
  FERRY_DOWNLOAD_LINK_SECONDS: z.coerce.number().int().min(10).max(604_800).default(900),
  FERRY_ENTERPRISE_RATE_LIMIT: z.coerce.number().int().min(1).optional(),
  FERRY_ENCRYPTION_KEY: z
    .string()
    .refine(
      (v) => v.split(',').every((k) => /^[A-Za-z0-9+/_-]{43}=?$/.test(k.trim())),
      'must be base64 of exactly 32 bytes (comma-separated when rotating: the first key encrypts)',
    )
    .optional(),
  FERRY_ENCRYPTION_KEY_FILE: z.string().min(1).optional(),
  FERRY_ENCRYPTION_KEY_COMMAND: z.string().min(1).optional(),
  FERRY_DATA_KEY_ROTATION_DAYS: z.coerce.number().int().min(0).max(3650).default(90),
  FERRY_SMTP_URL: z.string().url().optional(),
  FERRY_MAIL_FROM: z.string().min(3).optional(),
  FERRY_OUTBOUND_ALLOW: z.string().optional(),
  FERRY_TRUSTED_PROXIES: z.string().optional(),
  FERRY_IMPORT_MAX_BYTES: z.coerce.number().int().min(1).default(DEFAULT_IMPORT_LIMITS.maxBytes),
  FERRY_IMPORT_MAX_ENTRIES: z.coerce.number().int().min(1).default(DEFAULT_IMPORT_LIMITS.maxEntries),
  FERRY_IMPORT_MAX_RATIO: z.coerce.number().min(1).default(DEFAULT_IMPORT_LIMITS.maxRatio),
  FERRY_IMPORT_MAX_FIELD_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(DEFAULT_IMPORT_LIMITS.maxFieldBytes),
  FERRY_IMPORT_MAX_RECORD_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(DEFAULT_IMPORT_LIMITS.maxRecordBytes),
  FERRY_IMPORT_BATCH_SIZE: z.coerce.number().int().min(1).max(50_000).default(2000),
  FERRY_EXPORT_PARTITION_ROWS: z.coerce.number().int().min(0).default(2_000_000),
  FERRY_EXPORT_PARTITIONS: z.coerce.number().int().min(1).max(256).default(8),
  FERRY_EXPORT_PARTITION_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  FERRY_EXPORT_PARTITION_LEASE_SECONDS: z.coerce.number().int().min(1).default(60),
});

export interface Config {
  /** PostgreSQL connection string; when absent Ferry runs embedded on PGlite. */
  readonly databaseUrl: string | undefined;
  /** PostgreSQL schema holding Ferry's tables (search_path); default `public`. */
  readonly databaseSchema: string | undefined;
  /** Connections per process to PostgreSQL (DATABASE_POOL_SIZE). */
  readonly databasePoolSize: number;
  /** Named prepared statements on PostgreSQL connections (DATABASE_PREPARED_STATEMENTS). */
  readonly databasePreparedStatements: boolean;
  readonly dataDir: string;
  readonly port: number;
  readonly host: string;
  readonly logLevel: z.infer<typeof schema>['LOG_LEVEL'];
  /** Key material for encrypting integration credentials and signing links. */
  readonly secretKey: string | undefined;
  /**
   * FERRY_PREVIOUS_SECRET_KEYS: earlier secret keys, newest first. API keys hashed under one
   * still work (and are hashed again under the current key when used), and links and
   * status tokens signed under one still verify; nothing new is made with them.
   */
  readonly previousSecretKeys?: readonly string[] | undefined;
  /** `auto` seeds one demo tenant when the database has no tenant yet. */
  readonly demo: 'auto' | 'off';
  /** FERRY_IP_LOCATION=on: exports may ask for the country and region of IP addresses (docs/enrichment.md). */
  readonly ipLocation: boolean;
  readonly publicUrl: string | undefined;
  /** Requests per API key per hour on the enterprise plan, unless the tenant sets its own. */
  readonly enterpriseRateLimit: number | undefined;
  readonly storage: StorageConfig;
  /** Background jobs (exports, cleanup); see docs/configuration.md. */
  readonly jobs: JobsConfig;
  /** Lifetime of a signed download link, in seconds (FERRY_DOWNLOAD_LINK_SECONDS). */
  readonly downloadLinkSeconds: number;
  /** Outgoing mail (delivery emails, failure notices); undefined when FERRY_SMTP_URL is unset. */
  readonly smtp: { readonly url: string; readonly from: string } | undefined;
  /** FERRY_OUTBOUND_ALLOW: hosts, IPs and CIDR ranges the SSRF guard lets through anyway. */
  readonly outboundAllow: readonly string[];
  /**
   * FERRY_TRUSTED_PROXIES: addresses and CIDR ranges of the reverse proxies whose
   * `X-Forwarded-For` names the client (Fastify's `trustProxy`); empty = trust no one.
   */
  readonly trustedProxies?: readonly string[] | undefined;
  /** Imports: limits on untrusted files (FERRY_IMPORT_MAX_*) and items per batch (FERRY_IMPORT_BATCH_SIZE). */
  readonly imports: { readonly limits: ImportLimits; readonly batchSize: number };
  /** Partitioned exports (FERRY_EXPORT_PARTITION*; docs/scaling.md). */
  readonly exports: { readonly partitions: PartitionSettings };
}

export interface PartitionSettings {
  /** Rows per partition: an export of fewer than twice this many rows is one stream (0 = never split). */
  readonly rows: number;
  /** Most partitions per export. */
  readonly max: number;
  /** Partitions one worker writes at the same time. */
  readonly concurrency: number;
  /** A partition whose worker sent no heartbeat for this long is taken again. */
  readonly leaseSeconds: number;
}

export interface JobsConfig {
  /** Jobs one worker process runs at the same time. */
  readonly concurrency: number;
  /** A running job's heartbeat interval; a job silent this long is handed to another worker. */
  readonly heartbeatSeconds: number;
  /** How often a worker looks for jobs whose worker died (and runs queue maintenance). */
  readonly superviseSeconds: number;
  /** First retry delay of a failed job; later retries back off exponentially. */
  readonly retryDelaySeconds: number;
}

/** Where export files live; see docs/storage.md. */
export interface StorageConfig {
  readonly kind: 'local' | 's3';
  /** Root of the local store, `<FERRY_DATA_DIR>/files`. */
  readonly localDir: string;
  readonly s3: S3Config | undefined;
  /** Encryption at rest: `auto` = on for local disk, off for S3. */
  readonly encryption: 'auto' | 'on' | 'off';
  /** FERRY_ENCRYPTION_KEY decoded; the first key encrypts, every key decrypts. Empty when unset. */
  readonly encryptionKeys: readonly Uint8Array[];
  /** FERRY_ENCRYPTION_KEY_FILE: a file of base64 master keys, one a line, the first current. */
  readonly encryptionKeyFile: string | undefined;
  /** FERRY_ENCRYPTION_KEY_COMMAND: a shell command that prints the master keys as the file holds them. */
  readonly encryptionKeyCommand: string | undefined;
  /** FERRY_DATA_KEY_ROTATION_DAYS: age at which the active data key is replaced (0 = never). */
  readonly dataKeyRotationDays: number;
}

export interface S3Config {
  readonly bucket: string;
  readonly region: string;
  readonly endpoint: string | undefined;
  /** Both set, or both undefined (the AWS SDK's default credential chain). */
  readonly accessKeyId: string | undefined;
  readonly secretAccessKey: string | undefined;
  readonly forcePathStyle: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Ferry's variables with the empty ones left out: `DATABASE_URL= npm start` (or an empty
 * line in an env file) means "not set", as `${VAR:-default}` does in a shell, so the
 * default applies instead of '' failing validation or coercing to 0.
 */
function withoutEmpty(env: Record<string, string | undefined>): Record<string, string> {
  const set: Record<string, string> = {};
  for (const name of Object.keys(schema.shape)) {
    const value = env[name];
    if (value !== undefined && value !== '') set[name] = value;
  }
  return set;
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = schema.safeParse(withoutEmpty(env));
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`invalid environment variable ${String(issue.path[0])}: ${issue.message}`);
  }
  const e = result.data;
  if (e.FERRY_STORAGE === 's3' && !e.FERRY_S3_BUCKET)
    throw new ConfigError('invalid environment variable FERRY_S3_BUCKET: required when FERRY_STORAGE=s3');
  if (!e.FERRY_S3_ACCESS_KEY_ID !== !e.FERRY_S3_SECRET_ACCESS_KEY)
    throw new ConfigError(
      'invalid environment variable FERRY_S3_SECRET_ACCESS_KEY: set both FERRY_S3_ACCESS_KEY_ID and FERRY_S3_SECRET_ACCESS_KEY, or neither',
    );
  const keySources = (
    ['FERRY_ENCRYPTION_KEY', 'FERRY_ENCRYPTION_KEY_FILE', 'FERRY_ENCRYPTION_KEY_COMMAND'] as const
  ).filter((name) => e[name] !== undefined);
  if (keySources.length > 1)
    throw new ConfigError(
      `invalid environment variable ${keySources[1]}: set only one of ${keySources.join(', ')} (the master key comes from exactly one source)`,
    );
  if (e.FERRY_SMTP_URL && !e.FERRY_MAIL_FROM)
    throw new ConfigError(
      'invalid environment variable FERRY_MAIL_FROM: required when FERRY_SMTP_URL is set',
    );
  const outboundAllow = (e.FERRY_OUTBOUND_ALLOW ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of outboundAllow) {
    try {
      parseAllowEntry(entry);
    } catch (err) {
      throw new ConfigError(`invalid environment variable FERRY_OUTBOUND_ALLOW: ${(err as Error).message}`);
    }
  }
  const trustedProxies = (e.FERRY_TRUSTED_PROXIES ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of trustedProxies) {
    const problem = trustedProxyProblem(entry);
    if (problem) throw new ConfigError(`invalid environment variable FERRY_TRUSTED_PROXIES: ${problem}`);
  }
  return Object.freeze({
    databaseUrl: e.DATABASE_URL,
    databaseSchema: e.DATABASE_SCHEMA,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS === 'on',
    dataDir: path.resolve(e.FERRY_DATA_DIR),
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    secretKey: e.FERRY_SECRET_KEY,
    previousSecretKeys: Object.freeze(
      (e.FERRY_PREVIOUS_SECRET_KEYS ?? '')
        .split(',')
        .map((k) => k.trim())
        .filter(Boolean),
    ),
    demo: e.FERRY_DEMO,
    ipLocation: e.FERRY_IP_LOCATION === 'on',
    publicUrl: e.FERRY_PUBLIC_URL,
    enterpriseRateLimit: e.FERRY_ENTERPRISE_RATE_LIMIT,
    storage: Object.freeze({
      kind: e.FERRY_STORAGE,
      localDir: path.join(path.resolve(e.FERRY_DATA_DIR), 'files'),
      s3: e.FERRY_S3_BUCKET
        ? Object.freeze({
            bucket: e.FERRY_S3_BUCKET,
            region: e.FERRY_S3_REGION,
            endpoint: e.FERRY_S3_ENDPOINT,
            accessKeyId: e.FERRY_S3_ACCESS_KEY_ID,
            secretAccessKey: e.FERRY_S3_SECRET_ACCESS_KEY,
            forcePathStyle: (e.FERRY_S3_FORCE_PATH_STYLE ?? String(Boolean(e.FERRY_S3_ENDPOINT))) === 'true',
          })
        : undefined,
      encryption: e.FERRY_STORAGE_ENCRYPTION,
      encryptionKeys: (e.FERRY_ENCRYPTION_KEY?.split(',') ?? []).map((k) => Buffer.from(k.trim(), 'base64')),
      encryptionKeyFile: e.FERRY_ENCRYPTION_KEY_FILE ? path.resolve(e.FERRY_ENCRYPTION_KEY_FILE) : undefined,
      encryptionKeyCommand: e.FERRY_ENCRYPTION_KEY_COMMAND,
      dataKeyRotationDays: e.FERRY_DATA_KEY_ROTATION_DAYS,
    }),
    jobs: Object.freeze({
      concurrency: e.FERRY_WORKER_CONCURRENCY,
      heartbeatSeconds: e.FERRY_JOB_HEARTBEAT_SECONDS,
      superviseSeconds: e.FERRY_JOB_SUPERVISE_SECONDS,
      retryDelaySeconds: e.FERRY_JOB_RETRY_DELAY_SECONDS,
    }),
    downloadLinkSeconds: e.FERRY_DOWNLOAD_LINK_SECONDS,
    smtp: e.FERRY_SMTP_URL ? Object.freeze({ url: e.FERRY_SMTP_URL, from: e.FERRY_MAIL_FROM! }) : undefined,
    outboundAllow: Object.freeze(outboundAllow),
    trustedProxies: Object.freeze(trustedProxies),
    imports: Object.freeze({
      limits: Object.freeze({
        maxBytes: e.FERRY_IMPORT_MAX_BYTES,
        maxEntries: e.FERRY_IMPORT_MAX_ENTRIES,
        maxRatio: e.FERRY_IMPORT_MAX_RATIO,
        maxFieldBytes: e.FERRY_IMPORT_MAX_FIELD_BYTES,
        maxRecordBytes: e.FERRY_IMPORT_MAX_RECORD_BYTES,
      }),
      batchSize: e.FERRY_IMPORT_BATCH_SIZE,
    }),
    exports: Object.freeze({
      partitions: Object.freeze({
        rows: e.FERRY_EXPORT_PARTITION_ROWS,
        max: e.FERRY_EXPORT_PARTITIONS,
        concurrency: e.FERRY_EXPORT_PARTITION_CONCURRENCY,
        leaseSeconds: e.FERRY_EXPORT_PARTITION_LEASE_SECONDS,
      }),
    }),
  });
}

/** Names proxy-addr (under Fastify's `trustProxy`) accepts for ranges of addresses. */
const PROXY_RANGE_NAMES = ['loopback', 'linklocal', 'uniquelocal'];

/** Why an entry of FERRY_TRUSTED_PROXIES is not an address, a CIDR range or a range name; null when it is one. */
function trustedProxyProblem(entry: string): string | null {
  if (PROXY_RANGE_NAMES.includes(entry)) return null;
  const [address, prefix, extra] = entry.split('/');
  const family = isIP(address ?? '');
  const max = family === 4 ? 32 : 128;
  if (
    family === 0 ||
    extra !== undefined ||
    (prefix !== undefined && !/^\d{1,3}$/.test(prefix)) ||
    Number(prefix ?? 0) > max
  )
    return `"${entry}" is not an IP address, a CIDR range or one of ${PROXY_RANGE_NAMES.join(', ')}`;
  return null;
}
