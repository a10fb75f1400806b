import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DELIVERY_CLIENTS } from '../src/compose.ts';
import { deliver, deliverAll } from '../src/deliver/deliver.ts';
import { createMailer, type Mailer } from '../src/deliver/mailer.ts';
import { notifyFailure } from '../src/deliver/notify.ts';
import { parseTarget, sealTarget } from '../src/deliver/targets.ts';
import type { DeliveryArtifact, DeliveryContext, DeliveryTarget } from '../src/deliver/types.ts';
import { outboundPolicy } from '../src/lib/ssrf.ts';
import { startSmtpServer, type TestSmtpServer } from './support/smtp-server.ts';
import type { SecretBox } from '../src/crypto/secret-box.ts';
import { scratchSecrets } from './support/keyring.ts';

let secrets: SecretBox;
let scratch: Awaited<ReturnType<typeof scratchSecrets>> | undefined;

function artifactOf(bytes: Buffer): DeliveryArtifact {
  return {
    open: async () => Readable.from([bytes]),
    filename: 'export-2026-11-22.zip',
    bytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    contentType: 'application/zip',
    exportId: 'exp_mail_1',
    tenantId: '7d0c5b2e-1111-4a6b-9a57-000000000003',
    tenantName: 'Acme Support',
    recordCounts: { conversations: 1200, messages: 20311 },
    expiresAt: new Date('2026-11-29T12:00:00Z'),
    downloadUrl: 'https://ferry.example.com/api/v1/downloads/abc?sig=123',
  };
}

async function emailTarget(extra: Record<string, unknown> = {}): Promise<DeliveryTarget> {
  return sealTarget(
    parseTarget({ type: 'email', to: ['ops@acme.example', 'cto@acme.example'], ...extra }),
    secrets,
  );
}

describe('email delivery through a real SMTP server', () => {
  let smtp: TestSmtpServer;
  let mailer: Mailer;
  let ctx: DeliveryContext;
  beforeAll(async () => {
    scratch = await scratchSecrets();
    secrets = scratch.secrets;
    smtp = await startSmtpServer();
    mailer = createMailer({ url: smtp.url, from: 'Ferry <ferry@ferry.example>' });
    ctx = {
      secrets,
      outbound: outboundPolicy([]),
      clients: DELIVERY_CLIENTS,
      mailer,
      retryDelays: [1, 1, 1],
    };
  });
  afterAll(async () => {
    await scratch?.close();
    mailer?.close();
    await smtp?.stop();
  });

  test('sends the link, size, record counts, checksum and expiry, and no attachment by default', async () => {
    const bytes = randomBytes(3_456_789);
    const artifact = artifactOf(bytes);
    const before = smtp.messages.length;
    const result = await deliver(await emailTarget(), artifact, ctx);
    expect(result).toMatchObject({ status: 'delivered', attempts: 1, bytesSent: 0, checksumVerified: false });
    expect(result.location).toMatch(/^mailto:ops@acme\.example,cto@acme\.example\?message-id=/);
    const [received] = smtp.messages.slice(before);
    expect(received!.to).toEqual(['ops@acme.example', 'cto@acme.example']);
    expect(received!.from).toBe('ferry@ferry.example');
    expect(received!.mail.subject).toBe('Export ready: export-2026-11-22.zip');
    const text = received!.mail.text!;
    expect(text).toContain('Your export for Acme Support is ready.');
    expect(text).toContain('Download: https://ferry.example.com/api/v1/downloads/abc?sig=123');
    expect(text).toContain('Size: 3.5 MB (3,456,789 bytes)');
    expect(text).toContain('Records: 21,511 (conversations 1,200, messages 20,311)');
    expect(text).toContain(`SHA-256: ${artifact.sha256}`);
    expect(text).toContain('Link expires: 2026-11-29 12:00 UTC');
    expect(received!.mail.attachments).toHaveLength(0);
    expect(received!.mail.html).toContain('href="https://ferry.example.com/api/v1/downloads/abc?sig=123"');
  });

  test('attaches a small file when asked, never a big one', async () => {
    const small = randomBytes(50_000);
    const before = smtp.messages.length;
    const smallResult = await deliver(await emailTarget({ attach: true }), artifactOf(small), ctx);
    expect(smallResult).toMatchObject({ status: 'delivered', bytesSent: 50_000, checksumVerified: true });
    const bigResult = await deliver(
      await emailTarget({ attach: true }),
      artifactOf(randomBytes(1024 * 1024 + 1)),
      ctx,
    );
    expect(bigResult).toMatchObject({ status: 'delivered', bytesSent: 0 });
    const [withFile, without] = smtp.messages.slice(before);
    expect(withFile!.mail.attachments).toHaveLength(1);
    expect(withFile!.mail.attachments[0]!.filename).toBe('export-2026-11-22.zip');
    expect(Buffer.from(withFile!.mail.attachments[0]!.content).equals(small)).toBe(true);
    expect(without!.mail.attachments).toHaveLength(0);
    expect(without!.mail.text).toContain('so it is not attached; use the download link');
  });

  test('a refused message is retried, then reported', async () => {
    smtp.rejectNext(1);
    const before = smtp.messages.length;
    const retried = await deliver(await emailTarget(), artifactOf(randomBytes(10)), ctx);
    expect(retried).toMatchObject({ status: 'delivered', attempts: 2 });
    expect(smtp.messages.length).toBe(before + 1);
    smtp.rejectNext(4);
    const failed = await deliver(await emailTarget(), artifactOf(randomBytes(10)), ctx);
    expect(failed).toMatchObject({ status: 'failed', attempts: 4, errorCode: 'delivery_failed' });
    expect(failed.error).toContain('550');
  });

  test('without SMTP settings an email target fails at once, other targets still deliver', async () => {
    const results = await deliverAll([await emailTarget({ name: 'No SMTP' })], artifactOf(randomBytes(10)), {
      ...ctx,
      mailer: undefined,
    });
    expect(results).toEqual([
      expect.objectContaining({
        status: 'failed',
        attempts: 1,
        errorCode: 'email_not_configured',
        error: 'email delivery needs an SMTP server; the operator has not set FERRY_SMTP_URL',
      }),
    ]);
  });

  test('notifyFailure emails the reason and the failed destinations, nothing else', async () => {
    const before = smtp.messages.length;
    const sent = await notifyFailure(mailer, {
      to: ['admin@acme.example'],
      subject: 'Scheduled export "Daily conversations"',
      reason: '1 of 2 destinations failed',
      occurredAt: new Date('2026-11-22T03:00:00Z'),
      tenantName: 'Acme Support',
      exportId: 'exp_9',
      results: [
        {
          target: { type: 'sftp', name: 'Warehouse', label: 'sftp://ferry@sftp.acme.example:22/in/' },
          status: 'failed',
          attempts: 4,
          location: null,
          error: 'sftp: cannot connect to sftp.acme.example:22: timed out',
          bytesSent: 0,
          checksumVerified: false,
        },
        {
          target: { type: 's3', name: null, label: 's3://lake/x/' },
          status: 'delivered',
          attempts: 1,
          location: 's3://lake/x/f.csv',
          bytesSent: 10,
          checksumVerified: true,
        },
      ],
    });
    expect(sent).toBe(true);
    const [mail] = smtp.messages.slice(before);
    expect(mail!.to).toEqual(['admin@acme.example']);
    expect(mail!.mail.subject).toBe('Failed: Scheduled export "Daily conversations"');
    const text = mail!.mail.text!;
    expect(text).toContain('Scheduled export "Daily conversations" failed for Acme Support.');
    expect(text).toContain('Reason: 1 of 2 destinations failed');
    expect(text).toContain('Export id: exp_9');
    expect(text).toContain(
      '- Warehouse (sftp://ferry@sftp.acme.example:22/in/): sftp: cannot connect to sftp.acme.example:22: timed out after 4 attempt(s)',
    );
    expect(text).not.toContain('s3://lake');
    expect(await notifyFailure(mailer, { to: [], subject: 'x', reason: 'y', occurredAt: new Date() })).toBe(
      false,
    );
  });
});
