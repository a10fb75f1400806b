import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanUpExports } from '../src/export-requests/cleanup.ts';
import { createLogger } from '../src/lib/logger.ts';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
} from './support/fixtures/export-jobs.ts';
import { DIALECTS, preferDialect } from './support/databases.ts';
import { sha256 } from './support/fixtures/streams.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';

interface Link {
  url: string;
  expires_at: string;
  method: 'signed' | 'presigned';
}

async function linkFor(h: ExportHarness, id: string, key = h.keys.admin): Promise<Link> {
  const res = await h.app.inject({
    method: 'GET',
    url: `/api/v1/exports/${id}/download`,
    headers: bearer(key),
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Link;
}

/** The path and query of a signed link, for app.inject. */
const pathOf = (url: string) => url.slice(url.indexOf('/api/'));

async function completedExport(h: ExportHarness, body: Record<string, unknown>): Promise<ExportJson> {
  const created = await requestExport(h.app, h.keys.admin, body);
  const done = await h.waitForExport(created.id, ['completed']);
  expect(done.status, JSON.stringify(done.error)).toBe('completed');
  return done;
}

async function downloadCount(h: ExportHarness, id: string): Promise<number> {
  const res = await h.app.inject({
    method: 'GET',
    url: `/api/v1/exports/${id}`,
    headers: bearer(h.keys.admin),
  });
  return (res.json() as ExportJson).download_count;
}

for (const dialect of DIALECTS) {
  describe(`signed downloads on ${dialect}`, () => {
    let h: ExportHarness;
    let done: ExportJson;
    let whole: Buffer;

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true });
      done = await completedExport(h, { datasets: ['messages'], format: 'ndjson' });
      const res = await h.app.inject({ method: 'GET', url: pathOf((await linkFor(h, done.id)).url) });
      whole = res.rawPayload;
    }, 120_000);
    afterAll(async () => {
      await h?.close();
    });

    it('serves the whole file with its checksum and download headers', async () => {
      const file = done.files[0]!;
      expect(whole.length).toBe(file.bytes);
      expect(sha256(whole)).toBe(file.sha256);
      const res = await h.app.inject({ method: 'GET', url: pathOf((await linkFor(h, done.id)).url) });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-length']).toBe(String(file.bytes));
      expect(res.headers['content-type']).toBe('application/x-ndjson');
      expect(res.headers['accept-ranges']).toBe('bytes');
      expect(res.headers.etag).toBe(`"${file.sha256}"`);
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['content-disposition']).toMatch(/^attachment; filename="messages-.*\.ndjson"/);
      const head = await h.app.inject({ method: 'HEAD', url: pathOf((await linkFor(h, done.id)).url) });
      expect(head.statusCode).toBe(200);
      expect(head.headers['content-length']).toBe(String(file.bytes));
      expect(head.rawPayload.length).toBe(0);
    });

    it('resumes with Range requests: two ranges concatenate to the file', async () => {
      const { url } = await linkFor(h, done.id);
      const size = whole.length;
      const cut = Math.floor(size / 3);
      const first = await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: `bytes=0-${cut - 1}` },
      });
      expect(first.statusCode).toBe(206);
      expect(first.headers['content-range']).toBe(`bytes 0-${cut - 1}/${size}`);
      expect(first.headers['content-length']).toBe(String(cut));
      const rest = await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: `bytes=${cut}-` },
      });
      expect(rest.statusCode).toBe(206);
      expect(rest.headers['content-range']).toBe(`bytes ${cut}-${size - 1}/${size}`);
      const joined = Buffer.concat([first.rawPayload, rest.rawPayload]);
      expect(sha256(joined)).toBe(done.files[0]!.sha256);

      const suffix = await h.app.inject({ method: 'GET', url: pathOf(url), headers: { range: 'bytes=-10' } });
      expect(suffix.statusCode).toBe(206);
      expect(suffix.rawPayload).toEqual(whole.subarray(size - 10));

      // If-Range with another validator: the file changed, so the whole file comes back.
      const stale = await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: `bytes=${cut}-`, 'if-range': '"0000"' },
      });
      expect(stale.statusCode).toBe(200);
      expect(stale.rawPayload.length).toBe(size);
      const fresh = await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: `bytes=${cut}-`, 'if-range': `"${done.files[0]!.sha256}"` },
      });
      expect(fresh.statusCode).toBe(206);
    });

    it('answers 416 for a range outside the file, and ignores malformed ranges', async () => {
      const { url } = await linkFor(h, done.id);
      const res = await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: `bytes=${whole.length}-` },
      });
      expect(res.statusCode).toBe(416);
      expect(res.headers['content-type']).toBe(PROBLEM);
      expect(res.headers['content-range']).toBe(`bytes */${whole.length}`);
      expect(res.json()).toMatchObject({ code: 'range_not_satisfiable' });
      for (const range of ['bytes=5-2', 'items=0-1', 'bytes=0-1,4-5', 'bytes=abc']) {
        const ignored = await h.app.inject({ method: 'GET', url: pathOf(url), headers: { range } });
        expect(ignored.statusCode, range).toBe(200);
        expect(ignored.rawPayload.length).toBe(whole.length);
      }
    });

    it('counts a download when it starts at the first byte, not when it resumes', async () => {
      const before = await downloadCount(h, done.id);
      const { url } = await linkFor(h, done.id);
      await h.app.inject({
        method: 'GET',
        url: pathOf(url),
        headers: { range: 'bytes=0-99', 'user-agent': 'resumer/1' },
      });
      await h.app.inject({ method: 'GET', url: pathOf(url), headers: { range: 'bytes=100-' } });
      expect(await downloadCount(h, done.id)).toBe(before + 1);
      const audit = await h.database.db
        .withTables<{
          audit_events: {
            action: string;
            target_id: string;
            user_agent: string | null;
            download_count: number | null;
          };
        }>()
        .selectFrom('audit_events')
        .select(['user_agent', 'download_count'])
        .where('target_id', '=', done.id)
        .where('action', '=', 'export.downloaded')
        .orderBy('download_count', 'desc')
        .executeTakeFirstOrThrow();
      expect(audit).toEqual({ user_agent: 'resumer/1', download_count: before + 1 });
    });

    it('refuses a link with any part altered: 403 link_invalid', async () => {
      const other = await completedExport(h, { datasets: ['sites'] });
      const { url } = await linkFor(h, done.id);
      const u = new URL(url);
      const [, , , , exportId, fileId] = u.pathname.split('/');
      const expires = u.searchParams.get('expires')!;
      const signature = u.searchParams.get('signature')!;
      const flip = (hex: string) => (hex[0] === 'a' ? 'b' : 'a') + hex.slice(1);
      const build = (p: { e?: string; f?: string; x?: string; s?: string }) =>
        `/api/v1/downloads/${p.e ?? exportId}/${p.f ?? fileId}?expires=${p.x ?? expires}&signature=${p.s ?? signature}`;
      const tampered = {
        'export id': build({ e: other.id }),
        'file id': build({ f: other.files[0]!.id }),
        'expiry (later)': build({ x: String(Number(expires) + 3600) }),
        'expiry (earlier)': build({ x: String(Number(expires) - 1) }),
        signature: build({ s: flip(signature) }),
        'signature cut short': build({ s: signature.slice(0, 40) }),
        'no signature': build({ s: '' }),
        'not an id': build({ e: 'x'.repeat(36) }),
      };
      for (const [part, path] of Object.entries(tampered)) {
        const res = await h.app.inject({ method: 'GET', url: path });
        expect(res.statusCode, part).toBe(403);
        expect(res.headers['content-type'], part).toBe(PROBLEM);
        expect(res.json().code, part).toBe('link_invalid');
        expect(res.json().instance, part).not.toContain('signature');
      }
      // A link of another tenant's export does not open this tenant's file.
      const foreign = await requestExport(h.app, h.otherKeys.admin, { datasets: ['sites'] });
      const foreignDone = await h.waitForExport(foreign.id, ['completed'], { key: h.otherKeys.admin });
      const foreignLink = new URL((await linkFor(h, foreignDone.id, h.otherKeys.admin)).url);
      const swapped = `/api/v1/downloads/${done.id}/${fileId}?${foreignLink.searchParams.toString()}`;
      expect((await h.app.inject({ method: 'GET', url: swapped })).statusCode).toBe(403);
      // The untouched link still works.
      expect((await h.app.inject({ method: 'GET', url: build({}) })).statusCode).toBe(200);
    });

    it('signs links for FERRY_PUBLIC_URL or the server address, never the Host header', async () => {
      const res = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${done.id}/download`,
        headers: { ...bearer(h.keys.admin), host: 'evil.example', 'x-forwarded-host': 'evil.example' },
      });
      expect(res.statusCode, res.body).toBe(200);
      const { url } = res.json() as Link;
      expect(url).not.toContain('evil.example');
      expect(url.startsWith(`http://${h.config.host}:${h.config.port}/api/v1/downloads/`), url).toBe(true);
      const redirect = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${done.id}/download?redirect=true`,
        headers: { ...bearer(h.keys.admin), host: 'evil.example' },
      });
      expect(redirect.statusCode).toBe(302);
      expect(redirect.headers.location).not.toContain('evil.example');
    });

    it('rejects unknown query parameters on a signed link, without echoing the signature', async () => {
      const { url } = await linkFor(h, done.id);
      const signature = new URL(url).searchParams.get('signature')!;
      const res = await h.app.inject({ method: 'GET', url: `${pathOf(url)}&colour=red` });
      expect(res.statusCode).toBe(400);
      expect(res.headers['content-type']).toBe(PROBLEM);
      expect(res.json().code).toBe('invalid_parameter');
      expect(res.json().errors.map((e: { parameter: string }) => e.parameter)).toEqual(['colour']);
      expect(res.body).not.toContain(signature);
      expect((await h.app.inject({ method: 'GET', url: pathOf(url) })).statusCode).toBe(200);
    });

    it('expires links after FERRY_DOWNLOAD_LINK_SECONDS (clock moved, no waiting)', async () => {
      const link = await linkFor(h, done.id);
      const issued = h.clock.now().getTime();
      expect(new Date(link.expires_at).getTime() - issued).toBeLessThanOrEqual(900_000);
      expect(new Date(link.expires_at).getTime() - issued).toBeGreaterThan(899_000);
      h.clock.advance(899_000);
      expect((await h.app.inject({ method: 'GET', url: pathOf(link.url) })).statusCode).toBe(200);
      h.clock.advance(2_000);
      const res = await h.app.inject({ method: 'GET', url: pathOf(link.url) });
      expect(res.statusCode).toBe(403);
      expect(res.json()).toMatchObject({ code: 'link_invalid' });
      expect(res.json().detail).toContain('expired');
      // A new link works again.
      expect(
        (await h.app.inject({ method: 'GET', url: pathOf((await linkFor(h, done.id)).url) })).statusCode,
      ).toBe(200);
    });

    it('removes files when the retention ends: the export is expired and its links answer 410', async () => {
      const kept = await completedExport(h, { datasets: ['team_members'] });
      const link = await linkFor(h, kept.id);
      expect(new Date(String(kept.expires_at)).getTime() - h.clock.now().getTime()).toBeGreaterThan(
        364 * 86_400_000,
      );
      h.clock.advance(366 * 86_400_000); // agency keeps files 365 days
      const before = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${kept.id}/download`,
        headers: bearer(h.keys.admin),
      });
      expect(before.statusCode).toBe(410);
      const result = await cleanUpExports({
        database: h.database,
        store: h.store,
        logger: createLogger({ logLevel: 'silent' }),
        now: h.clock.now,
      });
      expect(result.expired).toBeGreaterThanOrEqual(1);
      const after = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${kept.id}`,
        headers: bearer(h.keys.admin),
      });
      expect(after.json()).toMatchObject({ status: 'expired', files: [] });
      const old = await h.app.inject({ method: 'GET', url: pathOf(link.url) });
      expect(old.statusCode).toBe(410);
      expect(old.json()).toMatchObject({ code: 'gone' });
      const left = [];
      for await (const o of h.store.list(`exports/${h.tenant.id}/${kept.id}/`)) left.push(o);
      expect(left).toEqual([]);
    });
  });
}

describe('downloads from S3 storage', () => {
  let s3: TestS3Server;

  beforeAll(async () => {
    s3 = await startS3Server();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  const s3Env = () => ({
    FERRY_STORAGE: 's3',
    FERRY_S3_BUCKET: s3.bucket,
    FERRY_S3_ENDPOINT: s3.endpoint,
    FERRY_S3_REGION: s3.region,
    FERRY_S3_ACCESS_KEY_ID: s3.accessKeyId,
    FERRY_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
  });

  it('hands out a presigned S3 URL for unencrypted files, counted when issued', async () => {
    const h = await exportHarness(preferDialect('postgres'), {
      workers: true,
      env: { ...s3Env(), FERRY_STORAGE_ENCRYPTION: 'off' },
    });
    try {
      const done = await completedExport(h, { datasets: ['conversations'], format: 'parquet' });
      const link = await linkFor(h, done.id);
      expect(link.method).toBe('presigned');
      expect(link.url.startsWith(`${s3.endpoint}/${s3.bucket}/exports/${h.tenant.id}/${done.id}/`)).toBe(
        true,
      );
      expect(link.url).toContain('X-Amz-Signature=');
      const res = await fetch(link.url);
      expect(res.status).toBe(200);
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(sha256(bytes)).toBe(done.files[0]!.sha256);
      expect(bytes.subarray(0, 4).toString()).toBe('PAR1');
      expect(await downloadCount(h, done.id)).toBe(1);
      // Resuming works against S3 as well.
      const part = await fetch(link.url, { headers: { range: 'bytes=4-' } });
      expect(part.status).toBe(206);
      expect(sha256(Buffer.concat([bytes.subarray(0, 4), Buffer.from(await part.arrayBuffer())]))).toBe(
        done.files[0]!.sha256,
      );
    } finally {
      await h.close();
    }
  }, 120_000);

  it('serves files encrypted at rest through the signed route, decrypted, with ranges', async () => {
    const h = await exportHarness(preferDialect('pglite'), {
      workers: true,
      conversations: 200,
      env: { ...s3Env(), FERRY_STORAGE_ENCRYPTION: 'on' },
    });
    try {
      const done = await completedExport(h, { datasets: ['messages'], format: 'csv' });
      const link = await linkFor(h, done.id);
      expect(link.method).toBe('signed');
      const whole = await h.app.inject({ method: 'GET', url: pathOf(link.url) });
      expect(whole.statusCode).toBe(200);
      expect(sha256(whole.rawPayload)).toBe(done.files[0]!.sha256);
      expect(whole.rawPayload.length).toBeGreaterThan(140_000);
      const cut = 70_000; // inside the second 64 KiB encryption segment
      const a = await h.app.inject({
        method: 'GET',
        url: pathOf(link.url),
        headers: { range: `bytes=0-${cut - 1}` },
      });
      const b = await h.app.inject({
        method: 'GET',
        url: pathOf(link.url),
        headers: { range: `bytes=${cut}-` },
      });
      expect([a.statusCode, b.statusCode]).toEqual([206, 206]);
      expect(sha256(Buffer.concat([a.rawPayload, b.rawPayload]))).toBe(done.files[0]!.sha256);
      // What S3 holds is ciphertext: a direct GET does not return the file.
      let stored = '';
      for await (const o of h.store.list(`exports/${h.tenant.id}/${done.id}/`)) stored = o.key;
      const direct = await fetch(`${s3.endpoint}/${s3.bucket}/${stored}`);
      const raw = Buffer.from(await direct.arrayBuffer());
      expect(sha256(raw)).not.toBe(done.files[0]!.sha256);
    } finally {
      await h.close();
    }
  }, 120_000);
});
