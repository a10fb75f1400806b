import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
const admin = postgresDatabase({ connectionString: 'postgres://postgres@127.0.0.1:5432/test', max: 1 });
await admin.exec('DROP DATABASE IF EXISTS ferry_seed_probe');
await admin.exec('CREATE DATABASE ferry_seed_probe');
await admin.close();
const db = postgresDatabase({
  connectionString: 'postgres://postgres@127.0.0.1:5432/ferry_seed_probe',
  max: 1,
});
await migrateToLatest(db.db);
await db.close();
