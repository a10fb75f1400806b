import { type Kysely, sql } from 'kysely';
import { validateRecipients } from '../crypto/age.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { DB } from '../db/schema.ts';
import { createTargetS3Client } from '../deliver/clients.ts';
import { openTarget, parseTarget, presentTarget, sealTarget } from '../deliver/targets.ts';
import type { S3Target, SftpTarget } from '../deliver/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import type { OutboundPolicy } from '../lib/ssrf.ts';
import { LocalObjectStore } from '../store/local-object-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { S3ObjectStore } from '../store/s3-object-store.ts';
import { sftpObjectStore } from '../store/sftp-object-store.ts';
import { type KeepPolicy, parseKeepPolicy } from './forget.ts';

/**
 * Where a tenant's backups go. `default` is the operator's own storage (FERRY_STORAGE: local
 * disk or the S3 bucket); `local` a directory of the server (set by an operator with the
 * CLI only); `s3` and `sftp` take the same fields as the delivery targets of schedules
 * (docs/schedules.md), secrets sealed the same way.
 */
export type Destination<S = string> =
  | { readonly type: 'default'; readonly name: string }
  | { readonly type: 'local'; readonly name: string; readonly path: string }
  | (S3Target<S> & { readonly name: string })
  | (SftpTarget<S> & { readonly name: string });

export const STORED_FILES = ['reference', 'content'] as const;
export const FREQUENCIES = ['daily', 'weekly'] as const;

export interface BackupSettings {
  readonly tenant_id: string;
  readonly enabled: boolean;
  readonly frequency: (typeof FREQUENCIES)[number];
  /** `HH:MM` in the tenant's time zone. */
  readonly time_of_day: string;
  /** ISO weekday (1 Monday … 7 Sunday) of weekly backups. */
  readonly weekday: number;
  readonly destinations: readonly Destination<unknown>[];
  readonly keep: KeepPolicy;
  readonly stored_files: (typeof STORED_FILES)[number];
  /** The tenant's own age recipients: each backup key is encrypted to them as well. */
  readonly recipients: readonly string[];
  /** ISO weekday of the scheduled full verification. */
  readonly verify_weekday: number;
  /** Day of the month of the scheduled restore drill. */
  readonly drill_day: number;
  readonly updated_at: Date | null;
  readonly updated_by: string;
}

/**
 * The default preset, from the product documentation's frequency table: conversations,
 * analytics, audit logs and revenue are backed up daily (documents and account
 * configuration weekly, which a daily backup covers); a backup is one consistent snapshot of
 * the whole tenant, so the keep rules keep the longest period of the table at a coarser
 * grain: a month of dailies, a year of weeklies (analytics, account configuration: 1 year),
 * two years of monthlies (conversations: 2 years) and seven yearlies (audit logs and revenue:
 * 7 years). Rows a retention policy has since removed come back with an old backup and are
 * swept again (docs/backup.md#retention).
 */
export const DEFAULT_KEEP: KeepPolicy = { keep_daily: 30, keep_weekly: 52, keep_monthly: 24, keep_yearly: 7 };

export const DEFAULT_DESTINATIONS: readonly Destination[] = [{ type: 'default', name: 'primary' }];

export function defaultSettings(tenantId: string): BackupSettings {
  return {
    tenant_id: tenantId,
    enabled: false,
    frequency: 'daily',
    time_of_day: '02:00',
    weekday: 1,
    destinations: DEFAULT_DESTINATIONS,
    keep: DEFAULT_KEEP,
    stored_files: 'reference',
    recipients: [],
    verify_weekday: 7,
    drill_day: 15,
    updated_at: null,
    updated_by: 'system',
  };
}

interface SettingsRow {
  tenant_id: string;
  enabled: boolean;
  frequency: BackupSettings['frequency'];
  time_of_day: string;
  weekday: number;
  destinations: unknown;
  keep: unknown;
  stored_files: BackupSettings['stored_files'];
  recipients: string[];
  verify_weekday: number;
  drill_day: number;
  updated_at: Date;
  updated_by: string;
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

export async function getBackupSettings(db: Kysely<DB>, tenantId: string): Promise<BackupSettings> {
  const r = await sql<SettingsRow>`SELECT * FROM backup_settings WHERE tenant_id = ${tenantId}`.execute(db);
  const row = r.rows[0];
  if (!row) return defaultSettings(tenantId);
  const destinations = json<Destination<unknown>[]>(row.destinations);
  const keep = json<KeepPolicy>(row.keep);
  return {
    ...row,
    destinations: destinations.length ? destinations : DEFAULT_DESTINATIONS,
    keep: Object.keys(keep).length ? keep : DEFAULT_KEEP,
    recipients: row.recipients ?? [],
  };
}

/** Settings as shown by the API and the dashboard: secrets masked. */
export async function presentSettings(
  settings: BackupSettings,
  secrets: SecretBox,
): Promise<Record<string, unknown>> {
  return {
    ...settings,
    updated_at: settings.updated_at?.toISOString() ?? null,
    destinations: await Promise.all(
      settings.destinations.map(async (d) =>
        d.type === 's3' || d.type === 'sftp'
          ? { ...(await presentTarget(d as never, secrets)), name: d.name }
          : d,
      ),
    ),
  };
}

const TIME = /^([01]\d|2[0-3]):[0-5]\d$/;

/** Parses destinations from user input; `local` only when an operator sets them (`allowLocal`). */
export function parseDestinations(input: unknown, options: { allowLocal: boolean }): Destination[] {
  if (!Array.isArray(input) || input.length === 0 || input.length > 2)
    throw invalid(
      'destinations',
      'must list one or two destinations (the 3-2-1 rule: a local and an off-site copy)',
    );
  const names = new Set<string>();
  return input.map((raw, i) => {
    const field = `destinations[${i}]`;
    if (typeof raw !== 'object' || raw === null) throw invalid(field, 'must be an object');
    const { type, name } = raw as { type?: unknown; name?: unknown };
    if (typeof name !== 'string' || !/^[a-z0-9][a-z0-9_-]{0,39}$/.test(name))
      throw invalid(`${field}.name`, 'must be 1-40 characters of a-z, 0-9, _ and -');
    if (names.has(name)) throw invalid(`${field}.name`, `"${name}" is used twice`);
    names.add(name);
    if (type === 'default') return { type, name };
    if (type === 'local') {
      if (!options.allowLocal)
        throw invalid(
          `${field}.type`,
          'a server directory can only be set by an operator (ferry backup settings)',
        );
      const { path } = raw as { path?: unknown };
      if (typeof path !== 'string' || !path.startsWith('/'))
        throw invalid(`${field}.path`, 'must be an absolute path');
      return { type, name, path };
    }
    if (type === 's3' || type === 'sftp') {
      const { name: _n, ...rest } = raw as Record<string, unknown>;
      // Backups keep their own layout under backups/<tenant>/: an S3 destination needs no prefix.
      const target = parseTarget(type === 's3' ? { prefix: '', ...rest } : rest, field);
      return { ...target, name } as Destination;
    }
    throw invalid(`${field}.type`, 'is not a destination type', ['default', 'local', 's3', 'sftp']);
  });
}

export interface SettingsInput {
  enabled?: boolean;
  frequency?: string;
  time_of_day?: string;
  weekday?: number;
  destinations?: unknown;
  keep?: Record<string, unknown>;
  stored_files?: string;
  recipients?: string[];
  verify_weekday?: number;
  drill_day?: number;
}

export async function putBackupSettings(
  db: Kysely<DB>,
  tenantId: string,
  input: SettingsInput,
  options: { secrets: SecretBox; actor: string; allowLocal?: boolean },
): Promise<BackupSettings> {
  const current = await getBackupSettings(db, tenantId);
  if (input.frequency !== undefined && !(FREQUENCIES as readonly string[]).includes(input.frequency))
    throw invalid('frequency', 'is not a backup frequency', FREQUENCIES);
  if (input.time_of_day !== undefined && !TIME.test(input.time_of_day))
    throw invalid('time_of_day', 'must be HH:MM (24-hour clock, in the tenant time zone)');
  for (const [field, max] of [
    ['weekday', 7],
    ['verify_weekday', 7],
    ['drill_day', 28],
  ] as const) {
    const v = input[field];
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > max))
      throw invalid(field, `must be a whole number from 1 to ${max}`);
  }
  if (input.stored_files !== undefined && !(STORED_FILES as readonly string[]).includes(input.stored_files))
    throw invalid('stored_files', 'is not a way to back up stored files', STORED_FILES);
  const keep = input.keep !== undefined ? parseKeepPolicy(input.keep) : current.keep;
  const recipients =
    input.recipients !== undefined
      ? input.recipients.length
        ? validateRecipients(input.recipients)
        : []
      : current.recipients;
  const destinations =
    input.destinations !== undefined
      ? await Promise.all(
          parseDestinations(input.destinations, { allowLocal: options.allowLocal ?? false }).map(async (d) =>
            d.type === 's3' || d.type === 'sftp'
              ? { ...(await sealTarget(d as never, options.secrets)), name: d.name }
              : d,
          ),
        )
      : current.destinations;
  const next = {
    enabled: input.enabled ?? current.enabled,
    frequency: (input.frequency ?? current.frequency) as BackupSettings['frequency'],
    time_of_day: input.time_of_day ?? current.time_of_day,
    weekday: input.weekday ?? current.weekday,
    stored_files: (input.stored_files ?? current.stored_files) as BackupSettings['stored_files'],
    verify_weekday: input.verify_weekday ?? current.verify_weekday,
    drill_day: input.drill_day ?? current.drill_day,
  };
  await sql`INSERT INTO backup_settings (tenant_id, enabled, frequency, time_of_day, weekday, destinations, keep,
      stored_files, recipients, verify_weekday, drill_day, updated_at, updated_by)
    VALUES (${tenantId}, ${next.enabled}, ${next.frequency}, ${next.time_of_day}, ${next.weekday},
      ${JSON.stringify(destinations)}::jsonb, ${JSON.stringify(keep)}::jsonb, ${next.stored_files},
      ${recipients}::text[], ${next.verify_weekday}, ${next.drill_day}, now(), ${options.actor})
    ON CONFLICT (tenant_id) DO UPDATE SET enabled = EXCLUDED.enabled, frequency = EXCLUDED.frequency,
      time_of_day = EXCLUDED.time_of_day, weekday = EXCLUDED.weekday, destinations = EXCLUDED.destinations,
      keep = EXCLUDED.keep, stored_files = EXCLUDED.stored_files, recipients = EXCLUDED.recipients,
      verify_weekday = EXCLUDED.verify_weekday, drill_day = EXCLUDED.drill_day,
      updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by`.execute(db);
  return getBackupSettings(db, tenantId);
}

/** An opened destination: its name and store (closed after use). */
export interface OpenedDestination {
  readonly name: string;
  readonly label: string;
  readonly store: ObjectStore;
  close(): Promise<void>;
}

export interface DestinationDeps {
  /** The operator's storage without encryption at rest (chunks are encrypted already). */
  readonly defaultStore: ObjectStore;
  /** Opens the destinations' sealed credentials. */
  readonly secrets: SecretBox;
  readonly outbound: OutboundPolicy;
}

/** Opens a destination's object store. */
export async function openDestination(
  destination: Destination<unknown>,
  deps: DestinationDeps,
): Promise<OpenedDestination> {
  const none = async () => {};
  switch (destination.type) {
    case 'default':
      return {
        name: destination.name,
        label: `ferry storage (${deps.defaultStore.kind})`,
        store: deps.defaultStore,
        close: none,
      };
    case 'local':
      return {
        name: destination.name,
        label: `local ${destination.path}`,
        store: new LocalObjectStore({ root: destination.path }),
        close: none,
      };
    case 's3': {
      const target = (await openTarget(destination as never, deps.secrets)) as S3Target<string>;
      const client = createTargetS3Client(target, deps.outbound);
      const store = new S3ObjectStore({
        api: client,
        bucket: target.bucket,
        presign: async () => {
          throw new FerryError('not_found', 'backup objects have no download links');
        },
      });
      return {
        name: destination.name,
        label: `s3://${target.bucket}/`,
        store,
        close: async () => client.destroy(),
      };
    }
    case 'sftp': {
      const target = (await openTarget(destination as never, deps.secrets)) as SftpTarget<string>;
      const store = await sftpObjectStore({
        host: target.host,
        port: target.port,
        username: target.username,
        ...(target.private_key ? { privateKey: target.private_key } : {}),
        ...(target.password ? { password: target.password } : {}),
        ...(target.passphrase ? { passphrase: target.passphrase } : {}),
        hostKeyFingerprint: target.host_key,
        root: target.directory,
        outbound: deps.outbound,
      });
      return {
        name: destination.name,
        label: `sftp://${target.host}:${target.port}${target.directory}`,
        store,
        close: () => store.close(),
      };
    }
  }
}
