import { Duplex } from 'node:stream';
import { Decrypter, Encrypter } from 'age-encryption';
import { invalid } from '../domain/ferry-error.ts';

/*
 * Recipient encryption with age (https://age-encryption.org/v1), through the
 * `age-encryption` library by age's author. The output is a standard binary age
 * file: a tenant decrypts it with `age -d -i key.txt` (or rage, or any age
 * implementation), Ferry never holds the private key. The payload is
 * ChaCha20-Poly1305 in 64 KiB chunks, each authenticated, with truncation detected.
 *
 * The library works on WHATWG streams; the classes below bridge them to Node
 * streams chunk by chunk with backpressure, so memory stays flat for any file size.
 * Its ciphers are pure JavaScript: throughput is CPU-bound and on the calling thread
 * (about 30 MiB/s on one core of a small server, against about 100 MiB/s for the
 * AES-GCM encryption at rest), so a 10 GiB export takes a few minutes to encrypt.
 */

const MAX_SHOWN = 72;

function shown(value: string): string {
  return value.length > MAX_SHOWN ? `${value.slice(0, MAX_SHOWN)}…` : value;
}

/**
 * Checks age recipients and returns them trimmed and without duplicates. Accepted:
 * X25519 recipients `age1…` (what `age-keygen` prints; every age version decrypts
 * them) and the library's other recipient types (`age1pq1…` post-quantum hybrid,
 * `age1tag1…`/`age1tagpq1…` hardware tags), which need age 1.3 or a plugin to decrypt.
 * Each error names the bad entry by position and value (recipients are public keys),
 * except for private identities, which are never echoed.
 */
export function validateRecipients(recipients: readonly string[]): string[] {
  if (!Array.isArray(recipients) || recipients.length === 0)
    throw invalid(
      'recipients',
      'must list at least one age recipient (an "age1…" public key from age-keygen)',
    );
  const out: string[] = [];
  recipients.forEach((raw, i) => {
    const param = `recipients[${i}]`;
    if (typeof raw !== 'string') throw invalid(param, 'must be a string');
    const value = raw.trim();
    if (/^AGE-SECRET-KEY-/i.test(value))
      throw invalid(
        param,
        'is a private age identity, which must never be shared; give its public recipient instead ' +
          '(`age-keygen -y key.txt` prints it)',
      );
    if (/^(ssh-|ecdsa-)/.test(value))
      throw invalid(param, 'SSH keys are not supported as recipients; use an "age1…" key from age-keygen');
    try {
      if (!value.startsWith('age1')) throw new Error('no age1 prefix');
      new Encrypter().addRecipient(value);
    } catch {
      throw invalid(
        param,
        `"${shown(value)}" is not a valid age recipient: expected a bech32 "age1…" public key as printed by age-keygen`,
      );
    }
    if (!out.includes(value)) out.push(value);
  });
  return out;
}

/**
 * A Node stream that encrypts what is written to it for every recipient (any one of
 * their identities decrypts). Recipients are validated first; a bad one throws
 * `invalid_parameter` naming it.
 */
export function encryptForRecipients(recipients: readonly string[]): Duplex {
  const encrypter = new Encrypter();
  for (const recipient of validateRecipients(recipients)) encrypter.addRecipient(recipient);
  return new WebStreamDuplex((input) => encrypter.encrypt(input));
}

/**
 * A Node stream that decrypts an age file with the given identities
 * (`AGE-SECRET-KEY-1…`). Fails on a wrong identity, tampering or truncation.
 * For restores of tenant-held files and for tests; Ferry does not keep identities.
 */
export function decryptWithIdentities(identities: readonly string[]): Duplex {
  const decrypter = new Decrypter();
  for (const identity of identities) decrypter.addIdentity(identity);
  return new WebStreamDuplex((input) => decrypter.decrypt(input));
}

/**
 * Bridges a function from a WHATWG byte stream to a promised WHATWG byte stream
 * into a Node Duplex: writes feed the input stream (each write waits until the
 * consumer has taken the previous chunk), reads pull from the output stream.
 */
class WebStreamDuplex extends Duplex {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: Promise<ReadableStreamDefaultReader<Uint8Array>>;

  constructor(start: (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>) {
    super();
    const input = new TransformStream<Uint8Array, Uint8Array>();
    this.#writer = input.writable.getWriter();
    this.#reader = start(input.readable).then((output) => output.getReader());
    this.#reader.catch((err: unknown) => this.destroy(toError(err)));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writer.write(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)).then(
      () => callback(),
      (err: unknown) => callback(toError(err)),
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#writer.close().then(
      () => callback(),
      (err: unknown) => callback(toError(err)),
    );
  }

  override _read(): void {
    this.#reader
      .then((reader) => reader.read())
      .then(
        ({ done, value }) => {
          if (done) this.push(null);
          else this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        },
        (err: unknown) => this.destroy(toError(err)),
      );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Releasing the web streams may fail when they already errored; the error that
    // matters is `error`, passed on below.
    this.#writer.abort(error ?? undefined).catch(() => {});
    this.#reader.then((reader) => reader.cancel(error ?? undefined)).catch(() => {});
    callback(error);
  }
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
