import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { promisify } from 'node:util';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { waitForRun } from './support/wait.ts';
import { MARKETING, TECHNICAL, VIP } from './support/fixtures/export-configs.ts';

const run = promisify(execFile);
const PROBLEM = /^application\/problem\+json/;

interface ConfigJson {
  id: string;
  export_name: string;
  definition: Record<string, unknown>;
  compiles_to: {
    datasets: string[];
    format: string | null;
    package: string;
    files: string[];
    columns: string[] | null;
  };
  schedule: string | null;
  schedule_id: string | null;
  last_run: { at: string; export_id: string } | null;
  links: { self: string; run: string; schedule?: string };
}

for (const dialect of DIALECTS) {
  describe(`saved export configurations over the API (${dialect})`, () => {
    let h: ExportHarness;
    let dir: string;
    const saved: Record<string, ConfigJson> = {};

    const call = (method: string, url: string, body?: unknown, key = h.keys.admin, headers = {}) =>
      h.app.inject({
        method: method as 'GET',
        url,
        headers: { ...bearer(key), ...headers },
        ...(body !== undefined ? { payload: body as object } : {}),
      });

    /** Runs a configuration through the API and the worker, and downloads its file. */
    async function runToFile(id: string) {
      const res = await call('POST', `/api/v1/export-configs/${id}/run`);
      expect(res.statusCode, res.body).toBe(202);
      const accepted = res.json() as { id: string; status: string };
      expect(accepted.status).toBe('queued');
      const done = await h.waitForExport(accepted.id, undefined, { timeoutMs: 120_000 });
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const link = await call('GET', `/api/v1/exports/${accepted.id}/download`);
      expect(link.statusCode, link.body).toBe(200);
      const url = (link.json() as { url: string }).url;
      const file = await h.app.inject({ method: 'GET', url: url.slice(url.indexOf('/api/')) });
      expect(file.statusCode).toBe(200);
      return { exportId: accepted.id, name: done.files[0]!.name, bytes: file.rawPayload };
    }

    async function zipListing(bytes: Buffer): Promise<string[]> {
      const file = path.join(dir, `${Math.random().toString(36).slice(2)}.zip`);
      await writeFile(file, bytes);
      return (await run('unzip', ['-Z1', file])).stdout.split('\n').filter(Boolean);
    }

    async function zipEntry(bytes: Buffer, entry: string): Promise<string> {
      const file = path.join(dir, `${Math.random().toString(36).slice(2)}.zip`);
      await writeFile(file, bytes);
      return (await run('unzip', ['-p', file, entry], { maxBuffer: 64 * 1024 * 1024 })).stdout;
    }

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, conversations: 400 });
      dir = await mkdtemp(path.join(tmpdir(), 'ferry-configs-'));
      // The seeded revenue is small; large deals on enterprise conversations, on both sides of
      // VIP's thresholds (rating 4, value 1000), so the selection has rows in and rows out.
      const enterprise = await sql<{ id: string; customer_id: string; start_timestamp: Date }>`
        SELECT c.id, c.customer_id, c.start_timestamp FROM conversations c JOIN customers cu ON cu.id = c.customer_id
        WHERE c.tenant_id = ${h.tenant.id} AND cu.segment = 'enterprise' ORDER BY c.id LIMIT 4`.execute(
        h.database.db,
      );
      const deals: [number, string][] = [
        [5, '1500.10'],
        [4, '1000.00'],
        [3, '5000.00'],
        [5, '999.99'],
      ];
      for (const [i, c] of enterprise.rows.entries()) {
        const [rating, amount] = deals[i]!;
        await sql`UPDATE conversations SET satisfaction_score = ${rating} WHERE id = ${c.id}`.execute(
          h.database.db,
        );
        await sql`
          INSERT INTO revenue_events (id, tenant_id, customer_id, conversation_ids, amount, currency, transaction_type,
            product_category, customer_segment, campaign, occurred_at)
          VALUES (${randomUUID()}, ${h.tenant.id}, ${c.customer_id}, ARRAY[${c.id}]::uuid[], ${amount}, 'EUR', 'purchase',
            'Plan "Pro" 🚀', 'enterprise', '=HYPERLINK("x")', ${new Date(c.start_timestamp.getTime() + 3_600_000)})`.execute(
          h.database.db,
        );
      }
    }, 240_000);
    afterAll(async () => {
      await h?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('saves the three product examples as written and says what each compiles to', async () => {
      for (const example of [VIP, TECHNICAL, MARKETING]) {
        const res = await call('POST', '/api/v1/export-configs', example);
        expect(res.statusCode, res.body).toBe(201);
        const body = res.json() as ConfigJson;
        expect(res.headers.location).toBe(`/api/v1/export-configs/${body.id}`);
        expect(body.export_name).toBe(example.export_name);
        expect(body.definition).toEqual(example);
        saved[example.export_name] = body;
      }
      const vip = saved[VIP.export_name]!;
      expect(vip.compiles_to).toEqual({
        datasets: ['conversations'],
        format: 'csv',
        package: 'none',
        files: ['conversations.csv'],
        columns: VIP.columns,
      });
      expect(vip.schedule).toBe('weekly');
      expect(saved[TECHNICAL.export_name]!.compiles_to.files).toEqual(['conversations.csv', 'messages.csv']);
      expect(saved[TECHNICAL.export_name]!.compiles_to.package).toBe('zip');
      expect(saved[MARKETING.export_name]!.compiles_to.files).toEqual([
        'conversations.csv',
        'revenue_attribution.csv',
        'marketing_campaigns.csv',
        'aggregations/daily_totals.csv',
        'aggregations/channel_performance.csv',
      ]);
      expect(saved[TECHNICAL.export_name]!.schedule_id).toBeNull();

      const list = await call('GET', '/api/v1/export-configs?limit=2');
      expect(list.statusCode).toBe(200);
      const first = list.json() as { data: ConfigJson[]; next_cursor: string | null };
      expect(first.data).toHaveLength(2);
      const second = (
        await call('GET', `/api/v1/export-configs?limit=2&cursor=${encodeURIComponent(first.next_cursor!)}`)
      ).json() as { data: ConfigJson[]; next_cursor: string | null };
      expect(second.data).toHaveLength(1);
      expect(second.next_cursor).toBeNull();
      expect([...first.data, ...second.data].map((c) => c.export_name).sort()).toEqual(
        [VIP.export_name, TECHNICAL.export_name, MARKETING.export_name].sort(),
      );
    });

    it('keeps a schedule that runs the configuration, in step with it', async () => {
      const vip = saved[VIP.export_name]!;
      expect(vip.schedule_id).toMatch(/^[0-9a-f-]{36}$/);
      const schedule = (await call('GET', `/api/v1/schedules/${vip.schedule_id}`)).json() as {
        name: string;
        frequency: { type: string; days?: string[] };
        time: string;
        datasets: { dataset: string; mode: string; period?: string; config?: string }[];
        targets: unknown[];
      };
      expect(schedule.name).toBe(VIP.export_name);
      expect(schedule.frequency).toEqual({ type: 'weekly', days: ['monday'] });
      expect(schedule.time).toBe('06:00');
      expect(schedule.datasets).toEqual([
        { dataset: 'conversations', mode: 'window', period: 'previous_week', config: vip.id },
      ]);
      // What the configuration decides is changed on the configuration.
      const refused = await call('PATCH', `/api/v1/schedules/${vip.schedule_id}`, { format: 'json' });
      expect(refused.statusCode).toBe(400);
      expect(refused.json().detail).toContain(`/api/v1/export-configs/${vip.id}`);

      const tech = saved[TECHNICAL.export_name]!;
      const daily = await call('PATCH', `/api/v1/export-configs/${tech.id}`, { schedule: '30 4 * * 1-5' });
      expect(daily.statusCode, daily.body).toBe(200);
      const scheduled = daily.json() as ConfigJson;
      expect(scheduled.schedule_id).not.toBeNull();
      const cron = (await call('GET', `/api/v1/schedules/${scheduled.schedule_id}`)).json() as {
        cron: string;
        datasets: { mode: string }[];
      };
      expect(cron.cron).toBe('30 4 * * 1-5');
      expect(cron.datasets[0]!.mode).toBe('full');
      const unscheduled = (
        await call('PATCH', `/api/v1/export-configs/${tech.id}`, { schedule: null })
      ).json() as ConfigJson;
      expect(unscheduled.schedule_id).toBeNull();
      expect(unscheduled.definition).toEqual(TECHNICAL);
      expect((await call('GET', `/api/v1/schedules/${scheduled.schedule_id}`)).statusCode).toBe(404);
    });

    it('runs VIP to one CSV of exactly its six columns, with the rows independent SQL selects', async () => {
      const vip = saved[VIP.export_name]!;
      const { name, bytes, exportId } = await runToFile(vip.id);
      expect(name).toMatch(/^vip-customer-conversations-\d{8}T\d{6}Z\.csv$/);
      const rows = parse(bytes) as string[][];
      expect(rows[0]).toEqual(VIP.columns);
      const expected = await sql<{ id: string; satisfaction_score: number; attributed: string }>`
        WITH value AS (
          SELECT c.id, sum(r.amount) AS total
          FROM conversations c
          JOIN revenue_events r ON r.tenant_id = c.tenant_id AND c.id = ANY (r.conversation_ids)
            AND c.start_timestamp < r.occurred_at
          WHERE c.tenant_id = ${h.tenant.id}
          GROUP BY c.id
        )
        SELECT c.id, c.satisfaction_score
        FROM conversations c
        JOIN customers cu ON cu.id = c.customer_id
        JOIN value v ON v.id = c.id
        WHERE c.tenant_id = ${h.tenant.id} AND cu.segment IN ('enterprise', 'vip')
          AND c.satisfaction_score >= 4 AND v.total >= 1000
        ORDER BY c.id`.execute(h.database.db);
      expect(expected.rows.length).toBeGreaterThan(0);
      const got = rows
        .slice(1)
        .map((r) => r[0]!)
        .sort();
      expect(got).toEqual(expected.rows.map((r) => r.id).sort());
      for (const row of rows.slice(1)) expect(Number(row[3])).toBeGreaterThanOrEqual(4);

      const after = (await call('GET', `/api/v1/export-configs/${vip.id}`)).json() as ConfigJson;
      expect(after.last_run?.export_id).toBe(exportId);
    });

    it('runs Technical Escalation Analysis to a package of conversations.csv and messages.csv', async () => {
      const tech = saved[TECHNICAL.export_name]!;
      const { name, bytes } = await runToFile(tech.id);
      expect(name).toMatch(/^technical-escalation-analysis-.*\.zip$/);
      const root = name.replace(/\.zip$/, '');
      const entries = await zipListing(bytes);
      expect(entries).toEqual(expect.arrayContaining([`${root}/conversations.csv`, `${root}/messages.csv`]));
      const conversations = parse(await zipEntry(bytes, `${root}/conversations.csv`)) as string[][];
      const header = conversations[0]!;
      expect(header).toEqual(expect.arrayContaining(['resolution_notes', 'follow_up_required']));
      const ids = new Set(conversations.slice(1).map((r) => r[header.indexOf('conversation_id')]!));
      const expected = await sql<{ id: string }>`
        SELECT id FROM conversations
        WHERE tenant_id = ${h.tenant.id} AND escalated
          AND topics_detected && ARRAY['technical_support', 'bug_report', 'integration']
          AND ai_confidence_avg <= 0.5`.execute(h.database.db);
      expect([...ids].sort()).toEqual(expected.rows.map((r) => r.id).sort());
      const messages = parse(await zipEntry(bytes, `${root}/messages.csv`)) as string[][];
      const conversationColumn = messages[0]!.indexOf('conversation_id');
      expect(conversationColumn).toBeGreaterThanOrEqual(0);
      for (const row of messages.slice(1)) expect(ids.has(row[conversationColumn]!)).toBe(true);
    });

    it('runs Marketing Attribution Data to a package of its five files', async () => {
      const { name, bytes } = await runToFile(saved[MARKETING.export_name]!.id);
      const root = name.replace(/\.zip$/, '');
      const entries = await zipListing(bytes);
      for (const file of [
        'conversations.csv',
        'revenue_attribution.csv',
        'marketing_campaigns.csv',
        'aggregations/daily_totals.csv',
        'aggregations/channel_performance.csv',
      ])
        expect(entries).toContain(`${root}/${file}`);
    });

    it('answers a run retried with the same Idempotency-Key with the first export', async () => {
      const id = saved[VIP.export_name]!.id;
      const headers = { 'idempotency-key': `configs-${dialect}` };
      const first = await call('POST', `/api/v1/export-configs/${id}/run`, undefined, h.keys.admin, headers);
      const again = await call('POST', `/api/v1/export-configs/${id}/run`, undefined, h.keys.admin, headers);
      expect(first.statusCode).toBe(202);
      expect(again.statusCode).toBe(202);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.json().id).toBe(first.json().id);
      await h.waitForExport(first.json().id);
    });

    it('refuses an unknown filter, column, join or aggregation with a 400 naming it and what is allowed', async () => {
      const cases: [Record<string, unknown>, string, string][] = [
        [{ export_name: 'x1', filters: { mood: 'happy' } }, 'filters.mood', 'customer_segments'],
        [{ export_name: 'x2', columns: ['conversation_id', 'shoe_size'] }, 'shoe_size', 'attributed_revenue'],
        [{ export_name: 'x3', join_with: 'weather' }, 'join_with', 'marketing_campaigns'],
        [{ export_name: 'x4', aggregations: ['hourly_totals'] }, 'aggregations[0]', 'daily_totals'],
        [{ export_name: 'x5', colour: 'blue' }, 'colour', 'export_name'],
      ];
      for (const [body, named, allowed] of cases) {
        const res = await call('POST', '/api/v1/export-configs', body);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        const problem = res.json() as { code: string; detail: string };
        expect(problem.code).toBe('invalid_parameter');
        expect(problem.detail).toContain(named);
        expect(problem.detail).toContain(allowed);
      }
      const listed = (await call('GET', '/api/v1/export-configs')).json() as { data: ConfigJson[] };
      expect(listed.data.map((c) => c.export_name)).not.toContain('x1');
    });

    it('keeps names unique per tenant without case, and checks a change as a whole', async () => {
      const taken = await call('POST', '/api/v1/export-configs', {
        export_name: 'vip customer CONVERSATIONS',
      });
      expect(taken.statusCode).toBe(409);
      const id = saved[MARKETING.export_name]!.id;
      const bad = await call('PATCH', `/api/v1/export-configs/${id}`, { aggregations: ['weekly_totals'] });
      expect(bad.statusCode).toBe(400);
      expect((await call('GET', `/api/v1/export-configs/${id}`)).json().definition).toEqual(MARKETING);
      const renamed = await call('PATCH', `/api/v1/export-configs/${id}`, {
        export_name: 'Marketing "Q4" 📈',
        format: 'json',
      });
      expect(renamed.statusCode, renamed.body).toBe(200);
      expect(renamed.json().definition).toEqual({
        ...MARKETING,
        export_name: 'Marketing "Q4" 📈',
        format: 'json',
      });
      expect(renamed.json().compiles_to.files[0]).toBe('conversations.json');
    });

    it("answers 404 for another tenant's configuration, and follows the roles", async () => {
      const id = saved[VIP.export_name]!.id;
      for (const [method, url] of [
        ['GET', `/api/v1/export-configs/${id}`],
        ['PATCH', `/api/v1/export-configs/${id}`],
        ['DELETE', `/api/v1/export-configs/${id}`],
        ['POST', `/api/v1/export-configs/${id}/run`],
      ] as const) {
        const res = await call(
          method,
          url,
          method === 'PATCH' ? { format: 'json' } : undefined,
          h.otherKeys.admin,
        );
        expect(res.statusCode, `${method} ${url}`).toBe(404);
        expect(res.headers['content-type']).toMatch(PROBLEM);
      }
      expect((await call('GET', '/api/v1/export-configs', undefined, h.otherKeys.admin)).json().data).toEqual(
        [],
      );
      expect((await call('GET', '/api/v1/export-configs', undefined, h.keys.agent)).statusCode).toBe(200);
      const analyst = await call('POST', '/api/v1/export-configs', { export_name: 'mine' }, h.keys.analyst);
      expect(analyst.statusCode).toBe(403);
      const manager = await call(
        'POST',
        '/api/v1/export-configs',
        { ...MARKETING, export_name: 'Managed' },
        h.keys.manager,
      );
      expect(manager.statusCode, manager.body).toBe(201);
    });

    it('produces the configuration file from a scheduled run', async () => {
      const vip = saved[VIP.export_name]!;
      // Run the schedule as of a day inside the seeded months, so its week has conversations.
      const shift = Date.now() - Date.parse('2026-09-16T12:00:00Z');
      h.clock.advance(-shift);
      try {
        const res = await call('POST', `/api/v1/schedules/${vip.schedule_id}/run`);
        expect(res.statusCode, res.body).toBe(202);
        const runId = (res.json() as { id: string }).id;
        await waitForRun(h.database, runId, ['delivered'], { timeoutMs: 120_000 });
        const runs = (await call('GET', `/api/v1/schedules/${vip.schedule_id}/runs`)).json() as {
          data: {
            id: string;
            files: {
              export_id: string;
              name: string;
              counts: Record<string, { from: string; to: string }>;
            }[];
          }[];
        };
        const file = runs.data.find((r) => r.id === runId)!.files[0]!;
        expect(file.name).toMatch(/^vip-customer-conversations-.*-r1\.csv$/);
        const window = file.counts.conversations!;
        const stored = await sql<{ storage_key: string }>`
          SELECT storage_key FROM export_files WHERE export_id = ${file.export_id}`.execute(h.database.db);
        const rows = parse(await text(await h.store.get(stored.rows[0]!.storage_key))) as string[][];
        expect(rows[0]).toEqual(VIP.columns);
        const expected = await sql<{ id: string }>`
          SELECT c.id FROM conversations c JOIN customers cu ON cu.id = c.customer_id
          WHERE c.tenant_id = ${h.tenant.id} AND cu.segment IN ('enterprise', 'vip') AND c.satisfaction_score >= 4
            AND c.start_timestamp >= ${window.from}::timestamptz AND c.start_timestamp < ${window.to}::timestamptz
            AND (SELECT sum(r.amount) FROM revenue_events r WHERE r.tenant_id = c.tenant_id
                 AND c.id = ANY (r.conversation_ids) AND c.start_timestamp < r.occurred_at) >= 1000`.execute(
          h.database.db,
        );
        expect(
          rows
            .slice(1)
            .map((r) => r[0])
            .sort(),
        ).toEqual(expected.rows.map((r) => r.id).sort());
      } finally {
        h.clock.advance(shift);
      }
    });

    it('deletes the configuration with the schedule Ferry made for it', async () => {
      const vip = saved[VIP.export_name]!;
      const res = await call('DELETE', `/api/v1/export-configs/${vip.id}`);
      expect(res.statusCode).toBe(200);
      expect((await call('GET', `/api/v1/export-configs/${vip.id}`)).statusCode).toBe(404);
      expect((await call('GET', `/api/v1/schedules/${vip.schedule_id}`)).statusCode).toBe(404);
      const audit = await sql<{ action: string }>`
        SELECT action FROM audit_events WHERE tenant_id = ${h.tenant.id} AND action LIKE 'export_config.%'`.execute(
        h.database.db,
      );
      expect(new Set(audit.rows.map((r) => r.action))).toEqual(
        new Set([
          'export_config.created',
          'export_config.updated',
          'export_config.run',
          'export_config.deleted',
        ]),
      );
    });
  });
}
