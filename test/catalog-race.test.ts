import { describe, expect, it } from 'vitest';
import { isCatalogRace, retryCatalogRace } from '../src/db/catalog-race.ts';

describe('catalog listings raced by another client', () => {
  it('recognises the errors of a catalog changed during a listing, but not a missing own schema', () => {
    expect(isCatalogRace(new Error('schema "ferry_test_1" does not exist'), 'ferry_test_2')).toBe(true);
    expect(isCatalogRace(new Error('schema "ferry_test_2" does not exist'), 'ferry_test_2')).toBe(false);
    expect(isCatalogRace(new Error('column "token_hash" of relation "sign_in_tokens" does not exist'))).toBe(
      true,
    );
    expect(isCatalogRace(new Error('relation "exports" does not exist'))).toBe(true);
    expect(isCatalogRace(new Error('cache lookup failed for relation 41235'))).toBe(true);
    expect(isCatalogRace(new Error('syntax error at or near "SELEC"'))).toBe(false);
  });

  it('lists again after a race, and gives up after five tries or at once on another error', async () => {
    let calls = 0;
    const flaky = async () => {
      calls++;
      if (calls < 3) throw new Error('cache lookup failed for relation 1');
      return 'tables';
    };
    await expect(retryCatalogRace(flaky)).resolves.toBe('tables');
    expect(calls).toBe(3);
    calls = 0;
    await expect(
      retryCatalogRace(async () => {
        calls++;
        throw new Error('relation "x" does not exist');
      }),
    ).rejects.toThrow('relation "x"');
    expect(calls).toBe(5);
    calls = 0;
    await expect(
      retryCatalogRace(async () => {
        calls++;
        throw new Error('permission denied');
      }),
    ).rejects.toThrow('permission denied');
    expect(calls).toBe(1);
  });
});
