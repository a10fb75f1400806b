import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/config.ts';

describe('configuration from the environment', () => {
  it('reads an empty DATABASE_URL as unset: the embedded database, not "Invalid URL"', () => {
    const config = loadConfig({ DATABASE_URL: '', DATABASE_SCHEMA: '' });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.databaseSchema).toBeUndefined();
    expect(config).toEqual(loadConfig({}));
  });

  it('reads every empty variable as unset, so each takes its default', () => {
    const config = loadConfig({
      FERRY_PUBLIC_URL: '',
      PORT: '',
      DATABASE_POOL_SIZE: '',
      FERRY_WORKER_CONCURRENCY: '',
      FERRY_ENTERPRISE_RATE_LIMIT: '',
      LOG_LEVEL: '',
      FERRY_STORAGE: '',
      FERRY_S3_ACCESS_KEY_ID: '',
      FERRY_SECRET_KEY: '',
      FERRY_ENCRYPTION_KEY: '',
      FERRY_SMTP_URL: '',
      FERRY_OUTBOUND_ALLOW: '',
    });
    expect(config.publicUrl).toBeUndefined();
    expect(config.port).toBe(8080);
    expect(config.databasePoolSize).toBe(10);
    expect(config.jobs.concurrency).toBe(2);
    expect(config.enterpriseRateLimit).toBeUndefined();
    expect(config.logLevel).toBe('info');
    expect(config.storage.kind).toBe('local');
    expect(config.storage.encryptionKeys).toEqual([]);
    expect(config.secretKey).toBeUndefined();
    expect(config.smtp).toBeUndefined();
    expect(config.outboundAllow).toEqual([]);
  });

  it('still rejects a value that is set but invalid, naming the variable', () => {
    expect(() => loadConfig({ DATABASE_URL: 'not a url' })).toThrow(ConfigError);
    expect(() => loadConfig({ FERRY_PUBLIC_URL: ' ' })).toThrow(/FERRY_PUBLIC_URL/);
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/invalid environment variable PORT/);
  });
});
