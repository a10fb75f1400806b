import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { decryptWithIdentities } from '../src/crypto/age.ts';
import { FerryError } from '../src/domain/ferry-error.ts';
import { type FileSink, type ProducedFile, type Producer, runFile } from '../src/pipeline/run.ts';
import { LocalObjectStore } from '../src/store/local-object-store.ts';
import type { ObjectStore } from '../src/store/object-store.ts';
import { chunked, collect, readAll, sha256 } from './support/fixtures/streams.ts';

const KEY = 'exports/t/e/a/file.csv';

/** Writes `data` in chunks, reporting a record per chunk. */
function producerOf(data: Buffer, chunkSize = 10_000): Producer {
  return async (out, ctx) => {
    let records = 0;
    await pipeline(
      chunked(data, chunkSize),
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          ctx.records(++records);
          done(null, chunk);
        },
      }),
      out,
      { signal: ctx.signal },
    );
    return { records };
  };
}

/** A store whose writes lose a bit on the way (a faulty disk or link): what it keeps differs from what was sent. */
function corrupting(store: ObjectStore): ObjectStore {
  const flipFirstByte = () => {
    let first = true;
    return new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (!first) return done(null, chunk);
        first = false;
        const copy = Buffer.from(chunk);
        copy[0]! ^= 1;
        done(null, copy);
      },
    });
  };
  return {
    kind: store.kind,
    put: (key, source, options) => store.put(key, source.pipe(flipFirstByte()), options),
    get: (key, range) => store.get(key, range),
    head: (key) => store.head(key),
    delete: (key) => store.delete(key),
    list: (prefix) => store.list(prefix),
    presignGet: (key, seconds, filename) => store.presignGet(key, seconds, filename),
  };
}

describe('runFile', () => {
  let root: string;
  let store: LocalObjectStore;
  const leftovers = async () => (await readdir(path.join(root, '.tmp')).catch(() => [])).length;
  const visible = async () => (await collect(store.list(''))).map((o) => o.key);

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'ferry-run-'));
    store = new LocalObjectStore({ root });
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A sink that records every call, in order. */
  function sink(overrides: Partial<FileSink> = {}) {
    const calls: string[] = [];
    const completed: ProducedFile[] = [];
    const value: FileSink = {
      key: KEY,
      contentType: 'text/csv',
      beforeCommit: async () => {
        calls.push(`beforeCommit visible=${(await store.head(KEY)) !== null}`);
        return true;
      },
      complete: async (file) => {
        calls.push(`complete visible=${(await store.head(KEY)) !== null}`);
        completed.push(file);
        return true;
      },
      ...overrides,
    };
    return { sink: value, calls, completed };
  }

  test('stores, verifies, commits and then records the file, with its size, hash and progress', async () => {
    const data = randomBytes(95_000);
    const progress: { records?: number; bytes?: number; estimated?: number | null }[] = [];
    const { sink: s, calls, completed } = sink();
    const outcome = await runFile({ store }, { produce: producerOf(data), estimate: async () => 10 }, s, {
      signal: new AbortController().signal,
      onProgress: (p) => progress.push(p),
    });
    const file = { key: KEY, contentType: 'text/csv', bytes: data.length, sha256: sha256(data) };
    expect(outcome).toEqual({
      status: 'completed',
      file: { ...file, records: 10, encrypted: false },
      produced: { records: 10 },
    });
    expect(calls).toEqual(['beforeCommit visible=false', 'complete visible=true']);
    expect(completed).toEqual([{ ...file, records: 10, encrypted: false }]);
    expect((await readAll(await store.get(KEY))).equals(data)).toBe(true);
    expect(progress[0]).toEqual({ estimated: 10 });
    expect(progress.filter((p) => p.records !== undefined).at(-1)).toEqual({
      records: 10,
      bytes: data.length,
    });
    expect(Math.max(...progress.map((p) => p.bytes ?? 0))).toBe(data.length);
    expect(await leftovers()).toBe(0);
  });

  test('a stored file whose checksum differs from what was produced is discarded, never committed', async () => {
    const { sink: s, calls } = sink();
    const run = runFile({ store: corrupting(store) }, { produce: producerOf(randomBytes(50_000)) }, s, {
      signal: new AbortController().signal,
    });
    await expect(run).rejects.toSatisfy(
      (err) => err instanceof FerryError && err.code === 'internal' && /checksum mismatch/.test(err.message),
    );
    expect(calls).toEqual([]);
    expect(await visible()).toEqual([]);
    expect(await leftovers()).toBe(0);
  });

  test('an attempt that lost its claim before the commit leaves nothing and records nothing', async () => {
    const { sink: s, calls } = sink({ beforeCommit: async () => false });
    const outcome = await runFile({ store }, { produce: producerOf(randomBytes(20_000)) }, s, {
      signal: new AbortController().signal,
    });
    expect(outcome).toEqual({ status: 'lost' });
    expect(calls).toEqual([]);
    expect(await visible()).toEqual([]);
    expect(await leftovers()).toBe(0);
  });

  test('an attempt that lost while recording has its committed file deleted again', async () => {
    let seenVisible = false;
    const { sink: s } = sink({
      complete: async () => {
        seenVisible = (await store.head(KEY)) !== null;
        return false;
      },
    });
    const outcome = await runFile({ store }, { produce: producerOf(randomBytes(20_000)) }, s, {
      signal: new AbortController().signal,
    });
    expect(outcome).toEqual({ status: 'lost' });
    expect(seenVisible).toBe(true);
    expect(await visible()).toEqual([]);
  });

  test('a recording that fails removes the committed file and reports the failure', async () => {
    const { sink: s } = sink({
      complete: async () => {
        throw new Error('database gone');
      },
    });
    const run = runFile({ store }, { produce: producerOf(randomBytes(20_000)) }, s, {
      signal: new AbortController().signal,
    });
    await expect(run).rejects.toThrow('database gone');
    expect(await visible()).toEqual([]);
  });

  test('a producer that fails leaves no bytes behind', async () => {
    const { sink: s, calls } = sink();
    const produce: Producer = async (out) => {
      out.write(randomBytes(30_000));
      throw new Error('query failed');
    };
    await expect(
      runFile({ store }, { produce }, s, { signal: new AbortController().signal }),
    ).rejects.toThrow('query failed');
    expect(calls).toEqual([]);
    expect(await visible()).toEqual([]);
    expect(await leftovers()).toBe(0);
  });

  test('a file past the byte limit fails with the caller’s error and leaves no bytes behind', async () => {
    const { sink: s, calls } = sink();
    const run = runFile(
      { store },
      {
        produce: producerOf(randomBytes(100_000)),
        maxBytes: 25_000,
        tooLarge: (max) => new FerryError('quota_exceeded', `past ${max} bytes`),
      },
      s,
      { signal: new AbortController().signal },
    );
    await expect(run).rejects.toMatchObject({ code: 'quota_exceeded', message: 'past 25000 bytes' });
    expect(calls).toEqual([]);
    expect(await visible()).toEqual([]);
    expect(await leftovers()).toBe(0);
  });

  test('an abort stops the run with the signal’s reason and leaves no bytes behind', async () => {
    const controller = new AbortController();
    const { sink: s, calls } = sink();
    const run = runFile({ store }, { produce: producerOf(randomBytes(1_000_000)) }, s, {
      signal: controller.signal,
      onProgress: (p) => {
        if ((p.bytes ?? 0) > 20_000) controller.abort(new Error('cancelled by the user'));
      },
    });
    await expect(run).rejects.toThrow('cancelled by the user');
    expect(calls).toEqual([]);
    expect(await visible()).toEqual([]);
    expect(await leftovers()).toBe(0);
  });

  test('encrypts for age recipients: the stored file decrypts to what was produced', async () => {
    const identity = await generateIdentity();
    const data = randomBytes(70_000);
    const { sink: s } = sink();
    const outcome = await runFile(
      { store },
      { produce: producerOf(data), recipients: [await identityToRecipient(identity)] },
      s,
      { signal: new AbortController().signal },
    );
    if (outcome.status !== 'completed') throw new Error('not completed');
    const stored = await readAll(await store.get(KEY));
    expect(outcome.file).toMatchObject({ encrypted: true, bytes: stored.length, sha256: sha256(stored) });
    const plain = await readAll((await store.get(KEY)).pipe(decryptWithIdentities([identity])));
    expect(plain.equals(data)).toBe(true);
  });
});
