import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decryptWithIdentities, encryptForRecipients, validateRecipients } from '../src/crypto/age.ts';
import { chunked, readAll } from './support/fixtures/streams.ts';

const run = promisify(execFile);

async function encryptTo(recipients: string[], data: Buffer): Promise<Buffer> {
  return readAll(chunked(data).pipe(encryptForRecipients(recipients)));
}

async function decryptWith(identities: string[], cipher: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    chunked(cipher),
    decryptWithIdentities(identities),
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) chunks.push(chunk);
    },
  );
  return Buffer.concat(chunks);
}

describe('age recipient encryption', () => {
  test('round trip of 3 MiB for two recipients; either identity decrypts', async () => {
    const alice = await generateIdentity();
    const bob = await generateIdentity();
    const data = randomBytes(3 * 1024 * 1024 + 11);
    const cipher = await encryptTo([await identityToRecipient(alice), await identityToRecipient(bob)], data);
    expect(cipher.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    expect((await decryptWith([alice], cipher)).equals(data)).toBe(true);
    expect((await decryptWith([bob], cipher)).equals(data)).toBe(true);
  });

  test('an empty file round-trips', async () => {
    const id = await generateIdentity();
    const cipher = await encryptTo([await identityToRecipient(id)], Buffer.alloc(0));
    expect((await decryptWith([id], cipher)).length).toBe(0);
  });

  test('a tampered or truncated file, or the wrong identity, fails', async () => {
    const id = await generateIdentity();
    const cipher = await encryptTo([await identityToRecipient(id)], randomBytes(200_000));
    const flipped = Buffer.from(cipher);
    flipped[flipped.length - 100]! ^= 1;
    await expect(decryptWith([id], flipped)).rejects.toThrow();
    await expect(decryptWith([id], cipher.subarray(0, cipher.length - 70_000))).rejects.toThrow();
    await expect(decryptWith([await generateIdentity()], cipher)).rejects.toThrow();
  });

  test('recipients are validated with errors that name the bad one', async () => {
    const good = await identityToRecipient(await generateIdentity());
    const typo = `${good.slice(0, -1)}${good.endsWith('q') ? 'p' : 'q'}`; // breaks the bech32 checksum
    expect(validateRecipients([` ${good} `, good])).toEqual([good]);
    expect(() => validateRecipients([])).toThrow(/at least one age recipient/);
    expect(() => validateRecipients([good, typo])).toThrow(
      expect.objectContaining({
        code: 'invalid_parameter',
        message: expect.stringContaining(`recipients[1]: "${typo}" is not a valid age recipient`),
      }),
    );
    expect(() => validateRecipients(['age1notbech32'])).toThrow(/recipients\[0\]: "age1notbech32"/);
    expect(() => validateRecipients(['ssh-ed25519 AAAAC3Nza'])).toThrow(/SSH keys are not supported/);
    expect(() => encryptForRecipients(['nope'])).toThrow(
      /recipients\[0\]: "nope" is not a valid age recipient/,
    );
  });

  test('a private identity given as recipient is refused without echoing it', async () => {
    const secret = await generateIdentity();
    let message = '';
    try {
      validateRecipients([secret]);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/recipients\[0\]: is a private age identity/);
    expect(message).not.toContain(secret.slice(15));
  });
});

describe('age CLI interop (Debian age)', () => {
  let dir: string;
  let keyFile: string;
  let recipient: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'ferry-age-'));
    keyFile = path.join(dir, 'key.txt');
    await run('age-keygen', ['-o', keyFile]);
    recipient = (await run('age-keygen', ['-y', keyFile])).stdout.trim();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a file encrypted by Ferry decrypts with `age -d -i key.txt`', async () => {
    const data = randomBytes(1024 * 1024 + 123);
    await writeFile(path.join(dir, 'export.zip.age'), await encryptTo([recipient], data));
    await run('age', [
      '-d',
      '-i',
      keyFile,
      '-o',
      path.join(dir, 'export.zip'),
      path.join(dir, 'export.zip.age'),
    ]);
    expect((await readFile(path.join(dir, 'export.zip'))).equals(data)).toBe(true);
  });

  test('a file encrypted by `age -r` decrypts in Ferry', async () => {
    const data = randomBytes(300_000);
    await writeFile(path.join(dir, 'plain.bin'), data);
    await run('age', ['-r', recipient, '-o', path.join(dir, 'cli.age'), path.join(dir, 'plain.bin')]);
    const identity = (await readFile(keyFile, 'utf8'))
      .split('\n')
      .find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
    expect((await decryptWith([identity], await readFile(path.join(dir, 'cli.age')))).equals(data)).toBe(
      true,
    );
  });

  test('`age -d` refuses a Ferry file with one flipped byte', async () => {
    const cipher = await encryptTo([recipient], randomBytes(100_000));
    cipher[cipher.length - 500]! ^= 1;
    await writeFile(path.join(dir, 'tampered.age'), cipher);
    await expect(run('age', ['-d', '-i', keyFile, path.join(dir, 'tampered.age')])).rejects.toThrow();
  });
});
