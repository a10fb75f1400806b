import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordAudit } from '../src/auth/audit.ts';
import { seed } from '../src/seed/seed.ts';
import {
  createTestDatabase,
  DIALECTS,
  dropJobsSchema,
  type TestDatabase,
  testsDialect,
} from './support/databases.ts';
import { runFerry } from './support/cli.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';

for (const dialect of DIALECTS) {
  describe(`retention and legal holds over the API (${dialect})`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { conversations: 20 });
    }, 240_000);
    afterAll(async () => h?.close());

    const call = (method: 'GET' | 'PUT' | 'POST' | 'DELETE', url: string, key: string, payload?: unknown) =>
      h.app.inject({
        method,
        url,
        headers: bearer(key),
        ...(payload === undefined ? {} : { payload: payload as object }),
      });

    it('lists every policy with a quotable statement; only admins see or change them', async () => {
      const res = await call('GET', '/api/v1/retention', h.keys.admin);
      expect(res.statusCode).toBe(200);
      const policies = res.json().data as {
        dataset: string;
        keep: string;
        statement: string;
        source: string;
      }[];
      const by = Object.fromEntries(policies.map((p) => [p.dataset, p]));
      expect(by.conversations!.statement).toContain('lifetime of the account');
      expect(by.activity_logs).toMatchObject({ keep: 'P2Y', action: 'archive', archive_keep: 'P5Y' });
      expect(by.invoices).toMatchObject({ keep: 'P7Y', action: 'anonymize' });
      expect(by.audit_events).toMatchObject({ keep: 'P2Y', action: 'delete' });
      // The harness tenant is on the agency plan: export files for a year.
      expect(by.export_files).toMatchObject({ keep: 'P1Y', source: 'default' });
      for (const role of ['manager', 'analyst', 'agent'] as const)
        expect((await call('GET', '/api/v1/retention', h.keys[role])).statusCode).toBe(403);
    });

    it('refuses a bad policy with a problem that names the field, and changes nothing', async () => {
      const cases: [unknown, string][] = [
        [{ dataset: 'nonsense', keep: 'P1Y', after: 'created', action: 'delete' }, 'policies[0].dataset'],
        [
          { dataset: 'conversations', keep: '2 years', after: 'created', action: 'delete' },
          'policies[0].keep',
        ],
        [{ dataset: 'conversations', keep: 'P1Y', after: 'whenever', action: 'delete' }, 'policies[0].after'],
        [
          { dataset: 'conversations', keep: 'P1Y', after: 'last_activity', action: 'archive' },
          'policies[0].after',
        ],
        [
          { dataset: 'document_chunks', keep: 'P1Y', after: 'created', action: 'delete' },
          'policies[0].after',
        ],
        [
          { dataset: 'export_files', keep: 'P1Y', after: 'created', action: 'anonymize' },
          'policies[0].action',
        ],
      ];
      for (const [policy, field] of cases) {
        const res = await call('PUT', '/api/v1/retention', h.keys.admin, { policies: [policy] });
        expect(res.statusCode, JSON.stringify(policy)).toBe(400);
        expect(res.headers['content-type']).toContain('application/problem+json');
        expect(res.json().errors[0].parameter).toBe(field);
      }
      const twice = await call('PUT', '/api/v1/retention', h.keys.admin, {
        policies: [
          { dataset: 'conversations', keep: 'P1Y', after: 'created', action: 'delete' },
          { dataset: 'conversations', keep: 'P2Y', after: 'created', action: 'delete' },
        ],
      });
      expect(twice.statusCode).toBe(400);
      const current = await call('GET', '/api/v1/retention', h.keys.admin);
      expect((current.json().data as { source: string }[]).every((p) => p.source === 'default')).toBe(true);
    });

    it('stores overrides, previews the sweep, and returns to the defaults', async () => {
      const put = await call('PUT', '/api/v1/retention', h.keys.admin, {
        policies: [{ dataset: 'messages', keep: 'P30D', after: 'last_activity', action: 'anonymize' }],
      });
      expect(put.statusCode, put.body).toBe(200);
      const messages = (put.json().data as { dataset: string }[]).find((p) => p.dataset === 'messages');
      expect(messages).toMatchObject({ source: 'tenant', keep: 'P30D', after: 'last_activity' });
      expect((messages as unknown as { statement: string }).statement).toBe(
        'Messages are kept for 30 days after their last activity, then anonymized, unless a legal hold applies.',
      );
      const preview = await call('GET', '/api/v1/retention/preview', h.keys.admin);
      expect(preview.statusCode, preview.body).toBe(200);
      const plan = (preview.json().datasets as { dataset: string; rows: number }[]).find(
        (d) => d.dataset === 'messages',
      )!;
      const old = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM messages WHERE tenant_id = ${h.tenant.id}`.execute(h.database.db);
      // The seeded messages are from 2026-08 and -09; the clock is today's: all are past 30 days.
      expect(plan.rows).toBe(Number(old.rows[0]!.n));
      const reset = await call('PUT', '/api/v1/retention', h.keys.admin, { policies: [] });
      expect((reset.json().data as { source: string }[]).every((p) => p.source === 'default')).toBe(true);
    });

    it('places, lists with counts, and releases legal holds; refuses bad ones', async () => {
      const conversation = (
        await sql<{
          id: string;
        }>`SELECT id FROM conversations WHERE tenant_id = ${h.tenant.id} ORDER BY id LIMIT 1`.execute(
          h.database.db,
        )
      ).rows[0]!.id;
      const bad: [unknown, string][] = [
        [{ scope: 'everything', reason: 'r', matter: 'm' }, 'scope'],
        [{ scope: 'subject', reason: 'r', matter: 'm' }, 'subject'],
        [{ scope: 'dataset', reason: 'r', matter: 'm' }, 'datasets'],
        [{ scope: 'dataset', datasets: ['nope'], reason: 'r', matter: 'm' }, 'datasets[0]'],
        [
          { scope: 'conversation_ids', conversation_ids: ['x'], reason: 'r', matter: 'm' },
          'conversation_ids[0]',
        ],
        [{ scope: 'date_range', reason: 'r', matter: 'm' }, 'from'],
        [{ scope: 'date_range', from: '2026-02-01', to: '2026-01-01', reason: 'r', matter: 'm' }, 'to'],
        [{ scope: 'tenant', reason: '   ', matter: 'm' }, 'reason'],
      ];
      for (const [body, field] of bad) {
        const res = await call('POST', '/api/v1/legal-holds', h.keys.admin, body);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.json().errors?.[0]?.parameter ?? res.json().detail).toContain(field);
      }
      expect(
        (
          await call('POST', '/api/v1/legal-holds', h.keys.manager, {
            scope: 'tenant',
            reason: 'r',
            matter: 'm',
          })
        ).statusCode,
      ).toBe(403);
      const created = await call('POST', '/api/v1/legal-holds', h.keys.admin, {
        scope: 'conversation_ids',
        conversation_ids: [conversation],
        reason: 'Chargeback dispute "#4411"',
        matter: 'CB-4411',
      });
      expect(created.statusCode, created.body).toBe(201);
      const id = created.json().id as string;
      const list = await call('GET', '/api/v1/legal-holds', h.keys.admin);
      const hold = (list.json().data as { id: string; keeps: { dataset: string; rows: number }[] }[]).find(
        (x) => x.id === id,
      )!;
      const messages = await sql<{
        n: number | string;
      }>`SELECT count(*) AS n FROM messages WHERE conversation_id = ${conversation}`.execute(h.database.db);
      expect(hold.keeps).toEqual(
        expect.arrayContaining([
          { dataset: 'conversations', rows: 1 },
          { dataset: 'messages', rows: Number(messages.rows[0]!.n) },
        ]),
      );
      const noReason = await call('DELETE', `/api/v1/legal-holds/${id}`, h.keys.admin, {});
      expect(noReason.statusCode).toBe(400);
      const released = await call('DELETE', `/api/v1/legal-holds/${id}`, h.keys.admin, {
        reason: 'Dispute won',
      });
      expect(released.statusCode).toBe(200);
      expect(released.json()).toMatchObject({
        release_reason: 'Dispute won',
        released_by: expect.stringMatching(/^api_key:/),
      });
      expect(
        (await call('DELETE', `/api/v1/legal-holds/${id}`, h.keys.admin, { reason: 'again' })).statusCode,
      ).toBe(409);
      const active = await call('GET', '/api/v1/legal-holds', h.keys.admin);
      expect((active.json().data as { id: string }[]).some((x) => x.id === id)).toBe(false);
      const all = await call('GET', '/api/v1/legal-holds?include_released=true', h.keys.admin);
      expect((all.json().data as { id: string }[]).some((x) => x.id === id)).toBe(true);
      expect((await call('GET', `/api/v1/legal-holds/${crypto.randomUUID()}`, h.keys.admin)).statusCode).toBe(
        404,
      );
      // Every change is in the audit trail, which verifies.
      const audit = await sql<{
        action: string;
      }>`SELECT action FROM audit_events WHERE tenant_id = ${h.tenant.id} AND target_id = ${id} ORDER BY seq`.execute(
        h.database.db,
      );
      expect(audit.rows.map((r) => r.action)).toEqual(['legal_hold.created', 'legal_hold.released']);
      // The compliance export of the trail: the product documentation's columns, in its order.
      const trail = await call(
        'GET',
        '/api/v1/export/audit_trail?format=json&action=legal_hold.created',
        h.keys.admin,
      );
      expect(trail.statusCode, trail.body).toBe(200);
      const rows = trail.json().data as Record<string, unknown>[];
      const row = rows.find((r) => String(r.data_scope).includes(id))!;
      expect(Object.keys(row)).toEqual([
        'timestamp',
        'action_type',
        'action',
        'user_id',
        'customer_id',
        'data_type',
        'data_scope',
        'ip_address',
        'user_agent',
        'success',
        'reason',
        'legal_basis',
        'consent_status',
        'retention_period',
        'anonymization_level',
        'compliance_notes',
      ]);
      expect(row).toMatchObject({
        action_type: 'legal_hold',
        data_type: 'conversation_ids',
        legal_basis: 'legal_obligation',
        reason: 'matter CB-4411',
        success: true,
      });
      expect(String(row.compliance_notes)).toMatch(/^audit chain event \d+$/);
      expect((await call('GET', '/api/v1/export/audit_trail?format=json', h.keys.manager)).statusCode).toBe(
        403,
      );
      const verify = await call('GET', '/api/v1/audit/verify', h.keys.admin);
      expect(verify.json()).toMatchObject({ valid: true, broken: null });
      expect((await call('GET', '/api/v1/audit/verify', h.keys.manager)).statusCode).toBe(403);
    });
  });
}

describe.skipIf(!testsDialect('postgres'))('ferry retention, holds and audit on the command line', () => {
  let t: TestDatabase;
  let env: Record<string, string>;
  let dir: string;
  let slug: string;
  let tenantId: string;

  const ferry = (...args: string[]) => runFerry(args, { env: { ...process.env, ...env }, cwd: dir });

  beforeAll(async () => {
    t = await createTestDatabase('postgres');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-retention-cli-'));
    env = {
      ...t.env,
      FERRY_DATA_DIR: dir,
      FERRY_SECRET_KEY: 'retention-cli-test-secret-0123456789abcdef',
      FERRY_DEMO: 'off',
      LOG_LEVEL: 'silent',
    };
    const summary = await seed(t.database, {
      tenants: 1,
      conversations: 15,
      messagesPerConversation: 3,
      seed: 21,
      since: new Date('2023-01-01T00:00:00Z'),
      until: new Date('2023-06-01T00:00:00Z'),
      secretKey: env.FERRY_SECRET_KEY!,
    });
    slug = summary.tenants[0]!.slug;
    tenantId = summary.tenants[0]!.id;
    await recordAudit(t.database, { tenantId, actor: 'cli', action: 'export.requested', success: true });
  }, 240_000);

  afterAll(async () => {
    await t?.drop();
    if (t)
      await dropJobsSchema({
        databaseUrl: t.env.DATABASE_URL,
        databaseSchema: t.env.DATABASE_SCHEMA,
      } as never).catch(() => {});
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sets a policy, previews and runs a sweep, places and releases a hold, verifies the audit chain', {
    timeout: 120_000,
  }, async () => {
    const bad = await ferry(
      'retention',
      'set',
      '--tenant',
      slug,
      '--dataset',
      'conversations',
      '--keep',
      'two years',
      '--after',
      'created',
      '--action',
      'delete',
    );
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('keep');
    const set = await ferry(
      'retention',
      'set',
      '--tenant',
      slug,
      '--dataset',
      'conversations',
      '--keep',
      'P1Y',
      '--after',
      'created',
      '--action',
      'delete',
    );
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('Conversations are kept for 1 year after they are created, then deleted');
    const md = await ferry('retention', 'show', '--tenant', slug, '--markdown');
    expect(md.stdout).toMatch(/^## How long we keep your data/);

    const conversation = (
      await sql<{
        id: string;
      }>`SELECT id FROM conversations WHERE tenant_id = ${tenantId} ORDER BY id LIMIT 1`.execute(
        t.database.db,
      )
    ).rows[0]!.id;
    const hold = await ferry(
      'holds',
      'create',
      '--tenant',
      slug,
      '--scope',
      'conversation_ids',
      '--conversation',
      conversation,
      '--reason',
      'Court order',
      '--matter',
      'CO-1',
      '--json',
    );
    expect(hold.code, hold.stderr).toBe(0);
    const holdId = JSON.parse(hold.stdout).id as string;

    const preview = JSON.parse((await ferry('retention', 'preview', '--tenant', slug, '--json')).stdout);
    const plan = preview.datasets.find((d: { dataset: string }) => d.dataset === 'conversations');
    expect(plan).toMatchObject({ rows: 14, held: 1 });
    const sweep = await ferry('retention', 'run', '--tenant', slug, '--json');
    expect(sweep.code, sweep.stderr).toBe(0);
    expect(JSON.parse(sweep.stdout).datasets.conversations.deleted).toBe(14);
    const list = await ferry('holds', 'list', '--tenant', slug);
    expect(list.stdout).toContain('conversations 1');

    const released = await ferry('holds', 'release', holdId, '--tenant', slug, '--reason', 'Order lifted');
    expect(released.code, released.stderr).toBe(0);

    const verify = await ferry('audit', 'verify', '--tenant', slug);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/^valid: tenant/);
    await sql`UPDATE audit_events SET action = 'export.deleted' WHERE tenant_id = ${tenantId} AND seq = 2`.execute(
      t.database.db,
    );
    const broken = await ferry('audit', 'verify', '--tenant', slug);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(/^broken: tenant .* at event 2 /);
  });
});
