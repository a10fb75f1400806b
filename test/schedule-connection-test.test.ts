import { GetObjectCommand } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTargetS3Client } from '../src/deliver/clients.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { bearer } from './support/fixtures/auth.ts';
import { type ExportHarness, exportHarness } from './support/fixtures/export-jobs.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';
import { DIALECTS } from './support/databases.ts';
import { startS3Server, type TestS3Server } from './support/s3-server.ts';

/** "Test connection" of a schedule's destination, in the API and on the schedule's page, against a real S3 server. */
for (const dialect of DIALECTS) {
  describe(`testing a schedule's destination on ${dialect}`, () => {
    let h: ExportHarness;
    let s3: TestS3Server;
    let slug: string;

    beforeAll(async () => {
      s3 = await startS3Server();
      h = await exportHarness(dialect, { web: true, env: { FERRY_OUTBOUND_ALLOW: '127.0.0.1' } });
      slug = (
        await sql<{ slug: string }>`SELECT slug FROM tenants WHERE id = ${h.tenant.id}`.execute(h.database.db)
      ).rows[0]!.slug;
    }, 120_000);
    afterAll(async () => {
      await h?.close();
      await s3?.stop();
    });

    const schedule = async (secret: string, bucket = s3.bucket) => {
      const res = await h.app.inject({
        method: 'POST',
        url: '/api/v1/schedules',
        headers: bearer(h.keys.admin),
        payload: {
          name: `lake ${secret.slice(0, 4)}`,
          frequency: { type: 'daily' },
          time: '02:30',
          timezone: 'UTC',
          datasets: [{ dataset: 'conversations' }],
          format: 'csv',
          targets: [
            {
              type: 's3',
              bucket,
              prefix: 'exports/{tenant}/',
              endpoint: s3.endpoint,
              region: s3.region,
              access_key_id: s3.accessKeyId,
              secret_access_key: secret,
            },
          ],
        },
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json().id as string;
    };

    it('writes ferry-connection-test.txt with the saved credentials, from the API and from the page', async () => {
      const id = await schedule(s3.secretAccessKey);
      const api = await h.app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${id}/targets/0/test`,
        headers: bearer(h.keys.admin),
      });
      expect(api.statusCode, api.body).toBe(200);
      expect(api.json()).toMatchObject({ status: 'delivered', checksum_verified: true, error: null });
      const client = createTargetS3Client(
        {
          type: 's3',
          bucket: s3.bucket,
          prefix: '',
          region: s3.region,
          endpoint: s3.endpoint,
          force_path_style: true,
          access_key_id: s3.accessKeyId,
          secret_access_key: s3.secretAccessKey,
          verify: 'head',
        },
        outboundPolicy(['127.0.0.1']),
      );
      const object = await client.send(
        new GetObjectCommand({ Bucket: s3.bucket, Key: `exports/${slug}/ferry-connection-test.txt` }),
      );
      expect(await object.Body!.transformToString()).toContain('Ferry connection test');

      const session = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, session, `/app/schedules/${id}`);
      expect(page.body).toContain(`action="/app/schedules/${id}/targets/0/test"`);
      const tested = await webPost(h.app, session, `/app/schedules/${id}/targets/0/test`);
      expect(tested.statusCode).toBe(303);
      const after = await webGet(h.app, session, `/app/schedules/${id}`);
      expect(after.body).toContain('Connection test passed');
      const audit = await sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_events
        WHERE action = 'schedule.target_tested' AND target_id = ${id} AND success`.execute(h.database.db);
      expect(audit.rows[0]!.n).toBe(2);
    });

    it('says why a destination fails, without its secret, and refuses roles that may not manage schedules', async () => {
      const wrong = 'wrong-secret-0123456789abcdefghij';
      // s3rver takes any key, so the failure is a bucket that does not exist.
      const id = await schedule(wrong, 'no-such-bucket');
      const res = await h.app.inject({
        method: 'POST',
        url: `/api/v1/schedules/${id}/targets/0/test`,
        headers: bearer(h.keys.admin),
      });
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body.status).toBe('failed');
      expect(body.error).toBeTruthy();
      expect(res.body).not.toContain(wrong);
      expect(
        (
          await h.app.inject({
            method: 'POST',
            url: `/api/v1/schedules/${id}/targets/1/test`,
            headers: bearer(h.keys.admin),
          })
        ).statusCode,
      ).toBe(400);
      expect(
        (
          await h.app.inject({
            method: 'POST',
            url: `/api/v1/schedules/${id}/targets/0/test`,
            headers: bearer(h.keys.agent),
          })
        ).statusCode,
      ).toBe(403);
      expect(
        (
          await h.app.inject({
            method: 'POST',
            url: `/api/v1/schedules/${id}/targets/0/test`,
            headers: bearer(h.otherKeys.admin),
          })
        ).statusCode,
      ).toBe(404);
    });
  });
}
