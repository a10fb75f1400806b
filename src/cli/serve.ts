import type { AddressInfo } from 'node:net';
import closeWithGrace from 'close-with-grace';
import { type Command, InvalidArgumentError } from 'commander';
import { compose, type Ferry } from '../compose.ts';
import { type Config, ConfigError, loadConfig } from '../config/config.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { Database } from '../db/database.ts';
import { DEMO_SEED, seed } from '../seed/seed.ts';
import { firstAdmin, issueToken, tokenLink } from '../web/accounts.ts';

export interface ServeOptions {
  port?: number;
  host?: string;
  /** `--no-worker` sets this to false. */
  worker: boolean;
}

/** How long in-flight requests get to finish after SIGTERM/SIGINT before the process is forced down. */
const SHUTDOWN_GRACE_MS = 10_000;

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('start the API server (and, unless --no-worker, the job workers)')
    .option('--port <n>', 'port to listen on, 0 for any free port (default: $PORT or 8080)', parsePort)
    .option('--host <host>', 'interface to listen on (default: $HOST or 127.0.0.1)')
    .option('--no-worker', 'do not run job workers in this process (run `ferry worker` elsewhere)')
    .action(async (options: ServeOptions) => {
      await serve(options);
    });
}

/** Starts the server and returns once it listens; SIGTERM/SIGINT stop it gracefully. */
export async function serve(options: ServeOptions): Promise<Ferry> {
  const base = loadConfig();
  const config: Config = Object.freeze({
    ...base,
    port: options.port ?? base.port,
    host: options.host ?? base.host,
  });
  const ferry = await compose(config, { worker: options.worker });
  const { logger } = ferry;

  // Installed before seeding and listening, so an early signal also closes the database cleanly.
  const graceful = closeWithGrace(
    {
      delay: SHUTDOWN_GRACE_MS,
      logger: { error: (msg: unknown) => logger.error(msg) },
      onSecondSignal: (signal) => logger.error({ signal }, 'second signal: exiting immediately'),
      onTimeout: (delay) => logger.error(`in-flight work did not finish within ${delay} ms: exiting`),
    },
    async ({ signal, err }) => {
      if (err) logger.error({ err }, 'stopping after an uncaught error');
      else logger.info({ signal }, 'shutting down: finishing in-flight requests');
      await ferry.close();
      logger.info('stopped');
    },
  );

  try {
    const demo = config.demo === 'auto' ? await seedDemoIfEmpty(ferry.database, ferry.secrets) : undefined;
    await listen(ferry, config);
    const url = listeningUrl(ferry.app.server.address() as AddressInfo);
    const tenants = demo ? undefined : await countTenants(ferry.database);
    // A newcomer signs in with one click: a one-time link for the demo tenant's admin.
    const signInLink = demo ? await firstRunLink(ferry.database, config, demo.id, url) : undefined;
    printBanner({ config, url, demo, tenants, worker: options.worker, signInLink });
    return ferry;
  } catch (err) {
    // A server that cannot start stops everything it opened: the workers, and the
    // embedded database with its lock, so that other commands can use it at once.
    graceful.uninstall();
    await ferry.close();
    throw err;
  }
}

/** Listens on the configured address; a port that is taken or forbidden is said in one line. */
async function listen(ferry: Ferry, config: Config): Promise<void> {
  try {
    await ferry.app.listen({ port: config.port, host: config.host });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `port ${config.port} on ${config.host}`;
    if (code === 'EADDRINUSE')
      throw new ConfigError(
        `${where} is already in use by another process: stop it, or choose another port with --port or PORT`,
      );
    if (code === 'EACCES')
      throw new ConfigError(
        `${where} needs privileges this process lacks: choose a port from 1024 with --port or PORT`,
      );
    if (code === 'EADDRNOTAVAIL')
      throw new ConfigError(
        `${config.host} is not an address of this machine: choose another with --host or HOST`,
      );
    throw err;
  }
}

interface DemoTenant {
  id: string;
  slug: string;
  name: string;
}

/** Seeds one demo tenant on an empty database, so a fresh install has something to export. */
async function seedDemoIfEmpty(database: Database, secrets: SecretBox): Promise<DemoTenant | undefined> {
  if ((await countTenants(database)) > 0) return undefined;
  process.stdout.write('ferry: empty database, creating a demo tenant (FERRY_DEMO=off skips this)...\n');
  const result = await seed(database, { ...DEMO_SEED, secrets });
  return result.tenants[0];
}

/** The one-time sign-in link of the demo tenant's first admin (valid 24 hours, used once). */
async function firstRunLink(database: Database, config: Config, tenantId: string, url: string) {
  const admin = await firstAdmin(database, tenantId);
  if (!admin) return undefined;
  const token = await issueToken(database, { tenantId, memberId: admin.id }, 'sign_in', new Date());
  return { link: tokenLink(config.publicUrl ?? url, 'sign_in', token), email: admin.email };
}

async function countTenants(database: Database): Promise<number> {
  const row = await database.db
    .selectFrom('tenants')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The URL to print: wildcard addresses are shown as localhost. */
export function listeningUrl(address: AddressInfo): string {
  const wildcard = address.address === '0.0.0.0' || address.address === '::';
  const host = wildcard ? 'localhost' : address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

function printBanner(input: {
  config: Config;
  url: string;
  demo: DemoTenant | undefined;
  tenants: number | undefined;
  worker: boolean;
  signInLink: { link: string; email: string } | undefined;
}): void {
  const { config, url, demo, tenants, signInLink } = input;
  const database = config.databaseUrl
    ? `PostgreSQL${config.databaseSchema ? ` (schema ${config.databaseSchema})` : ''}`
    : `embedded PGlite in ${config.dataDir}`;
  const lines = [
    '',
    `ferry: listening on ${url} (pid ${process.pid})`,
    '',
    `  Dashboard      ${url}/app`,
    `  API            ${url}/api/v1`,
    `  API reference  ${url}/docs   (OpenAPI document: ${url}/openapi.json)`,
    `  Health         ${url}/healthz, ${url}/readyz`,
    ...(config.publicUrl ? [`  Public URL     ${config.publicUrl}`] : []),
    `  Database       ${database}`,
    `  Job workers    ${input.worker ? 'in this process' : 'off (--no-worker)'}`,
  ];
  if (demo) lines.push(`  Demo tenant    ${demo.name} (slug ${demo.slug}, id ${demo.id})`);
  else if (tenants === 0) lines.push('  Tenants        none yet: run `npx ferry seed` to create demo data');
  else lines.push(`  Tenants        ${tenants}`);
  if (signInLink)
    lines.push(
      '',
      `Open the dashboard, signed in as ${signInLink.email} (one-time link, valid 24 hours):`,
      `  ${signInLink.link}`,
      '  Later: npx ferry users reset --tenant <slug> --email <email> prints a link to set a password.',
    );
  lines.push(
    '',
    'Next steps:',
    `  curl ${url}/healthz`,
    '  npx ferry datamap     every dataset, column and privacy class Ferry can export',
    '  Ctrl-C (SIGINT) or SIGTERM stops the server after in-flight requests finish',
    ...(!config.databaseUrl
      ? [
          '  The embedded database serves one process: stop the server before other ferry commands',
          '  (ferry tenants, ferry keys create, ...), or run on PostgreSQL with DATABASE_URL.',
        ]
      : ['  npx ferry tenants     list tenants']),
    '',
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535)
    throw new InvalidArgumentError(`--port must be an integer from 0 to 65535, got "${value}"`);
  return port;
}
