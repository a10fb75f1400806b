import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { Decrypter, generateIdentity, identityToRecipient } from 'age-encryption';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
} from './support/fixtures/export-jobs.ts';
import { DIALECTS } from './support/databases.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { waitForExport } from './support/wait.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';
const run = promisify(execFile);

/** Downloads a completed export's file through its signed link; returns the bytes and the link answer. */
async function download(h: ExportHarness, key: string, id: string, query = '') {
  const link = await h.app.inject({
    method: 'GET',
    url: `/api/v1/exports/${id}/download${query}`,
    headers: bearer(key),
  });
  expect(link.statusCode, link.body).toBe(200);
  const { url, expires_at, method } = link.json() as { url: string; expires_at: string; method: string };
  const path = url.slice(url.indexOf('/api/'));
  const res = await h.app.inject({ method: 'GET', url: path });
  expect(res.statusCode, res.body).toBe(200);
  return { bytes: res.rawPayload, headers: res.headers, url, expires_at, method };
}

for (const dialect of DIALECTS) {
  describe(`export jobs on ${dialect}`, () => {
    let h: ExportHarness;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true });
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('runs a single-dataset export: 202 at once, then completed with a file whose bytes match its sha256', async () => {
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.keys.admin),
        payload: { datasets: ['conversations'], format: 'csv', compression: 'gzip', pii: 'complete' },
      });
      expect(res.statusCode, res.body).toBe(202);
      const created = res.json() as ExportJson;
      expect(created.status).toBe('queued');
      expect(res.headers.location).toBe(`/api/v1/exports/${created.id}`);
      expect(created.links.self).toBe(`/api/v1/exports/${created.id}`);

      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      expect(done.files).toHaveLength(1);
      const file = done.files[0]!;
      expect(file.name).toMatch(/^conversations-\d{8}T\d{6}Z\.csv\.gz$/);
      expect(file.content_type).toBe('application/gzip');
      expect(file.records).toBe(40);
      expect(done.progress).toMatchObject({ records: 40, records_estimated: 40, percentage: 100 });
      expect(done.links.download).toBe(`/api/v1/exports/${created.id}/download`);

      const got = await download(h, h.keys.admin, created.id);
      expect(got.method).toBe('signed');
      expect(got.bytes.length).toBe(file.bytes);
      expect(sha256(got.bytes)).toBe(file.sha256);
      expect(got.headers['content-disposition']).toContain(file.name);
      expect(got.headers['accept-ranges']).toBe('bytes');
      const rows = parse(gunzipSync(got.bytes)) as string[][];
      expect(rows[0]![0]).toBe('conversation_id');
      const ids = new Set(
        (
          await h.database.db
            .selectFrom('conversations')
            .select('id')
            .where('tenant_id', '=', h.tenant.id)
            .execute()
        ).map((r) => r.id),
      );
      expect(rows.length - 1).toBe(40);
      expect(new Set(rows.slice(1).map((r) => r[0]))).toEqual(ids);

      const after = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      expect((after.json() as ExportJson).download_count).toBe(1);
      const audit = await h.database.db
        .withTables<{
          audit_events: { action: string; target_id: string | null; download_count: number | null };
        }>()
        .selectFrom('audit_events')
        .select(['action', 'download_count'])
        .where('target_id', '=', created.id)
        .execute();
      expect(audit.map((a) => a.action).sort()).toEqual([
        'export.completed',
        'export.downloaded',
        'export.requested',
      ]);
      expect(audit.find((a) => a.action === 'export.downloaded')?.download_count).toBe(1);
    });

    it('writes a company package (zip) for several datasets', async () => {
      const created = await requestExport(h.app, h.keys.admin, { datasets: ['conversations', 'messages'] });
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      expect(done.kind).toBe('package');
      const file = done.files[0]!;
      expect(file.name).toMatch(/^company-export-.*\.zip$/);
      const got = await download(h, h.keys.admin, created.id);
      expect(got.bytes.subarray(0, 2).toString()).toBe('PK');
      expect(sha256(got.bytes)).toBe(file.sha256);
    });

    it('writes the tabular files of a company package in the requested format, and repeats it so', async () => {
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['conversations', 'messages'],
        format: 'json',
        package: 'zip',
      });
      expect(created.request).toMatchObject({ format: 'json', package: 'zip' });
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const got = await download(h, h.keys.admin, created.id);
      const dir = await mkdtemp(path.join(tmpdir(), 'ferry-json-package-'));
      try {
        await writeFile(path.join(dir, 'package.zip'), got.bytes);
        const listing = (await run('unzip', ['-Z1', path.join(dir, 'package.zip')])).stdout.split('\n');
        const root = listing[0]!.split('/')[0]!;
        expect(listing).toContain(`${root}/messages.json`);
        expect(listing).toContain(`${root}/schemas/messages.schema.json`);
        expect(listing.filter((f) => f.endsWith('.csv'))).toEqual([]);
        const descriptor = JSON.parse(
          (await run('unzip', ['-p', path.join(dir, 'package.zip'), `${root}/datapackage.json`])).stdout,
        ) as { resources: { path: string; format: string; mediatype: string; type?: string }[] };
        // The tables; the other data files (conversations/*.json) are described too, each with bytes and hash.
        expect(descriptor.resources.filter((r) => r.type === 'table')).toEqual([
          expect.objectContaining({ path: 'messages.json', format: 'json', mediatype: 'application/json' }),
        ]);
        for (const resource of descriptor.resources)
          expect(resource).toMatchObject({
            bytes: expect.any(Number),
            hash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
          });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      const repeat = await h.app.inject({
        method: 'POST',
        url: `/api/v1/exports/${created.id}/repeat`,
        headers: bearer(h.keys.admin),
      });
      expect(repeat.statusCode, repeat.body).toBe(202);
      expect((repeat.json() as ExportJson).request).toEqual(created.request);
      await h.waitForExport((repeat.json() as ExportJson).id);
    });

    it('encrypts the file for age recipients: the download decrypts with the identity', async () => {
      const identity = await generateIdentity();
      const recipient = await identityToRecipient(identity);
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['team_members'],
        format: 'json',
        encryption: { recipients: [recipient] },
      });
      const done = await h.waitForExport(created.id, ['completed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      expect(done.files[0]!.name).toMatch(/\.json\.age$/);
      const got = await download(h, h.keys.admin, created.id);
      expect(sha256(got.bytes)).toBe(done.files[0]!.sha256);
      expect(got.bytes.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
      const decrypter = new Decrypter();
      decrypter.addIdentity(identity);
      const plain = Buffer.from(await decrypter.decrypt(new Uint8Array(got.bytes))).toString('utf8');
      expect(JSON.parse(plain)).toBeTruthy();
    });

    it('replays an Idempotency-Key: same body → same export, other body → 422, concurrent → one export', async () => {
      const body = { datasets: ['customers'], format: 'ndjson' };
      const key = { 'idempotency-key': `k-${dialect}-1` };
      const first = await requestExport(h.app, h.keys.manager, body, key);
      const again = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: { ...bearer(h.keys.manager), ...key },
        payload: { format: 'ndjson', datasets: ['customers'] }, // same body, other key order
      });
      expect(again.statusCode).toBe(202);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect((again.json() as ExportJson).id).toBe(first.id);

      const other = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: { ...bearer(h.keys.manager), ...key },
        payload: { datasets: ['customers'], format: 'csv' },
      });
      expect(other.statusCode).toBe(422);
      expect(other.headers['content-type']).toBe(PROBLEM);
      expect(other.json()).toMatchObject({ code: 'idempotency_key_reused' });

      // Keys belong to a credential: the same key from another API key is a new request.
      const otherCredential = await requestExport(h.app, h.keys.admin, body, key);
      expect(otherCredential.id).not.toBe(first.id);

      const concurrentKey = { 'idempotency-key': `k-${dialect}-concurrent` };
      const answers = await Promise.all(
        Array.from({ length: 8 }, () =>
          h.app.inject({
            method: 'POST',
            url: '/api/v1/exports',
            headers: { ...bearer(h.keys.manager), ...concurrentKey },
            payload: { datasets: ['sites'], format: 'json' },
          }),
        ),
      );
      expect(answers.map((a) => a.statusCode)).toEqual(Array(8).fill(202));
      const ids = new Set(answers.map((a) => (a.json() as ExportJson).id));
      expect(ids.size).toBe(1);
      const stored = await h.database.db
        .withTables<{ export_requests: { id: string; tenant_id: string; datasets: string[] } }>()
        .selectFrom('export_requests')
        .select('id')
        .where('tenant_id', '=', h.tenant.id)
        .where(sql<boolean>`datasets = ARRAY['sites']`)
        .execute();
      expect(stored.map((r) => r.id)).toEqual([...ids]);
    });

    it('refuses an export over the monthly quota with quota_exceeded naming it', async () => {
      await h.database.db
        .updateTable('tenants')
        .set({ plan: 'starter' })
        .where('id', '=', h.other.id)
        .execute();
      // One at a time: the starter plan also runs only one export job at once.
      for (let i = 0; i < 10; i++) {
        const created = await requestExport(h.app, h.otherKeys.admin, { datasets: ['sites'] });
        await waitForExport(h.database, created.id, ['completed']);
      }
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/exports',
        headers: bearer(h.otherKeys.admin),
        payload: { datasets: ['sites'] },
      });
      expect(res.statusCode).toBe(429);
      expect(res.json()).toMatchObject({ code: 'quota_exceeded' });
      expect((res.json() as { detail: string }).detail).toContain('10 manual exports per month');
    });

    it('refuses a range whose from is after its to, naming both', async () => {
      for (const payload of [
        { datasets: ['conversations'], from: '2026-09-30', to: '2026-08-01' },
        { datasets: ['conversations'], from: '2026-09-01T10:00:00Z', to: '2026-09-01T09:00:00Z' },
        { datasets: ['conversations'], from: '2026-09-03T00:00:00Z', to: '2026-09-01' },
        { datasets: ['conversations', 'messages'], from: '2026-09-30', to: '2026-08-01' },
      ]) {
        const res = await h.app.inject({
          method: 'POST',
          url: '/api/v1/exports',
          headers: bearer(h.keys.admin),
          payload,
        });
        expect(res.statusCode, JSON.stringify(payload)).toBe(400);
        const problem = res.json();
        expect(problem.code).toBe('invalid_parameter');
        expect(problem.errors[0].parameter).toBe('from');
        expect(problem.detail).toContain(`"${payload.from}" is after to "${payload.to}"`);
      }
      // One day, and a timestamp within the day a date names, are ranges.
      for (const payload of [
        { from: '2026-09-01', to: '2026-09-01' },
        { from: '2026-09-01T23:00:00+05:00', to: '2026-09-01' },
      ]) {
        const res = await h.app.inject({
          method: 'POST',
          url: '/api/v1/exports',
          headers: bearer(h.keys.admin),
          payload: { ...payload, datasets: ['conversations'] },
        });
        expect(res.statusCode, res.body).toBe(202);
      }
    });

    it('refuses a site the tenant does not have, naming it and the known sites', async () => {
      const known = (
        await h.database.db
          .selectFrom('sites')
          .select('url')
          .where('tenant_id', '=', h.tenant.id)
          .orderBy('url')
          .execute()
      ).map((s) => s.url);
      for (const [payload, parameter] of [
        [
          { datasets: ['conversations'], filters: { site_url: 'https://shop.acme.example' } },
          'filters.site_url',
        ],
        [
          { datasets: ['analytics'], options: { site_urls: 'https://shop.acme.example' } },
          'options.site_urls',
        ],
      ] as const) {
        const res = await h.app.inject({
          method: 'POST',
          url: '/api/v1/exports',
          headers: bearer(h.keys.admin),
          payload,
        });
        expect(res.statusCode, res.body).toBe(400);
        expect(res.json().errors[0]).toMatchObject({ parameter, accepted: known });
        expect(res.json().detail).toContain('"https://shop.acme.example" is not a site of this tenant');
      }
    });

    it('rejects bad requests naming the parameter', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ datasets: ['nope'] }, 'datasets'],
        [{ datasets: ['conversations'], format: 'docx' }, 'format'],
        [{ datasets: ['conversations'], columns: ['id', 'nope'] }, 'columns'],
        [{ datasets: ['conversations'], from: '2026-13-45' }, 'from'],
        [{ datasets: ['conversations', 'messages'], package: 'none' }, 'package'],
        [{ datasets: ['conversations', 'messages'], format: 'markdown' }, 'format'],
        [{ datasets: ['conversations', 'messages'], compression: 'gzip' }, 'compression'],
        [{ datasets: ['conversations'], encryption: { recipients: ['age1nope'] } }, 'recipients[0]'],
        [{ datasets: ['conversations'], unknown: 1 }, 'unknown'],
      ];
      for (const [payload, parameter] of cases) {
        const res = await h.app.inject({
          method: 'POST',
          url: '/api/v1/exports',
          headers: bearer(h.keys.admin),
          payload,
        });
        expect(res.statusCode, JSON.stringify(payload)).toBe(400);
        expect(res.json().errors?.[0]?.parameter ?? res.json().detail, JSON.stringify(payload)).toContain(
          parameter,
        );
      }
    });

    it('fails an export that grows past the plan file size, keeping no file', async () => {
      await h.database.db
        .updateTable('tenants')
        .set({ plan: 'enterprise' })
        .where('id', '=', h.tenant.id)
        .execute();
      await h.database.db
        .insertInto('settings')
        .values({
          tenant_id: h.tenant.id,
          key: 'ferry.limits',
          value: JSON.stringify({ max_file_bytes: 200 }),
        } as never)
        .execute();
      try {
        const created = await requestExport(h.app, h.keys.admin, { datasets: ['messages'], format: 'json' });
        const done = await h.waitForExport(created.id, ['failed']);
        expect(done.status).toBe('failed');
        expect(done.error?.code).toBe('quota_exceeded');
        expect(done.files).toEqual([]);
        const left = [];
        for await (const o of h.store.list(`exports/${h.tenant.id}/${created.id}/`)) left.push(o);
        expect(left).toEqual([]);
        const link = await h.app.inject({
          method: 'GET',
          url: `/api/v1/exports/${created.id}/download`,
          headers: bearer(h.keys.admin),
        });
        expect(link.statusCode).toBe(409);
      } finally {
        await h.database.db
          .deleteFrom('settings')
          .where('tenant_id', '=', h.tenant.id)
          .where('key', '=', 'ferry.limits')
          .execute();
        await h.database.db
          .updateTable('tenants')
          .set({ plan: 'agency' })
          .where('id', '=', h.tenant.id)
          .execute();
      }
    });
  });
}
