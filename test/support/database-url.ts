/** The PostgreSQL the tests use unless FERRY_TEST_DATABASE_URL names another. Import-free for the global setup. */
export const DEFAULT_TEST_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';
