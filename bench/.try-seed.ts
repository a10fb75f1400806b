import { migrateToLatest } from '../src/db/migrate.ts';
import { pgliteDatabase } from '../src/db/pglite-database.ts';
import { seed } from '../src/seed/seed.ts';
const db = await pgliteDatabase();
await migrateToLatest(db.db);
const t0 = performance.now();
const s = await seed(db, {
  tenants: 2,
  conversations: 50,
  messagesPerConversation: 8,
  seed: 42,
  since: new Date('2025-01-01'),
  until: new Date('2025-04-01'),
  secretKey: 'x'.repeat(40),
});
console.log(JSON.stringify(s, null, 1), performance.now() - t0);
const r = await db.pglite.query(
  'select sender_type, content, content_sources, entities_extracted from messages order by created_at limit 12',
);
console.log(r.rows);
const c = await db.pglite.query('select * from conversations limit 2');
console.log(c.rows);
await db.close();
