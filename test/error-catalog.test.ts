import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  codeForStatus,
  ERROR_CODES,
  ERRORS,
  errorDefinition,
  isErrorCode,
} from '../src/domain/error-catalog.ts';

const docs = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

describe('error catalog', () => {
  it('documents every code in docs/errors.md with its status', () => {
    for (const code of ERROR_CODES) {
      const heading = new RegExp(`^## \`${code}\`[^\\n]*\\b${ERRORS[code].status}\\b`, 'm');
      expect(docs, `docs/errors.md lacks a "## \`${code}\` … ${ERRORS[code].status}" heading`).toMatch(
        heading,
      );
    }
  });

  it('documents no code that the catalog lacks', () => {
    const documented = [...docs.matchAll(/^## `([a-z_]+)`/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual([...ERROR_CODES].sort());
  });

  it('gives every code an HTTP error status, a title and a description', () => {
    for (const code of ERROR_CODES) {
      const { status, title, description } = ERRORS[code];
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(600);
      expect(title.length).toBeGreaterThan(0);
      expect(description.length).toBeGreaterThan(20);
      expect(code).toMatch(/^[a-z][a-z_]*$/);
    }
  });

  it('maps an unknown code to internal, so a typo cannot invent a status', () => {
    expect(isErrorCode('gone')).toBe(true);
    expect(isErrorCode('toString')).toBe(false);
    expect(errorDefinition('gone')).toMatchObject({ code: 'gone', status: 410 });
    expect(errorDefinition('no_such_code')).toMatchObject({ code: 'internal', status: 500 });
    expect(errorDefinition('constructor')).toMatchObject({ code: 'internal', status: 500 });
  });

  it('holds every code that the sources raise with FerryError', () => {
    const src = new URL('../src/', import.meta.url).pathname;
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    const raised = new Map<string, string>();
    for (const file of files) {
      const text = readFileSync(path.join(src, file), 'utf8');
      for (const m of text.matchAll(/FerryError\(\s*'([a-z_]+)'/g)) raised.set(m[1]!, file);
    }
    expect(raised.size).toBeGreaterThan(0);
    const missing = [...raised]
      .filter(([code]) => !isErrorCode(code))
      .map(([code, file]) => `${code} (${file})`);
    expect(missing, 'add these codes to src/domain/error-catalog.ts and docs/errors.md').toEqual([]);
  });

  it('finds a code for a status', () => {
    expect(codeForStatus(413)).toBe('payload_too_large');
    expect(codeForStatus(415)).toBe('unsupported_media_type');
    expect(codeForStatus(418)).toBeUndefined();
  });
});
