import { defineConfig } from 'vitest/config';
import { selectDialects } from './test/support/dialects.ts';

// A misspelt FERRY_TEST_DIALECTS stops the run here, before any suite is skipped for it.
selectDialects(process.env.FERRY_TEST_DIALECTS);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
