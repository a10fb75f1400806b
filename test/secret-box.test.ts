import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FerryError } from '../src/domain/ferry-error.ts';
import { loadOrCreateSecretKey, maskSecret, openSecret, sealSecret } from '../src/lib/secret-box.ts';

const KEY = 'k'.repeat(20) + '-0123456789abcdef';
const OTHER = 'o'.repeat(20) + '-0123456789abcdef';
const SECRET = '{"api_token":"zd_live_4f9a8b7c6d5e"}';

function expectUnreadable(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('secret_unreadable');
    expect((err as Error).message).not.toContain('zd_live');
    expect((err as Error).message).not.toContain(KEY);
    expect((err as Error).message).not.toContain(OTHER);
    return;
  }
  throw new Error('expected openSecret to throw');
}

describe('secret box', () => {
  it('round-trips and never shows the plaintext in the sealed text', () => {
    const sealed = sealSecret(SECRET, KEY);
    expect(sealed).toMatch(/^v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    expect(sealed).not.toContain('zd_live');
    expect(openSecret(sealed, KEY)).toBe(SECRET);
    expect(openSecret(sealSecret('ünïcødé 🔑', KEY), KEY)).toBe('ünïcødé 🔑');
  });

  it('uses a fresh IV for every seal', () => {
    expect(sealSecret(SECRET, KEY)).not.toBe(sealSecret(SECRET, KEY));
  });

  it('rejects a tampered ciphertext, tag or IV', () => {
    const [v, iv, tag, ct] = sealSecret(SECRET, KEY).split(':') as [string, string, string, string];
    const flip = (b64: string) => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[0]! ^= 1;
      return bytes.toString('base64');
    };
    expectUnreadable(() => openSecret([v, iv, tag, flip(ct)].join(':'), KEY));
    expectUnreadable(() => openSecret([v, iv, flip(tag), ct].join(':'), KEY));
    expectUnreadable(() => openSecret([v, flip(iv), tag, ct].join(':'), KEY));
    expectUnreadable(() => openSecret(['v2', iv, tag, ct].join(':'), KEY));
    expectUnreadable(() => openSecret('not a sealed value', KEY));
  });

  it('rejects the wrong key', () => {
    expectUnreadable(() => openSecret(sealSecret(SECRET, KEY), OTHER));
  });

  it('masks all but the last characters', () => {
    expect(maskSecret('sk_live_1234567890abcd')).toBe('••••abcd');
    expect(maskSecret('abcdefg')).toBe('••••fg');
    expect(maskSecret('abc')).toBe('••••');
    expect(maskSecret('')).toBe('••••');
  });

  it('creates a per-install key file once and reuses it', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-key-'));
    try {
      const dataDir = path.join(dir, 'data');
      const first = loadOrCreateSecretKey({ secretKey: undefined, dataDir });
      expect(first.length).toBeGreaterThanOrEqual(32);
      expect(loadOrCreateSecretKey({ secretKey: undefined, dataDir })).toBe(first);
      const file = path.join(dataDir, 'secret.key');
      expect(readFileSync(file, 'utf8').trim()).toBe(first);
      expect(statSync(file).mode & 0o077).toBe(0);
      expect(loadOrCreateSecretKey({ secretKey: KEY, dataDir })).toBe(KEY);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
