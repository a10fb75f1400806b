import path from 'node:path';
import { z } from 'zod';

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
  FERRY_DATA_DIR: z.string().default('./data'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FERRY_SECRET_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  FERRY_DEMO: z.enum(['auto', 'off']).default('auto'),
  FERRY_PUBLIC_URL: z.string().url().optional(),
});

export interface Config {
  /** PostgreSQL connection string; when absent Ferry runs embedded on PGlite. */
  readonly databaseUrl: string | undefined;
  /** PostgreSQL schema holding Ferry's tables (search_path); default `public`. */
  readonly databaseSchema: string | undefined;
  readonly dataDir: string;
  readonly port: number;
  readonly host: string;
  readonly logLevel: z.infer<typeof schema>['LOG_LEVEL'];
  /** Key material for encrypting integration credentials and signing links. */
  readonly secretKey: string | undefined;
  /** `auto` seeds one demo tenant when the database has no tenant yet. */
  readonly demo: 'auto' | 'off';
  readonly publicUrl: string | undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = schema.safeParse(env);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`invalid environment variable ${String(issue.path[0])}: ${issue.message}`);
  }
  const e = result.data;
  return Object.freeze({
    databaseUrl: e.DATABASE_URL,
    databaseSchema: e.DATABASE_SCHEMA,
    dataDir: path.resolve(e.FERRY_DATA_DIR),
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    secretKey: e.FERRY_SECRET_KEY,
    demo: e.FERRY_DEMO,
    publicUrl: e.FERRY_PUBLIC_URL,
  });
}
