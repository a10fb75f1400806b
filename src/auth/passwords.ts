import { argon2, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

/**
 * Team members' password hashes. The reference schema stores scrypt hashes
 * (`scrypt$N$r$p$salt$hash`, base64); new hashes are argon2id in the PHC string format
 * (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`, unpadded base64) with OWASP's baseline
 * parameters (19 MiB, 2 passes, 1 lane), computed by Node's own `crypto.argon2`.
 * A member signing in with an older hash gets it replaced by an argon2id one.
 */

const ARGON2 = { memory: 19_456, passes: 2, parallelism: 1, tagLength: 32 } as const;
/** The mark of an account with no password yet (an invitation not yet accepted). */
export const NO_PASSWORD = '!';
export const MIN_PASSWORD_LENGTH = 12;
export const MAX_PASSWORD_LENGTH = 256;

const argon2Async = promisify(argon2);
const scryptAsync = promisify(scrypt) as (
  password: string,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

const b64 = (buf: Buffer) => buf.toString('base64').replace(/=+$/, '');

export async function hashPassword(password: string): Promise<string> {
  const nonce = randomBytes(16);
  const tag = await argon2Async('argon2id', { message: password, nonce, ...ARGON2 });
  return `$argon2id$v=19$m=${ARGON2.memory},t=${ARGON2.passes},p=${ARGON2.parallelism}$${b64(nonce)}$${b64(tag)}`;
}

const ARGON2_PHC =
  /^\$argon2id\$v=19\$m=(\d{1,7}),t=(\d{1,3}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;
const SCRYPT = /^scrypt\$(\d{1,7})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/;

/** Whether `password` matches `stored`; false for an unusable or unknown hash, never an error. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (password.length === 0 || password.length > MAX_PASSWORD_LENGTH) return false;
  const a = ARGON2_PHC.exec(stored);
  if (a) {
    const expected = Buffer.from(a[5]!, 'base64');
    const tag = await argon2Async('argon2id', {
      message: password,
      nonce: Buffer.from(a[4]!, 'base64'),
      memory: Number(a[1]),
      passes: Number(a[2]),
      parallelism: Number(a[3]),
      tagLength: expected.length,
    });
    return timingSafeEqual(tag, expected);
  }
  const s = SCRYPT.exec(stored);
  if (s) {
    const expected = Buffer.from(s[5]!, 'base64');
    const N = Number(s[1]);
    const r = Number(s[2]);
    const hash = await scryptAsync(password, Buffer.from(s[4]!, 'base64'), expected.length, {
      N,
      r,
      p: Number(s[3]),
      maxmem: 256 * N * r + 1024 * 1024,
    });
    return timingSafeEqual(hash, expected);
  }
  return false;
}

/** Whether a verified hash should be replaced by a current argon2id one. */
export function needsRehash(stored: string): boolean {
  const a = ARGON2_PHC.exec(stored);
  return !a || Number(a[1]) < ARGON2.memory || Number(a[2]) < ARGON2.passes;
}

/** The rule for a new password, as one sentence (shown next to every password field). */
export const PASSWORD_RULE = `at least ${MIN_PASSWORD_LENGTH} characters`;

/** Why a new password is refused, or null when it is acceptable. */
export function passwordProblem(password: string, email: string): string | null {
  if (password.length < MIN_PASSWORD_LENGTH) return `the password must have ${PASSWORD_RULE}`;
  if (password.length > MAX_PASSWORD_LENGTH)
    return `the password must have at most ${MAX_PASSWORD_LENGTH} characters`;
  if (password.toLowerCase() === email.toLowerCase()) return 'the password must not be your email address';
  return null;
}
