import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_ACTIONS, listAudit, recordAudit } from '../src/auth/audit.ts';
import type { Role } from '../src/auth/context.ts';
import { authorizeExport } from '../src/auth/policy.ts';
import { verifyApiKey } from '../src/auth/keys.ts';
import { parseExportRequest } from '../src/collect/request.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { type FerryApp, buildApp } from '../src/http/app.ts';
import {
  authTestConfig,
  bearer,
  createTenant,
  keysByRole,
  type TestTenant,
} from './support/fixtures/auth.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

function collect(): { out: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk, _enc, done) {
      chunks.push(Buffer.from(chunk));
      done();
    },
  });
  return { out, text: () => Buffer.concat(chunks).toString('utf8') };
}

for (const dialect of DIALECTS) {
  describe(`audit trail on ${dialect}`, () => {
    let t: TestDatabase;
    let app: FerryApp;
    let tenant: TestTenant;
    let other: TestTenant;
    let keys: Record<Role, string>;
    let adminKeyId: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      app = await buildApp({ database: t.database, config: authTestConfig() });
      tenant = await createTenant(t.database, 'pro');
      other = await createTenant(t.database, 'pro');
      keys = await keysByRole(t.database, tenant);
      adminKeyId = (await verifyApiKey(t.database, keys.admin))!.apiKeyId!;
    });
    afterAll(async () => {
      await app?.close();
      await t?.drop();
    });

    it('records key creation and revocation with actor, IP, user agent and target', async () => {
      const headers = { ...bearer(keys.admin), 'user-agent': 'audit-test/1.0' };
      const created = await app.inject({
        method: 'POST',
        url: '/api/v1/api-keys',
        headers,
        payload: { role: 'analyst' },
      });
      expect(created.statusCode).toBe(201);
      const id = created.json().id;
      const revoked = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${id}`, headers });
      expect(revoked.statusCode).toBe(200);
      // Revoking again changes nothing and writes nothing.
      await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${id}`, headers });

      const log = await app.inject({ url: '/api/v1/audit', headers: bearer(keys.admin) });
      expect(log.statusCode).toBe(200);
      const events = log.json().items.filter((e: { target_id: string }) => e.target_id === id);
      expect(events.map((e: { action: string }) => e.action)).toEqual(['api_key.revoked', 'api_key.created']);
      for (const e of events) {
        expect(e).toMatchObject({
          actor: `api_key:${adminKeyId}`,
          ip_address: '127.0.0.1',
          user_agent: 'audit-test/1.0',
          success: true,
          data_type: 'api_key:analyst',
          error: null,
        });
      }
      // The key itself never reaches the log.
      expect(log.body).not.toContain(created.json().key);
    });

    it('shows managers export and download actions but never key changes', async () => {
      const at = new Date('2030-03-01T09:00:00Z');
      await recordAudit(t.database, {
        tenantId: tenant.id,
        actor: 'api_key:x',
        action: AUDIT_ACTIONS.exportCompleted,
        dataType: 'conversations',
        dateRange: { from: '2030-01-01', to: '2030-01-31' },
        recordCount: 1234,
        fileBytes: 5_000_000_000,
        success: true,
        retentionUntil: new Date('2030-05-30T09:00:00Z'),
        targetId: 'exp-1',
        occurredAt: at,
      });
      await recordAudit(t.database, {
        tenantId: tenant.id,
        actor: 'api_key:x',
        action: AUDIT_ACTIONS.exportDownloaded,
        dataType: 'conversations',
        downloadCount: 1,
        ip: '203.0.113.9',
        success: true,
        targetId: 'exp-1',
        occurredAt: new Date(at.getTime() + 1000),
      });
      const manager = await app.inject({ url: '/api/v1/audit', headers: bearer(keys.manager) });
      expect(manager.statusCode).toBe(200);
      const actions = manager.json().items.map((e: { action: string }) => e.action);
      expect(actions).toEqual(['export.downloaded', 'export.completed']);
      expect(manager.json().items[1]).toMatchObject({
        date_from: '2030-01-01',
        date_to: '2030-01-31',
        record_count: 1234,
        file_bytes: 5_000_000_000,
        retention_until: '2030-05-30T09:00:00.000Z',
      });
      const asked = await app.inject({
        url: '/api/v1/audit?action=api_key.created',
        headers: bearer(keys.manager),
      });
      expect(asked.json().items).toEqual([]);
      const admin = await app.inject({ url: '/api/v1/audit', headers: bearer(keys.admin) });
      expect(admin.json().items.map((e: { action: string }) => e.action)).toEqual(
        expect.arrayContaining([
          'export.downloaded',
          'export.completed',
          'api_key.created',
          'api_key.revoked',
        ]),
      );
    });

    it('pages through events within one millisecond (the cursor keeps microseconds)', async () => {
      for (let i = 0; i < 5; i++) {
        await recordAudit(t.database, {
          tenantId: tenant.id,
          actor: 'system',
          action: 'export.failed',
          success: false,
          error: `same millisecond ${i}`,
          occurredAt: new Date('2032-03-01T00:00:00.123Z'),
        });
      }
      // What now() writes: instants that differ only below the millisecond.
      await sql`
        UPDATE audit_events a SET occurred_at = a.occurred_at + n.rn * interval '1 microsecond'
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM audit_events
              WHERE tenant_id = ${tenant.id} AND error LIKE 'same millisecond %') n
        WHERE a.id = n.id`.execute(t.database.db);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; pages < 20; pages++) {
        const page = await listAudit(
          t.database,
          { tenantId: tenant.id, role: 'admin' },
          { action: 'export.failed', from: '2032-03-01', to: '2032-03-01', limit: 2, cursor },
        );
        seen.push(...page.items.map((e) => e.error!));
        cursor = page.next_cursor ?? undefined;
        if (!cursor) break;
      }
      expect(seen).toHaveLength(5);
      expect(new Set(seen).size).toBe(5);
    });

    it('filters by action and time and pages with a cursor, newest first', async () => {
      const base = Date.parse('2031-06-01T00:00:00Z');
      for (let i = 0; i < 7; i++) {
        await recordAudit(t.database, {
          tenantId: tenant.id,
          actor: 'system',
          action: 'export.failed',
          success: false,
          error: `failure ${i}`,
          // Two events share each timestamp, so the cursor must break ties by id.
          occurredAt: new Date(base + Math.floor(i / 2) * 60_000),
        });
      }
      await recordAudit(t.database, {
        tenantId: other.id,
        actor: 'system',
        action: 'export.failed',
        success: false,
        occurredAt: new Date(base),
      });
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `action=export.failed&from=2031-06-01&to=2031-06-01&limit=3${cursor ? `&cursor=${cursor}` : ''}`;
        const res = await app.inject({ url: `/api/v1/audit?${query}`, headers: bearer(keys.admin) });
        expect(res.statusCode).toBe(200);
        const body = res.json();
        seen.push(...body.items.map((e: { error: string }) => e.error));
        const times = body.items.map((e: { occurred_at: string }) => e.occurred_at);
        expect([...times].sort().reverse()).toEqual(times);
        cursor = body.next_cursor;
        pages++;
      } while (cursor);
      expect(pages).toBe(3);
      expect([...seen].sort()).toEqual(Array.from({ length: 7 }, (_, i) => `failure ${i}`));
      expect(seen[0]).toBe('failure 6');

      const narrowed = await listAudit(
        t.database,
        { tenantId: tenant.id, role: 'admin' },
        {
          action: 'export.failed',
          from: '2031-06-01T00:01:00Z',
          to: '2031-06-01T00:03:00Z',
        },
      );
      expect(narrowed.items.map((e) => e.error).sort()).toEqual([
        'failure 2',
        'failure 3',
        'failure 4',
        'failure 5',
      ]);
    });

    it('refuses a bad cursor or date with invalid_parameter', async () => {
      for (const query of [
        'cursor=nonsense',
        'from=yesterday',
        'to=2031-13-45',
        'limit=0',
        'limit=500',
        'colour=red',
      ]) {
        const res = await app.inject({ url: `/api/v1/audit?${query}`, headers: bearer(keys.admin) });
        expect(res.statusCode, query).toBe(400);
        expect(res.json().code).toBe('invalid_parameter');
      }
    });

    it('exports the audit_log dataset through the export engine, for the tenant only', async () => {
      const decision = authorizeExport((await verifyApiKey(t.database, keys.admin))!, {
        dataset: 'audit_log',
        pii: 'full',
      });
      const request = parseExportRequest({
        tenantId: tenant.id,
        dataset: 'audit_log',
        format: 'csv',
        pii: decision.pii,
        filters: { action: 'export.completed' },
      });
      const sink = collect();
      const outcome = await exportDataset(t.database, request, sink.out);
      const lines = sink.text().trim().split('\n');
      expect(lines[0]).toBe(
        'event_id,tenant_id,timestamp,actor,action,target_id,data_type,date_from,date_to,record_count,file_bytes,download_count,ip_address,user_agent,success,error,retention_until',
      );
      expect(outcome.records).toBe(1);
      expect(lines[1]).toContain(tenant.id);
      expect(lines[1]).toContain('export.completed');
      expect(lines[1]).toContain('5000000000');

      const json = collect();
      await exportDataset(
        t.database,
        parseExportRequest({ tenantId: other.id, dataset: 'audit_log', format: 'ndjson', pii: 'enhanced' }),
        json.out,
      );
      const rows = json
        .text()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(rows).toHaveLength(1);
      expect(rows[0].tenant_id).toBe(other.id);
    });
  });
}
