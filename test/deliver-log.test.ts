import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { listDeliveryResults, recordDeliveries } from '../src/deliver/log.ts';
import type { DeliveryResult } from '../src/deliver/types.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const results: DeliveryResult[] = [
  {
    target: { type: 's3', name: 'Lake', label: 's3://lake/daily/{date}/' },
    status: 'delivered',
    attempts: 1,
    location: 's3://lake/daily/2026-11-22/c.csv',
    bytesSent: 5_000_000_000,
    checksumVerified: true,
  },
  {
    target: { type: 'sftp', name: null, label: 'sftp://ferry@sftp.example:22/in/' },
    status: 'failed',
    attempts: 4,
    location: null,
    error: 'sftp: cannot connect to sftp.example:22: timed out',
    errorCode: 'delivery_failed',
    bytesSent: 0,
    checksumVerified: false,
  },
];

for (const dialect of DIALECTS) {
  describe(`delivery results on ${dialect}`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(() => t.drop());

    test('are stored per target and read back as deliverAll reported them, per tenant', async () => {
      const tenantId = randomUUID();
      await t.database.db
        .insertInto('tenants')
        .values({
          id: tenantId,
          name: 'Acme',
          slug: 'acme',
          plan: 'pro',
          timezone: 'UTC',
          home_country: 'DE',
        })
        .execute();
      const at = new Date('2026-11-22T03:00:00Z');
      await recordDeliveries(t.database, { tenantId, exportId: 'exp_1', scheduleId: 'sch_1', results, at });
      const read = await listDeliveryResults(t.database, tenantId, 'exp_1');
      // Same time: ordered by label (s3:// before sftp://).
      expect(read).toEqual(results.map((r) => ({ ...r, at, scheduleId: 'sch_1' })));
      expect(await listDeliveryResults(t.database, randomUUID(), 'exp_1')).toEqual([]);
    });
  });
}
