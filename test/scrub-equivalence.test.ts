/**
 * The SQL scrubbers on generated text: they agree with the JavaScript twins, and the faster
 * functions of migration 0031 give what the functions they replace gave, on texts built from
 * the pieces that matter (emails, phones, cards, IBANs, IPs, names in other letter cases,
 * characters whose case mappings are not simple, control characters, formula prefixes).
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { literal } from '../src/db/database.ts';
import { up as privacyFunctions } from '../src/db/migrations/0002-privacy-functions.ts';
import { up as scrubSpeed } from '../src/db/migrations/0010-scrub-speed.ts';
import { PII_LEVELS } from '../src/domain/pii-level.ts';
import { csvGuard, csvGuardJsonSql, csvGuardSql } from '../src/transform/csv-guard.ts';
import { type Subject, scrubJson, scrubText } from '../src/transform/scrub.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const PIECES = [
  'hello',
  'Order',
  'ORD-6941955',
  '#81553',
  'Nancy',
  'NANCY',
  'nancy',
  'Lauinger',
  'LAUINGER',
  'nancy8927@example.org',
  'NANCY8927@Example.ORG',
  'a.b@c.example',
  'x+y@mail.example',
  'jörg@müller.example',
  'Jörg',
  'JÖRG',
  'müller',
  'MÜLLER',
  '稲垣',
  '達也',
  'Kai',
  'KAI',
  'kai',
  'Ike',
  'IKE',
  'Li',
  'NA',
  'van',
  'der',
  'Berg',
  'BERG',
  '+14155554828',
  '(415) 555-2671',
  '0171 1234567',
  '030 901820',
  '05.01.2024',
  '4111 1111 1111 1111',
  '5500-0055-5555-5559',
  '4111111111111112',
  'DE89 3704 0044 0532 0130 00',
  'GB82WEST12345698765432',
  '203.0.113.9',
  '1.2.3.4.5',
  '2001:db8::1',
  '::ffff:1.2.3.4',
  '12:30:45',
  '2024',
  '😀',
  '\u0001',
  '\t',
  '\r',
  '\n',
];
/** Letters whose lower and upper case do not simply round-trip (Kelvin sign, dotted and dotless i, long s, sharp s, sigma). */
const CASE_TRAPS = [
  '\u212Aai',
  'Kaİ',
  'ıke',
  'İKE',
  'ſam',
  'SAM',
  'straße',
  'STRASSE',
  'ΣΑΣ',
  'σας',
  'Ⅻ',
  'sigma@example.org',
  'sam@example.org',
];
const SEPARATORS = [' ', ' ', ', ', '\n', '', '.', ':', '-', '\t'];
const PREFIXES = ['', '', '', '=', '+', '-', '@', '＝', '\t', ' '];

const SUBJECTS: Subject[] = [
  { name: 'Nancy Lauinger', email: 'nancy8927@example.org' },
  { name: 'Jörg Müller', email: 'jörg@müller.example' },
  { name: 'Kai Ike', email: 'kai@ike.example' },
  { name: 'Li Na', email: 'li.na@example.org' },
  { name: 'van der Berg', email: null },
  { name: null, email: 'x+y@mail.example' },
  { name: ' , Nancy,  Lauinger ', email: ' NANCY8927@example.org ' },
];
/**
 * Compared SQL with SQL only: names whose case mappings are not simple, and a name whose words
 * are all shorter than three characters, which SQL finds only as written (with the name's own
 * separators: `ferry_mentions_subject`) and the JavaScript twin with any separators.
 */
const TRAP_SUBJECTS: Subject[] = [
  { name: '稲垣 達也', email: null },
  { name: 'Sam Straße', email: 'sam@example.org' },
  { name: 'ſam ΣΑΣ', email: 'sigma@example.org' },
  { name: 'İke Kai', email: 'kai@ike.example' },
  { name: '\u212Aai Ike', email: null },
];

/** A small deterministic generator (mulberry32), so a failure names a reproducible input. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function texts(count: number, seed: number, pieces: readonly string[]): string[] {
  const next = random(seed);
  const pick = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)]!;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let text = pick(PREFIXES);
    const n = 1 + Math.floor(next() * 8);
    for (let j = 0; j < n; j++) text += (j ? pick(SEPARATORS) : '') + pick(pieces);
    out.push(text);
  }
  return out;
}

const PLAIN_TEXTS = texts(300, 1, PIECES);
const TRAP_TEXTS = texts(300, 2, [...PIECES, ...CASE_TRAPS]);

/** The named function's CREATE statement from a migration, under another name. */
function functionAs(script: string, name: string, as: string): string {
  const start = script.indexOf(`CREATE OR REPLACE FUNCTION ${name}(`);
  const end = script.indexOf('$$;', script.indexOf('$$', start) + 2) + 3;
  if (start < 0 || end < 3) throw new Error(`${name} is not in the migration`);
  return script.slice(start, end).replace(`FUNCTION ${name}(`, `FUNCTION ${as}(`);
}

const nullable = (value: string | null | undefined) => (value == null ? 'NULL' : literal(value));

for (const dialect of DIALECTS) {
  describe(`scrubbers on generated text on ${dialect}`, () => {
    let t: TestDatabase;
    const query = async <R>(text: string) => (await sql.raw<R>(text).execute(t.database.db)).rows;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      // The functions as migrations 0002 and 0010 left them, to compare the new ones with.
      await t.database.exec(
        functionAs(privacyFunctions, 'ferry_mentions_subject', 'ferry_test_mentions_subject_0002'),
      );
      await t.database.exec(functionAs(scrubSpeed, 'ferry_scrub_subject', 'ferry_test_scrub_subject_0010'));
    });
    afterAll(() => t.drop());

    it('gives the JavaScript twin’s text and guarded cell at every level, with and without a subject', async () => {
      const values = PLAIN_TEXTS.map((text, n) => `(${n}, ${literal(text)})`).join(', ');
      for (const subject of SUBJECTS) {
        const args = `${nullable(subject.name)}, ${nullable(subject.email)}`;
        const rows = await query<{ n: number; lvl: number; plain: string; subject: string; cell: string }>(
          `SELECT v.n, l.lvl, ferry_scrub_text(v.x, l.lvl) AS plain,
             ferry_scrub_text(v.x, l.lvl, ${args}) AS subject,
             ${csvGuardSql(`ferry_scrub_text(v.x, l.lvl, ${args})`)} AS cell
           FROM (VALUES ${values}) AS v(n, x) CROSS JOIN (VALUES (0), (1), (2), (3)) AS l(lvl)
           ORDER BY v.n, l.lvl`,
        );
        expect(rows).toHaveLength(PLAIN_TEXTS.length * 4);
        for (const row of rows) {
          const level = PII_LEVELS[row.lvl]!;
          const input = PLAIN_TEXTS[row.n]!;
          const label = `${level}, subject ${JSON.stringify(subject)}: ${JSON.stringify(input)}`;
          expect(row.plain, label).toBe(scrubText(input, level));
          expect(row.subject, label).toBe(scrubText(input, level, subject));
          expect(row.cell, label).toBe(csvGuard(scrubText(input, level, subject)));
        }
      }
    });

    it('gives the JavaScript twin’s JSON for entity lists of generated text', async () => {
      const docs = PLAIN_TEXTS.slice(0, 120).map((text, n) =>
        n % 3 === 0
          ? [
              { type: 'note', value: text },
              { type: text, value: n },
            ]
          : [{ type: 'note', value: text }],
      );
      const values = docs.map((doc, n) => `(${n}, ${literal(JSON.stringify(doc))}::jsonb)`).join(', ');
      for (const subject of SUBJECTS.slice(0, 4)) {
        const args = `${nullable(subject.name)}, ${nullable(subject.email)}`;
        const rows = await query<{ n: number; doc: unknown; cell: string }>(
          `SELECT v.n, ferry_scrub_jsonb(v.x, 3, ${args}) AS doc,
             ${csvGuardJsonSql(`ferry_scrub_jsonb(v.x, 3, ${args})`)} AS cell
           FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
        );
        for (const row of rows) {
          const expected = scrubJson(docs[row.n], 'complete', subject);
          expect(row.doc, JSON.stringify(docs[row.n])).toEqual(expected);
          expect(JSON.parse(row.cell)).toEqual(expected);
        }
      }
    });

    it('finds and replaces the subject as migrations 0002 and 0010 did, case traps included', async () => {
      const values = [...PLAIN_TEXTS, ...TRAP_TEXTS].map((text, n) => `(${n}, ${literal(text)})`).join(', ');
      for (const subject of [...SUBJECTS, ...TRAP_SUBJECTS]) {
        const args = `${nullable(subject.name)}, ${nullable(subject.email)}`;
        const rows = await query<{
          n: number;
          now: string;
          before: string;
          mentions: boolean;
          mentioned: boolean;
        }>(
          `SELECT v.n, ferry_scrub_subject(v.x, ${args}) AS now, ferry_test_scrub_subject_0010(v.x, ${args}) AS before,
             ferry_mentions_subject(v.x, ${args}) AS mentions, ferry_test_mentions_subject_0002(v.x, ${args}) AS mentioned
           FROM (VALUES ${values}) AS v(n, x) ORDER BY v.n`,
        );
        expect(rows).toHaveLength(PLAIN_TEXTS.length + TRAP_TEXTS.length);
        let replaced = 0;
        for (const row of rows) {
          expect(row.now, `${JSON.stringify(subject)}: ${row.n}`).toBe(row.before);
          expect(row.mentions, `${JSON.stringify(subject)}: ${row.n}`).toBe(row.mentioned);
          if (row.now.includes('[name]')) replaced++;
        }
        // The generated texts name these subjects, so the shortcut is not all that ran.
        if (subject.name?.split(/[ \t\r\n,]+/).some((word) => word.length >= 3)) {
          expect(replaced, JSON.stringify(subject)).toBeGreaterThan(0);
        }
      }
    });
  });
}
