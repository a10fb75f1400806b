/**
 * One measured backup or restore in its own process, so its peak RSS is its own.
 * Usage: node bench/backup-one.ts '<json>' — prints one JSON line.
 */
import { listBackups } from '../src/backup/catalog.ts';
import { restoreInto } from '../src/backup/restore.ts';
import { type BackupContext, erasureLedger, runBackup } from '../src/backup/service.ts';
import { loadConfig } from '../src/config/config.ts';
import { openKeyring } from '../src/crypto/open-keyring.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { postgresDatabase } from '../src/db/postgres-database.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';

interface Job {
  action: 'backup' | 'restore';
  url: string;
  schema: string;
  tenant: string;
  secret: string;
  repository: string;
  /** restore: the schema to restore into (created and migrated here). */
  target?: string;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const database = postgresDatabase({ connectionString: job.url, schema: job.schema, max: 4 });
const store = new LocalObjectStore({ root: job.repository });
const { keyring, secrets } = await openKeyring(database, loadConfig({ FERRY_SECRET_KEY: job.secret }));
const ctx: BackupContext = {
  database,
  secretKey: job.secret,
  secrets,
  defaultStore: store,
  files: store,
  outbound: outboundPolicy([]),
};
const started = process.hrtime.bigint();
let out: Record<string, unknown>;
if (job.action === 'backup') {
  const row = await runBackup(ctx, { tenantId: job.tenant, trigger: 'manual', actor: 'bench' });
  out = {
    id: row.id,
    rows: row.rows,
    plainBytes: row.plain_bytes,
    writtenBytes: row.written_bytes,
    chunks: row.chunks,
    newChunks: row.new_chunks,
  };
} else {
  const target = postgresDatabase({ connectionString: job.url, schema: job.target!, max: 2 });
  await target.exec(`CREATE SCHEMA IF NOT EXISTS ${job.target}`);
  await migrateToLatest(target.db);
  const backup = (await listBackups(database.db, job.tenant))[0]!;
  const migratedAt = process.hrtime.bigint();
  const report = await restoreInto({
    store,
    destinationName: 'primary',
    tenantId: job.tenant,
    backupId: backup.id,
    mode: 'database',
    target,
    verifier: database,
    secrets: { secrets },
    keyring,
    ledger: await erasureLedger(database.db, job.tenant),
    ledgerKey: job.secret,
  });
  out = {
    rows: report.tables.reduce((n, t) => n + t.rows, 0),
    migrateSeconds: Number(migratedAt - started) / 1e9,
  };
  await target.close();
  // The migration is not part of the restore: pg_restore gets a migrated schema too.
  out.seconds = Number(process.hrtime.bigint() - migratedAt) / 1e9;
}
await database.close();
out.seconds ??= Number(process.hrtime.bigint() - started) / 1e9;
out.maxRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
process.stdout.write(`${JSON.stringify(out)}\n`);
