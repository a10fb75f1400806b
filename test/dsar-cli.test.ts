import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { createTenant, type TestTenant } from './support/fixtures/auth.ts';
import { createTestDatabase, dropJobsSchema, type TestDatabase, testsDialect } from './support/databases.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;

/** `ferry dsar ...` and `ferry receipts verify` as an operator runs them, against the test schema. */
describe.skipIf(!testsDialect('postgres'))('ferry dsar', () => {
  let t: TestDatabase;
  let tenant: TestTenant;
  let env: Record<string, string>;
  let dir: string;
  const customer = randomUUID();
  const email = `Kai.Müller+${customer.slice(0, 6)}@example.com`;

  const ferry = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await run(
        path.join(REPO, 'node_modules/.bin/node'),
        [path.join(REPO, 'bin/ferry.js'), ...args],
        {
          cwd: dir,
          env: { ...process.env, ...env },
        },
      );
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-dsar-cli-'));
    env = {
      ...t.env,
      FERRY_DATA_DIR: dir,
      FERRY_SECRET_KEY: 'dsar-cli-test-secret-0123456789abcdef0123',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    tenant = await createTenant(t.database, 'pro');
    await t.database.db
      .insertInto('customers')
      .values({
        id: customer,
        tenant_id: tenant.id,
        email,
        name: 'Kai Müller',
        phone: '+4930123456789',
        country: 'DE',
        segment: 'consumer',
      })
      .execute();
    await t.database.db
      .insertInto('consent_records')
      .values({
        id: randomUUID(),
        tenant_id: tenant.id,
        customer_id: customer,
        purpose: 'marketing',
        granted: true,
        source: 'form',
        recorded_at: '2026-10-01 09:00:00.250001+00',
      })
      .execute();
  });
  afterAll(async () => {
    await t?.drop();
    await dropJobsSchema(loadConfig(env));
  });

  it('records, verifies, approves, runs and proves an erasure, and keeps the register', {
    timeout: 240_000,
  }, async () => {
    const created = await ferry(
      'dsar',
      'create',
      '--tenant',
      tenant.slug,
      '--type',
      'erasure',
      '--email',
      email,
      '--json',
    );
    expect(created.code, created.stderr).toBe(0);
    const id = JSON.parse(created.stdout).id as string;
    expect(JSON.parse(created.stdout)).toMatchObject({ status: 'received', source: 'manual' });

    const early = await ferry('dsar', 'run', '--tenant', tenant.slug, id);
    expect(early.code).toBe(1);
    expect(early.stderr.trim().split('\n')).toHaveLength(1);
    expect(early.stderr).toContain('runs once it is verified');

    const verified = await ferry(
      'dsar',
      'verify',
      '--tenant',
      tenant.slug,
      id,
      '--reason',
      'Confirmed on a call',
    );
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toContain('awaiting_approval');
    expect((await ferry('dsar', 'approve', '--tenant', tenant.slug, id)).code).toBe(0);
    const ran = await ferry('dsar', 'run', '--tenant', tenant.slug, id, '--json');
    expect(ran.code, ran.stderr).toBe(0);
    expect(JSON.parse(ran.stdout)).toMatchObject({ status: 'completed', outcome: 'erased', subject: null });

    const gone = await t.database.db
      .selectFrom('customers')
      .select('id')
      .where('id', '=', customer)
      .executeTakeFirst();
    expect(gone).toBeUndefined();

    const receiptFile = path.join(dir, 'receipt.json');
    expect((await ferry('dsar', 'receipt', '--tenant', tenant.slug, id, '--out', receiptFile)).code).toBe(0);
    const receipt = JSON.parse(readFileSync(receiptFile, 'utf8'));
    expect(receipt.receipt.request_id).toBe(id);
    expect(receipt.receipt.stores).toEqual(
      expect.arrayContaining([expect.objectContaining({ dataset: 'consent_records', deleted: 1 })]),
    );
    const verifiedReceipt = await ferry('receipts', 'verify', receiptFile);
    expect(verifiedReceipt.code, verifiedReceipt.stderr).toBe(0);
    expect(verifiedReceipt.stdout).toContain(`valid: receipt ${receipt.receipt.receipt_id}`);

    const register = await ferry('dsar', 'list', '--tenant', tenant.slug, '--csv');
    expect(register.stdout.split('\n')[0]).toBe(
      'id,type,regulation,received,verified,due,completed,status,outcome',
    );
    expect(register.stdout).toContain(`${id},erasure,gdpr,`);
    expect(register.stdout.toLowerCase()).not.toContain(email.toLowerCase());
    const summary = await ferry('dsar', 'summary', '--tenant', tenant.slug, '--json');
    expect(JSON.parse(summary.stdout)).toMatchObject({ completed_last_12_months: 1 });

    const bad = await ferry('dsar', 'create', '--tenant', tenant.slug, '--type', 'forget', '--email', email);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('type');
  });
});
