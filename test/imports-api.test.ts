import { readFileSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { importContext } from '../src/imports/context.ts';
import { cleanupImports } from '../src/imports/service.ts';
import { createHold, releaseHold } from '../src/privacy/holds.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preferDialect } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet } from './support/fixtures/web.ts';
import { exportPackageDir, listFiles } from './support/imports.ts';
import { until } from './support/wait.ts';

/** A multipart/form-data body: fields, then one file part. */
function multipart(fields: Record<string, string>, file?: { name: string; type: string; data: Buffer }) {
  const boundary = `----ferry${Date.now()}`;
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(fields))
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`),
    );
  if (file)
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: ${file.type}\r\n\r\n`,
      ),
      file.data,
      Buffer.from('\r\n'),
    );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

const CUSTOMERS = [
  'customer_id,tenant_id,email,name,phone,country,customer_segment,created_at',
  'a1a1a1a1-0000-4000-8000-000000000001,,api.one@example.com,"One ""quoted""",\'+491511234567,DE,enterprise,2026-03-01T10:00:00.123456Z',
  'a1a1a1a1-0000-4000-8000-000000000002,,api.two@example.com,Two,,FR,galactic,2026-03-02T10:00:00Z',
  '',
].join('\n');

describe(`imports over the API and on the dashboard (${preferDialect('postgres')})`, () => {
  let h: ExportHarness;

  beforeAll(async () => {
    h = await exportHarness(preferDialect('postgres'), { web: true, workers: true, conversations: 12 });
  }, 240_000);
  afterAll(async () => h?.close());

  const upload = (
    key: string,
    fields: Record<string, string>,
    file?: { name: string; type: string; data: Buffer },
  ) => {
    const body = multipart(fields, file);
    return h.app.inject({
      method: 'POST',
      url: '/api/v1/imports',
      headers: { ...bearer(key), 'content-type': body.contentType },
      payload: body.payload,
    });
  };
  const settled = (id: string, key = h.keys.admin) =>
    until(`import ${id} to finish`, async () => {
      const res = await h.app.inject({ method: 'GET', url: `/api/v1/imports/${id}`, headers: bearer(key) });
      const body = res.json();
      return body.status === 'queued' || body.status === 'running' ? undefined : body;
    });

  it('plans an uploaded file, applies the plan by its key, and serves the rejected items', async () => {
    const file = { name: 'customers.csv', type: 'text/csv', data: Buffer.from(CUSTOMERS) };
    const planned = await upload(h.keys.admin, { source: 'csv', dry_run: 'true' }, file);
    expect(planned.statusCode, planned.body).toBe(202);
    expect(planned.headers.location).toBe(`/api/v1/imports/${planned.json().id}`);
    const plan = await settled(planned.json().id);
    expect(plan).toMatchObject({ status: 'completed', dry_run: true, rejected_count: 1 });
    expect(plan.report.entities.customers).toMatchObject({ created: 1, rejected: 1 });
    const before = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM customers WHERE email LIKE 'api.%'`.execute(h.database.db);
    expect(before.rows[0]!.n).toBe(0);

    const applied = await h.app.inject({
      method: 'POST',
      url: '/api/v1/imports',
      headers: bearer(h.keys.admin),
      payload: {
        source: 'csv',
        object_key: plan.input_ref,
        conflict: { default: 'skip', customers: 'overwrite' },
      },
    });
    expect(applied.statusCode, applied.body).toBe(202);
    const done = await settled(applied.json().id);
    expect(done).toMatchObject({
      status: 'completed',
      dry_run: false,
      conflict: { default: 'skip', customers: 'overwrite' },
    });
    const rows = await sql<{
      name: string;
      phone: string;
      created_at: string;
    }>`SELECT name, phone, created_at::text
      FROM customers WHERE email = 'api.one@example.com' AND tenant_id = ${h.tenant.id}`.execute(
      h.database.db,
    );
    // The formula guard's quote is taken off the phone number; microseconds survive.
    expect(rows.rows).toEqual([
      { name: 'One "quoted"', phone: '+491511234567', created_at: expect.stringMatching(/10:00:00\.123456/) },
    ]);

    const rejected = await h.app.inject({
      method: 'GET',
      url: `/api/v1/imports/${done.id}/rejected`,
      headers: bearer(h.keys.admin),
    });
    expect(rejected.statusCode).toBe(200);
    expect(rejected.headers['content-type']).toContain('text/csv');
    expect(rejected.body.split('\n')[0]).toBe(
      'customer_id,tenant_id,email,name,phone,country,customer_segment,created_at,errors',
    );
    expect(rejected.body).toContain('galactic');
    expect(rejected.body).toMatch(/segment_check/);

    // The import fires import.completed, and no live-stream event for the imported rows.
    const events = await sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_events
      WHERE tenant_id = ${h.tenant.id} AND action = 'import.completed' AND target_id = ${done.id}`.execute(
      h.database.db,
    );
    expect(events.rows[0]!.n).toBe(1);
  }, 120_000);

  it('imports a Ferry package uploaded as a ZIP into another tenant', async () => {
    const dir = await exportPackageDir(h.database, h.tenant.id);
    const { default: yazl } = await import('yazl');
    const zip = new yazl.ZipFile();
    for (const f of listFiles(dir))
      zip.addBuffer(readFileSync(path.join(dir, f)), `${path.basename(dir)}/${f}`);
    zip.end();
    const chunks: Buffer[] = [];
    for await (const c of zip.outputStream) chunks.push(c as Buffer);
    const res = await upload(
      h.otherKeys.admin,
      { source: 'ferry' },
      { name: 'company.zip', type: 'application/zip', data: Buffer.concat(chunks) },
    );
    expect(res.statusCode, res.body).toBe(202);
    const done = await settled(res.json().id, h.otherKeys.admin);
    expect(done.status, done.error).toBe('completed');
    expect(done.report.entities.messages.created).toBeGreaterThan(20);
    const n = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM messages WHERE tenant_id = ${h.other.id}`.execute(h.database.db);
    expect(n.rows[0]!.n).toBe(done.report.entities.messages.created);
  }, 120_000);

  it('refuses bad requests with problem+json, and other tenants see nothing', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ source: 'salesforce' }, 'source'],
      [{ source: 'csv', conflict: 'merge' }, 'conflict'],
      [{ source: 'csv', dry_run: 'maybe' }, 'dry_run'],
      [{ source: 'csv', color: 'blue' }, 'color'],
    ];
    for (const [fields, parameter] of cases) {
      const res = await upload(h.keys.admin, fields, {
        name: 'x.csv',
        type: 'text/csv',
        data: Buffer.from(CUSTOMERS),
      });
      expect(res.statusCode, JSON.stringify(fields)).toBe(400);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expect(res.json().detail).toContain(parameter);
    }
    const noFile = await upload(h.keys.admin, { source: 'csv' });
    expect(noFile.statusCode).toBe(400);
    // Not multipart after all, or cut short: a 400, never a 500; and no id that is not one reaches the database.
    for (const [contentType, payload] of [
      ['multipart/form-data', 'source=csv'],
      ['multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="source"\r\n\r\ncsv'],
    ] as const) {
      const bad = await h.app.inject({
        method: 'POST',
        url: '/api/v1/imports',
        headers: { ...bearer(h.keys.admin), 'content-type': contentType },
        payload,
      });
      expect(bad.statusCode, contentType).toBe(400);
      expect(bad.headers['content-type']).toContain('application/problem+json');
    }
    const dashes = await h.app.inject({
      method: 'GET',
      url: `/api/v1/imports/${'-'.repeat(36)}`,
      headers: bearer(h.keys.admin),
    });
    expect(dashes.statusCode).toBe(404);
    const badPolicy = await h.app.inject({
      method: 'POST',
      url: '/api/v1/imports',
      headers: bearer(h.keys.admin),
      payload: {
        source: 'csv',
        object_key: (
          await h.app.inject({ method: 'GET', url: '/api/v1/imports', headers: bearer(h.keys.admin) })
        ).json().data[0].input_ref,
        conflict: { customers: 'skip,default=overwrite' },
      },
    });
    expect(badPolicy.statusCode, badPolicy.body).toBe(400);
    expect(badPolicy.json().detail).toContain('conflict.customers');
    const other = await h.app.inject({
      method: 'POST',
      url: '/api/v1/imports',
      headers: bearer(h.keys.admin),
      payload: { source: 'csv', object_key: `imports/${h.other.id}/x/customers.csv` },
    });
    expect(other.statusCode).toBe(404);
    const list = await h.app.inject({
      method: 'GET',
      url: '/api/v1/imports',
      headers: bearer(h.otherKeys.admin),
    });
    const mine = await h.app.inject({ method: 'GET', url: '/api/v1/imports', headers: bearer(h.keys.admin) });
    const mineIds = (mine.json().data as { id: string }[]).map((r) => r.id);
    expect(mineIds.length).toBeGreaterThan(0);
    for (const id of mineIds) {
      expect((list.json().data as { id: string }[]).map((r) => r.id)).not.toContain(id);
      for (const url of [`/api/v1/imports/${id}`, `/api/v1/imports/${id}/rejected`]) {
        const res = await h.app.inject({ method: 'GET', url, headers: bearer(h.otherKeys.admin) });
        expect(res.statusCode, url).toBe(404);
      }
      const del = await h.app.inject({
        method: 'DELETE',
        url: `/api/v1/imports/${id}`,
        headers: bearer(h.otherKeys.admin),
      });
      expect(del.statusCode).toBe(404);
    }
    // A finished import cannot be cancelled.
    const del = await h.app.inject({
      method: 'DELETE',
      url: `/api/v1/imports/${mineIds[0]}`,
      headers: bearer(h.keys.admin),
    });
    expect(del.statusCode).toBe(409);
    for (const role of ['manager', 'analyst', 'agent'] as const)
      expect(
        (await h.app.inject({ method: 'GET', url: '/api/v1/imports', headers: bearer(h.keys[role]) }))
          .statusCode,
      ).toBe(403);
  }, 60_000);

  it('deletes uploaded files a week after their last import, and rejected items after 30 days', async () => {
    const list = (
      await h.app.inject({ method: 'GET', url: '/api/v1/imports', headers: bearer(h.keys.admin) })
    ).json().data as {
      id: string;
      input_ref: string;
      rejected_count: number;
    }[];
    const withRejections = list.find((r) => r.rejected_count > 0)!;
    const key = withRejections.input_ref;
    expect(await h.store.head(key)).not.toBeNull();
    const at = (days: number) =>
      importContext({
        database: h.database,
        config: h.config,
        store: h.store,
        now: () => new Date(Date.now() + days * 86_400_000),
      });
    expect(await cleanupImports(at(6))).toEqual({ uploads: 0, rejections: 0 });
    // A legal hold on the tenant keeps its uploads and rejected items past their time.
    const hold = await createHold(
      h.database,
      h.tenant.id,
      { scope: 'tenant', reason: 'litigation', matter: 'IMP-1' },
      { actor: 'test' },
    );
    // (The other tenant's upload, under no hold, goes.)
    expect((await cleanupImports(at(40))).rejections).toBe(0);
    expect(await h.store.head(key)).not.toBeNull();
    const mine = await sql<{ n: number }>`SELECT count(*)::int AS n FROM imports
      WHERE tenant_id = ${h.tenant.id} AND input_deleted_at IS NOT NULL`.execute(h.database.db);
    expect(mine.rows[0]!.n).toBe(0);
    await releaseHold(h.database, h.tenant.id, hold.id, 'matter closed', { actor: 'test' });
    const week = await cleanupImports(at(8));
    expect(week.uploads).toBeGreaterThan(0);
    expect(week.rejections).toBe(0);
    expect(await h.store.head(key)).toBeNull();
    const gone = await h.app.inject({
      method: 'GET',
      url: `/api/v1/imports/${withRejections.id}`,
      headers: bearer(h.keys.admin),
    });
    expect(gone.json().input_deleted_at).toEqual(expect.any(String));
    const reuse = await h.app.inject({
      method: 'POST',
      url: '/api/v1/imports',
      headers: bearer(h.keys.admin),
      payload: { source: 'csv', object_key: key },
    });
    expect(reuse.statusCode).toBe(404);
    const month = await cleanupImports(at(31));
    expect(month.rejections).toBeGreaterThan(0);
    const rejected = await h.app.inject({
      method: 'GET',
      url: `/api/v1/imports/${withRejections.id}/rejected`,
      headers: bearer(h.keys.admin),
    });
    expect(rejected.body).toBe('');
  });

  it('shows imports with their reports on the dashboard', async () => {
    const session = await signInAs(h.app, h.database, h.tenant, 'admin');
    const page = await webGet(h.app, session, '/app/imports');
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('Upload and start');
    expect(page.body).toMatch(/1 new, 0 updated, 0 unchanged, 0 conflicts, 1 rejected/);
    expect(page.body).toContain('segment_check');

    // The upload form carries its CSRF token in its action; without it the upload is refused.
    const action = /action="(\/app\/imports\?_csrf=[^"]+)"/.exec(page.body)![1]!.replaceAll('&amp;', '&');
    const body = multipart(
      { source: 'csv', dry_run: 'true' },
      { name: 'c.csv', type: 'text/csv', data: Buffer.from(CUSTOMERS) },
    );
    const cookie = Object.entries(session.cookies)
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');
    const forged = await h.app.inject({
      method: 'POST',
      url: '/app/imports',
      headers: { cookie, 'content-type': body.contentType },
      payload: body.payload,
    });
    expect(forged.statusCode).toBe(403);
    const sent = await h.app.inject({
      method: 'POST',
      url: action,
      headers: { cookie, 'content-type': body.contentType },
      payload: body.payload,
    });
    expect(sent.statusCode, sent.body).toBe(303);
    const n = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM imports WHERE tenant_id = ${h.tenant.id} AND input_name = 'c.csv'`.execute(
      h.database.db,
    );
    expect(n.rows[0]!.n).toBe(1);
  });
});
