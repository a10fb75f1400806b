import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { deliver } from '../src/deliver/deliver.ts';
import { openTarget, parseTarget, presentTarget, sealTarget, targetLabel } from '../src/deliver/targets.ts';
import { checkPathTemplate, renderPathTemplate, staticPrefix } from '../src/deliver/template.ts';
import type { SftpTarget } from '../src/deliver/types.ts';
import { scratchSecrets } from './support/keyring.ts';

const PRIVATE_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
const FINGERPRINT = `SHA256:${'A'.repeat(43)}`;

describe('parseTarget', () => {
  test('fills defaults for an S3 target', () => {
    expect(
      parseTarget({
        type: 's3',
        bucket: 'acme-exports',
        access_key_id: 'AKIA1',
        secret_access_key: 'very-secret-key-1234',
      }),
    ).toEqual({
      type: 's3',
      bucket: 'acme-exports',
      prefix: '',
      region: 'us-east-1',
      force_path_style: false,
      access_key_id: 'AKIA1',
      secret_access_key: 'very-secret-key-1234',
      verify: 'head',
    });
    const custom = parseTarget({
      type: 's3',
      bucket: 'b1',
      prefix: 'daily-exports/{date}',
      endpoint: 'https://minio.example.com',
      access_key_id: 'a',
      secret_access_key: 'b',
      server_side_encryption: 'aws:kms',
      kms_key_id: 'arn:aws:kms:eu-west-1:1:key/x',
    });
    expect(custom).toMatchObject({ prefix: 'daily-exports/{date}/', force_path_style: true });
  });

  test.each([
    [
      { type: 'ftp' },
      'target.type: must be one of the accepted values (accepted: s3, sftp, email, webhook, folder)',
    ],
    [{}, 'target.type: is required'],
    [{ type: 's3', access_key_id: 'a', secret_access_key: 'b' }, 'target.bucket: is required'],
    [
      { type: 's3', bucket: 'my bucket!', access_key_id: 'a', secret_access_key: 'b' },
      'target.bucket: must be a bucket name: 2 to 255 characters out of letters, digits, ".", "_" and "-", starting with a letter or digit (Amazon S3 itself: 3 to 63 lower-case letters, digits, "." and "-", starting and ending with a letter or digit)',
    ],
    [{ type: 's3', bucket: 'b1' }, 'target.access_key_id: is required'],
    [
      { type: 's3', bucket: 'b1', access_key_id: 'a', secret_access_key: 'b', prefix: 'x/{month}/' },
      'target.prefix: unknown placeholder {month}',
    ],
    [
      { type: 's3', bucket: 'b1', access_key_id: 'a', secret_access_key: 'b', prefix: '../up' },
      'target.prefix: must not contain empty, "." or ".." segments',
    ],
    [
      { type: 's3', bucket: 'b1', access_key_id: 'a', secret_access_key: 'b', server_side_encryption: 'des' },
      'target.server_side_encryption: must be one of the accepted values (accepted: AES256, aws:kms)',
    ],
    [
      {
        type: 's3',
        bucket: 'b1',
        access_key_id: 'a',
        secret_access_key: 'b',
        endpoint: 'https://u:p@minio.example',
      },
      'target.endpoint: must not contain credentials',
    ],
    [
      { type: 's3', bucket: 'b1', access_key_id: 'a', secret_access_key: 'b', colour: 'red' },
      'target.colour: is not a field of a s3 target',
    ],
    [
      { type: 'sftp', host: 'sftp.example.com', username: 'u', private_key: PRIVATE_KEY },
      'target.host_key: is required',
    ],
    [
      { type: 'sftp', host: 'sftp.example.com', username: 'u', private_key: PRIVATE_KEY, host_key: 'abc' },
      'target.host_key: must be the SHA256 fingerprint',
    ],
    [
      { type: 'sftp', host: 'sftp.example.com', username: 'u', host_key: FINGERPRINT },
      'target.private_key: set private_key or password',
    ],
    [
      {
        type: 'sftp',
        host: 'sftp.example.com',
        username: 'u',
        password: 'pw',
        host_key: FINGERPRINT,
        port: 70000,
      },
      'target.port: must be an integer from 1 to 65535',
    ],
    [
      { type: 'sftp', host: 'bad host', username: 'u', password: 'pw', host_key: FINGERPRINT },
      'target.host: must be a host name or an IP address',
    ],
    [{ type: 'email', to: [] }, 'target.to: must list at least one email address'],
    [{ type: 'email', to: ['ok@example.com', 'nope'] }, 'target.to[1]: must be an email address'],
    [{ type: 'webhook', endpoint_id: 'x' }, 'target.endpoint_id: must be the id of a registered webhook'],
    [{ type: 'folder' }, 'target.path: is required'],
    [{ type: 'folder', path: 'lake/acme' }, 'target.path: must be an absolute path'],
    [{ type: 'folder', path: '/srv/lake/../etc' }, 'target.path: must be an absolute path without'],
  ])('rejects %j', (input, message) => {
    expect(() => parseTarget(input)).toThrow(message);
    try {
      parseTarget(input);
    } catch (err) {
      expect(err).toMatchObject({ code: 'invalid_parameter' });
    }
  });

  test('names the field with the caller-supplied path', () => {
    expect(() => parseTarget({ type: 'email', to: 'x' }, 'targets[2]')).toThrow(
      'targets[2].to[0]: must be an email address',
    );
  });

  test('accepts insecure-accept-any only spelled out', () => {
    expect(
      parseTarget({
        type: 'sftp',
        host: '10.0.0.5',
        username: 'u',
        password: 'pw',
        host_key: 'insecure-accept-any',
      }),
    ).toMatchObject({ host_key: 'insecure-accept-any', port: 22, directory: '.' });
  });
});

describe('secrets in stored targets', () => {
  const input = parseTarget({
    type: 'sftp',
    name: 'Warehouse',
    host: 'sftp.example.com',
    username: 'ferry',
    private_key: PRIVATE_KEY,
    passphrase: 'correct horse battery staple',
    directory: '/incoming/{tenant}',
    host_key: FINGERPRINT,
  });

  test('are sealed when stored, opened for delivery, masked when shown', async () => {
    const here = await scratchSecrets();
    const elsewhere = await scratchSecrets();
    try {
      const stored = (await sealTarget(input, here.secrets)) as SftpTarget;
      const json = JSON.stringify(stored);
      expect(json).not.toContain('correct horse');
      expect(json).not.toContain('BEGIN OPENSSH');
      expect(stored.passphrase).toEqual({ sealed: expect.stringMatching(/^v2:/) });
      expect(await openTarget(stored, here.secrets)).toEqual(input);
      const shown = await presentTarget(stored, here.secrets);
      expect(shown.passphrase).toBe('••••aple');
      expect(JSON.stringify(shown)).not.toContain('correct horse');
      expect(shown.host_key).toBe(FINGERPRINT);
      // Another installation's keyring: the secret cannot be opened, and is shown fully masked.
      expect((await presentTarget(stored, elsewhere.secrets)).passphrase).toBe('••••');
      await expect(openTarget(stored, elsewhere.secrets)).rejects.toThrow('cannot decrypt the stored secret');
    } finally {
      await here.close();
      await elsewhere.close();
    }
  });

  test('labels carry no secret', () => {
    expect(targetLabel(input)).toBe('sftp://ferry@sftp.example.com:22/incoming/{tenant}/');
  });
});

describe('path templates', () => {
  test('render dates in UTC and sanitise values', () => {
    const template = checkPathTemplate('exports/{tenant}/{dataset}/{date}/{datetime}-{export_id}', 'prefix');
    expect(
      renderPathTemplate(template, {
        now: new Date('2026-11-22T23:15:09.123Z'),
        tenant: 'acme',
        dataset: 'conversations',
        exportId: 'e1/../x',
      }),
    ).toBe('exports/acme/conversations/2026-11-22/20261122T231509Z-e1-..-x/');
  });

  test('retention sweeps the fixed folder before the first placeholder', () => {
    expect(staticPrefix('daily-exports/{date}/')).toBe('daily-exports/');
    expect(staticPrefix('a/b/')).toBe('a/b/');
    expect(staticPrefix('exp-{date}/')).toBe('');
    expect(staticPrefix('')).toBe('');
  });
});

describe('a folder target', () => {
  const body = Buffer.from('id,text\n1,"He said ""hi"", 😀"\n');
  const artifact = (sha256: string) => ({
    open: async () => Readable.from([body]),
    filename: 'messages-20261122T031500Z-r3.csv',
    bytes: body.length,
    sha256,
    contentType: 'text/csv',
    exportId: 'e1',
    tenantId: 't1',
    recordCounts: { messages: 1 },
    expiresAt: new Date(),
    downloadUrl: '',
  });
  const ctx = {
    // A folder target has no secret to open.
    secrets: {} as never,
    outbound: { allow: [] } as never,
    clients: {} as never,
    retryDelays: [],
  };

  test('receives the file whole, created folder and all, checked against its SHA-256', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'ferry-folder-target-'));
    try {
      const folder = path.join(root, 'share', 'acme');
      const target = parseTarget({ type: 'folder', name: 'share', path: `${folder}/` });
      expect(target).toEqual({ type: 'folder', name: 'share', path: folder });
      const sha = createHash('sha256').update(body).digest('hex');
      const result = await deliver(target as never, artifact(sha), ctx);
      expect(result).toMatchObject({
        status: 'delivered',
        location: `file://${folder}/messages-20261122T031500Z-r3.csv`,
        checksumVerified: true,
        bytesSent: body.length,
      });
      expect(await readFile(path.join(folder, 'messages-20261122T031500Z-r3.csv'))).toEqual(body);

      // A copy whose bytes do not match the export is removed, and nothing else is left.
      const wrong = await deliver(
        target as never,
        { ...artifact('0'.repeat(64)), filename: 'other.csv' },
        ctx,
      );
      expect(wrong.status).toBe('failed');
      expect(wrong.errorCode).toBe('checksum_mismatch');
      expect(await readdir(folder)).toEqual(['messages-20261122T031500Z-r3.csv']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
