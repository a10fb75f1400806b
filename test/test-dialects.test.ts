import { describe, expect, it } from 'vitest';
import { ALL_DIALECTS, selectDialects } from './support/dialects.ts';

describe('FERRY_TEST_DIALECTS', () => {
  it('selects every dialect when unset or empty', () => {
    expect(selectDialects(undefined)).toEqual(ALL_DIALECTS);
    expect(selectDialects('')).toEqual(ALL_DIALECTS);
    expect(selectDialects(' , ')).toEqual(ALL_DIALECTS);
  });

  it('narrows to the named dialects, in the usual order', () => {
    expect(selectDialects('pglite')).toEqual(['pglite']);
    expect(selectDialects(' postgres ')).toEqual(['postgres']);
    expect(selectDialects('postgres,pglite')).toEqual(['pglite', 'postgres']);
  });

  it('fails loudly on an unknown name', () => {
    expect(() => selectDialects('pglite,mysql')).toThrow(/unknown dialect 'mysql'/);
    expect(() => selectDialects('PGlite')).toThrow(/known: pglite, postgres/);
  });
});
