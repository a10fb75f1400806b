import { defineConfig } from 'vitest/config';
import { selectDialects } from './test/support/dialects.ts';

// A misspelt FERRY_TEST_DIALECTS stops the run here, before any suite is skipped for it.
selectDialects(process.env.FERRY_TEST_DIALECTS);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts an embedded PostgreSQL when none is reachable (test/support/postgres-server.ts).
    globalSetup: ['./test/support/postgres-server.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
