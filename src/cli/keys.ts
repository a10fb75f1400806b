import { type Command, InvalidArgumentError } from 'commander';
import { AUDIT_ACTIONS, recordAudit } from '../auth/audit.ts';
import { ROLES, type Role } from '../auth/context.ts';
import {
  apiKeyStatus,
  bindApiKeyPepper,
  createApiKey,
  getApiKey,
  listApiKeys,
  presentApiKey,
  revokeApiKey,
  storeKeyAllowList,
} from '../auth/keys.ts';
import { splitAllowList } from '../auth/ip-allowlist.ts';
import { MAX_OVERLAP_HOURS, rehashStatus, storeRotation } from '../auth/key-rotation.ts';
import type { Config } from '../config/config.ts';
import type { Database } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { loadTenant } from '../collect/tenant.ts';
import { loadOrCreateSecretKey } from '../lib/secret-box.ts';
import { withDatabase } from './context.ts';
import { printTable } from './tenants.ts';

/** The actor recorded in the audit log for key changes made on the command line. */
const CLI_ACTOR = 'cli';
const DAY_MS = 86_400_000;

interface CreateOptions {
  tenant: string;
  role: Role;
  name?: string;
  teamMember?: string;
  expiresInDays?: number;
  expiresAt?: Date;
  scopes?: string;
  allowedIps?: string;
  json?: boolean;
}

function parseRole(value: string): Role {
  if (!(ROLES as readonly string[]).includes(value))
    throw new InvalidArgumentError(`--role must be one of ${ROLES.join(', ')}, got "${value}"`);
  return value as Role;
}

function parseDays(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 3650)
    throw new InvalidArgumentError(`--expires-in-days must be an integer from 1 to 3650, got "${value}"`);
  return n;
}

function parseTime(value: string): Date {
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(at.getTime()))
    throw new InvalidArgumentError(
      `--expires-at must be an RFC 3339 time such as 2027-01-31T00:00:00Z, got "${value}"`,
    );
  return at;
}

function parseOverlap(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > MAX_OVERLAP_HOURS)
    throw new InvalidArgumentError(
      `--overlap-hours must be a whole number of hours from 0 to ${MAX_OVERLAP_HOURS}, got "${value}"`,
    );
  return n;
}

/** The expiry asked for with --expires-in-days or --expires-at (not both). */
function expiryOf(options: { expiresInDays?: number; expiresAt?: Date }, now: Date): Date | undefined {
  if (options.expiresInDays !== undefined && options.expiresAt !== undefined)
    throw new FerryError('invalid_parameter', 'give --expires-in-days or --expires-at, not both');
  if (options.expiresInDays !== undefined) return new Date(now.getTime() + options.expiresInDays * DAY_MS);
  return options.expiresAt;
}

/** Opens the database with the key peppers of this installation bound, as the server binds them. */
function withKeys<T>(fn: (database: Database, config: Config) => Promise<T>): Promise<T> {
  return withDatabase((database, config) => {
    bindApiKeyPepper(database, () => loadOrCreateSecretKey(config), config.previousSecretKeys);
    return fn(database, config);
  });
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('manage API keys (create, list, rotate, revoke)');

  keys
    .command('create')
    .description('create an API key; it is printed once and cannot be shown again')
    .requiredOption('--tenant <id-or-slug>', 'the tenant the key belongs to')
    .requiredOption('--role <role>', `role of the key: ${ROLES.join(', ')}`, parseRole)
    .option('--name <name>', 'a name to recognise the key by')
    .option('--team-member <id>', 'bind the key to a team member (required for agent keys)')
    .option('--expires-in-days <n>', 'the key stops working after n days', parseDays)
    .option('--expires-at <time>', 'the key stops working at this time (RFC 3339)', parseTime)
    .option('--scopes <list>', 'comma-separated actions the key is limited to (default: all the role allows)')
    .option(
      '--allowed-ips <list>',
      'comma-separated CIDR ranges the key may be used from (default: anywhere)',
    )
    .option('--json', 'print JSON')
    .action(async (options: CreateOptions) => {
      await withKeys(async (database) => {
        const tenant = await loadTenant(database, options.tenant);
        // The service names its API parameter (team_member_id); on the command line it is a flag.
        if (options.role === 'agent' && !options.teamMember)
          throw new FerryError(
            'invalid_parameter',
            `--team-member <id>: an agent key must be bound to a team member of the tenant (list them with \`ferry team-members --tenant ${tenant.slug}\`)`,
          );
        const now = new Date();
        const expiresAt = expiryOf(options, now);
        const created = await createApiKey(
          database,
          {
            tenantId: tenant.id,
            role: options.role,
            name: options.name,
            teamMemberId: options.teamMember,
            expiresAt,
            scopes: options.scopes
              ?.split(',')
              .map((s) => s.trim())
              .filter(Boolean),
            allowedIps: options.allowedIps === undefined ? undefined : splitAllowList(options.allowedIps),
            createdBy: CLI_ACTOR,
          },
          now,
        );
        await recordAudit(database, {
          tenantId: tenant.id,
          actor: CLI_ACTOR,
          action: AUDIT_ACTIONS.keyCreated,
          targetId: created.id,
          dataType: `api_key:${created.role}`,
          success: true,
          occurredAt: now,
        });
        if (options.json) {
          process.stdout.write(`${JSON.stringify(created, null, 2)}\n`);
          return;
        }
        process.stdout.write(
          [
            `API key created for tenant ${tenant.slug} (${tenant.id})`,
            '',
            `  key     ${created.key}`,
            '',
            '  This is the only time the key is shown: store it now. Ferry keeps only a hash.',
            '',
            `  id      ${created.id}`,
            `  prefix  ${created.prefix}`,
            `  role    ${created.role}${created.teamMemberId ? ` (team member ${created.teamMemberId})` : ''}`,
            ...(created.expiresAt ? [`  expires ${created.expiresAt.toISOString()}`] : []),
            ...(created.scopes.length ? [`  scopes  ${created.scopes.join(', ')}`] : []),
            ...(created.allowedIps.length ? [`  from    ${created.allowedIps.join(', ')}`] : []),
            '',
            `Use it as: curl -H "Authorization: Bearer ${created.prefix}..." <url>/api/v1/usage`,
            '',
          ].join('\n'),
        );
      });
    });

  keys
    .command('list')
    .description("list a tenant's API keys (prefix and metadata only)")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; json?: boolean }) => {
      await withKeys(async (database) => {
        const tenant = await loadTenant(database, options.tenant);
        const rows = await listApiKeys(database, tenant.id);
        const now = new Date();
        if (options.json) {
          // The API's presentation (GET /api/v1/api-keys), so scripts read one shape.
          process.stdout.write(
            `${JSON.stringify(
              rows.map((k) => presentApiKey(k, now)),
              null,
              2,
            )}\n`,
          );
          return;
        }
        if (rows.length === 0) {
          process.stdout.write(`tenant ${tenant.slug} has no API keys: run \`ferry keys create\`\n`);
          return;
        }
        printTable(
          ['ID', 'PREFIX', 'ROLE', 'NAME', 'STATUS', 'CREATED', 'EXPIRES', 'LAST USED'],
          rows.map((k) => [
            k.id,
            k.prefix,
            k.role,
            k.name ?? '',
            apiKeyStatus(k, now),
            k.createdAt.toISOString(),
            k.expiresAt?.toISOString() ?? '',
            k.lastUsedAt?.toISOString() ?? '',
          ]),
        );
      });
    });

  keys
    .command('allow-ips')
    .description("replace an API key's IP allow-list (CIDR ranges); --clear lifts it")
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<key-id>', 'id of the key (see `ferry keys list`)')
    .argument('[ranges...]', 'addresses or CIDR ranges, e.g. 203.0.113.0/24 2001:db8::/32')
    .option('--clear', 'remove every range: the key works from anywhere the tenant allows')
    .action(async (keyId: string, ranges: string[], options: { tenant: string; clear?: boolean }) => {
      if (!options.clear && ranges.length === 0)
        throw new FerryError('invalid_parameter', 'give one or more ranges, or --clear to remove them all');
      if (options.clear && ranges.length > 0)
        throw new FerryError('invalid_parameter', '--clear takes no ranges');
      await withKeys(async (database) => {
        const tenant = await loadTenant(database, options.tenant);
        const key = await storeKeyAllowList(
          database,
          { tenantId: tenant.id, actor: CLI_ACTOR, ip: null, userAgent: null },
          keyId,
          ranges.flatMap(splitAllowList),
          new Date(),
        );
        process.stdout.write(
          key.allowedIps.length
            ? `API key ${key.id} may be used from: ${key.allowedIps.join(', ')}\n`
            : `API key ${key.id} has no IP allow-list of its own\n`,
        );
      });
    });

  keys
    .command('rotate')
    .description(
      'replace an API key with a new one (same name, role, scopes, team member and addresses); the old one works for the overlap',
    )
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<key-id>', 'id of the key (see `ferry keys list`)')
    .option(
      '--overlap-hours <n>',
      `hours the old key keeps working, 0 to ${MAX_OVERLAP_HOURS} (default 24; 0 stops it at once)`,
      parseOverlap,
    )
    .option(
      '--expires-in-days <n>',
      "the new key stops working after n days (default: the old key's lifetime)",
      parseDays,
    )
    .option('--expires-at <time>', 'the new key stops working at this time (RFC 3339)', parseTime)
    .option('--json', 'print JSON')
    .action(
      async (
        keyId: string,
        options: {
          tenant: string;
          overlapHours?: number;
          expiresInDays?: number;
          expiresAt?: Date;
          json?: boolean;
        },
      ) => {
        await withKeys(async (database) => {
          const tenant = await loadTenant(database, options.tenant);
          const now = new Date();
          const { key, previous } = await storeRotation(
            database,
            { tenantId: tenant.id, actor: CLI_ACTOR, ip: null, userAgent: null },
            keyId,
            { overlapHours: options.overlapHours, expiresAt: expiryOf(options, now) },
            now,
          );
          if (options.json) {
            process.stdout.write(
              `${JSON.stringify(
                { ...presentApiKey(key, now), key: key.key, previous: presentApiKey(previous, now) },
                null,
                2,
              )}\n`,
            );
            return;
          }
          const until = previous.expiresAt!;
          process.stdout.write(
            [
              `API key ${previous.id} rotated for tenant ${tenant.slug}`,
              '',
              `  key     ${key.key}`,
              '',
              '  This is the only time the new key is shown: store it now. Ferry keeps only a hash.',
              '',
              `  id      ${key.id}`,
              `  prefix  ${key.prefix}`,
              `  role    ${key.role}${key.teamMemberId ? ` (team member ${key.teamMemberId})` : ''}`,
              ...(key.expiresAt ? [`  expires ${key.expiresAt.toISOString()}`] : []),
              '',
              until.getTime() <= now.getTime()
                ? `The old key ${previous.prefix}... stopped working now.`
                : `The old key ${previous.prefix}... keeps working until ${until.toISOString()}.`,
              '',
            ].join('\n'),
          );
        });
      },
    );

  keys
    .command('rehash-status')
    .description(
      'count the API keys whose hash still depends on a previous secret (FERRY_PREVIOUS_SECRET_KEYS)',
    )
    .option('--tenant <id-or-slug>', 'only this tenant (default: every tenant)')
    .option('--json', 'print JSON')
    .action(async (options: { tenant?: string; json?: boolean }) => {
      await withKeys(async (database, config) => {
        const tenant = options.tenant ? await loadTenant(database, options.tenant) : undefined;
        const status = await rehashStatus(database, new Date(), tenant?.id);
        const onPrevious = status.previous.reduce((a, b) => a + b, 0);
        const previousRemovable = onPrevious === 0 && status.unknown === 0;
        if (options.json) {
          process.stdout.write(
            `${JSON.stringify({ ...status, previous_removable: previousRemovable }, null, 2)}\n`,
          );
          return;
        }
        const listed = (config.previousSecretKeys?.length ?? 0) > 0;
        const lines = [
          `${status.current} active API keys are hashed under the current secret.`,
          ...status.previous.map(
            (n, i) =>
              `${n} active API keys are still hashed under previous secret #${i + 1} of FERRY_PREVIOUS_SECRET_KEYS.`,
          ),
          ...(status.unknown
            ? [
                `${status.unknown} active API keys have not been used since Ferry began recording which secret hashed them (or their secret is no longer configured); their next use records it.`,
              ]
            : []),
          `${status.inactive} revoked or expired keys are not counted: they never work again.`,
          onPrevious > 0
            ? `Keep FERRY_PREVIOUS_SECRET_KEYS: ${onPrevious} active keys still need a previous secret until they are used once (or revoked).`
            : status.unknown > 0
              ? listed
                ? `Removing FERRY_PREVIOUS_SECRET_KEYS now stops those of the ${status.unknown} unrecorded keys that were made under a previous secret.`
                : 'No previous secret is configured.'
              : listed
                ? 'Every active key uses the current secret: FERRY_PREVIOUS_SECRET_KEYS can be removed.'
                : 'Every active key uses the current secret.',
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      });
    });

  keys
    .command('revoke')
    .description('revoke an API key; it stops working at once')
    .requiredOption('--tenant <id-or-slug>', 'the tenant')
    .argument('<key-id>', 'id of the key (see `ferry keys list`)')
    .action(async (keyId: string, options: { tenant: string }) => {
      await withKeys(async (database) => {
        const tenant = await loadTenant(database, options.tenant);
        const now = new Date();
        const before = await getApiKey(database, tenant.id, keyId);
        const revoked = await revokeApiKey(database, tenant.id, keyId, now);
        if (!before.revokedAt) {
          await recordAudit(database, {
            tenantId: tenant.id,
            actor: CLI_ACTOR,
            action: AUDIT_ACTIONS.keyRevoked,
            targetId: revoked.id,
            dataType: `api_key:${revoked.role}`,
            success: true,
            occurredAt: now,
          });
          process.stdout.write(`revoked API key ${revoked.id} (${revoked.prefix}...)\n`);
        } else {
          process.stdout.write(
            `API key ${revoked.id} was already revoked at ${revoked.revokedAt?.toISOString()}\n`,
          );
        }
      });
    });
}
