import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectedFields } from '../src/collect/query.ts';
import { type ExportInput, parseExportRequest } from '../src/collect/request.ts';
import { REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { exportDataset } from '../src/pipeline/export-dataset.ts';
import { DIALECTS } from './support/databases.ts';
import { bearer } from './support/fixtures/auth.ts';
import {
  type ExportHarness,
  type ExportJson,
  exportHarness,
  requestExport,
  SECRET,
} from './support/fixtures/export-jobs.ts';
import { runFerry } from './support/cli.ts';
import { sink } from './support/fixtures/streams.ts';
import { signInAs, webGet, webPost } from './support/fixtures/web.ts';

const PROBLEM = 'application/problem+json; charset=utf-8';
const ZONE = 'Europe/Berlin';

/** A conversation with values a real tenant has: microseconds, quotes, a newline, emoji, a formula, a negative fraction. */
const PLANTED = {
  start: '2026-08-03T22:05:09.123456Z',
  end: '2026-08-03T23:59:59.999999Z',
  name: 'Zoë "Zed" O\'Brien\nline two 🚢',
  feedback: '=HYPERLINK("http://x")',
  confidence: -1234.5678,
};

/** Timestamps of the database as ISO 8601 UTC text with microseconds (JS dates keep only milliseconds). */
const ISO = sql<string>`to_char(start_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

interface Row {
  id: string;
  start: string;
  end: string | null;
  confidence: string | null;
  escalated: boolean;
  message_count: number;
  customer_message_count: number;
  satisfaction_score: number | null;
  customer_name: string | null;
}

for (const dialect of DIALECTS) {
  describe(`output shaping on ${dialect}`, () => {
    let h: ExportHarness;
    let rows: Map<string, Row>;

    const run = async (input: Partial<ExportInput> & { dataset?: string }) => {
      const { out, text } = sink();
      const request = parseExportRequest({
        tenantId: h.tenant.id,
        dataset: 'conversations',
        pii: 'full',
        timezone: ZONE,
        ...input,
      });
      await exportDataset(h.database, request, out);
      return text();
    };

    const post = (payload: Record<string, unknown>) =>
      h.app.inject({ method: 'POST', url: '/api/v1/exports', headers: bearer(h.keys.admin), payload });

    beforeAll(async () => {
      h = await exportHarness(dialect, { workers: true, web: true, conversations: 40 });
      const first = await h.database.db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', '=', h.tenant.id)
        .orderBy('id')
        .executeTakeFirstOrThrow();
      await h.database.db
        .updateTable('conversations')
        .set({
          start_timestamp: PLANTED.start,
          end_timestamp: PLANTED.end,
          customer_name: PLANTED.name,
          satisfaction_feedback: PLANTED.feedback,
          ai_confidence_avg: PLANTED.confidence,
          satisfaction_score: null,
          escalated: true,
        } as never)
        .where('id', '=', first.id)
        .execute();
      const all = await h.database.db
        .selectFrom('conversations')
        .select([
          'id',
          ISO.as('start'),
          sql<string | null>`to_char(end_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as(
            'end',
          ),
          sql<string | null>`ai_confidence_avg::text`.as('confidence'),
          'escalated',
          'message_count',
          'customer_message_count',
          'satisfaction_score',
          'customer_name',
        ])
        .where('tenant_id', '=', h.tenant.id)
        .execute();
      rows = new Map(all.map((r) => [r.id, r as unknown as Row]));
    }, 180_000);
    afterAll(async () => {
      await h?.close();
    });

    for (const locale of ['de-DE', 'fr-FR', 'en-US']) {
      it(`writes dates, timestamps and numbers the way Intl formats them for ${locale}`, async () => {
        const csv = await run({
          columns: [
            'conversation_id',
            'start_timestamp',
            'end_timestamp',
            'ai_confidence_avg',
            'message_count',
          ],
          shaping: { locale, convert: { end_timestamp: 'date' } },
        });
        const decimal = new Intl.NumberFormat(locale)
          .formatToParts(1.5)
          .find((p) => p.type === 'decimal')!.value;
        const delimiter = decimal === ',' ? ';' : ',';
        expect(csv.split('\n')[0]).toBe(
          ['conversation_id', 'start_timestamp', 'end_timestamp', 'ai_confidence_avg', 'message_count'].join(
            delimiter,
          ),
        );
        const parsed = parseCsv(csv, { delimiter, columns: true }) as Record<string, string>[];
        expect(parsed).toHaveLength(rows.size);
        const stamp = new Intl.DateTimeFormat(locale, {
          timeZone: ZONE,
          year: 'numeric',
          month: '2-digit',
          day: '2-digit',
          hour: '2-digit',
          minute: '2-digit',
          second: '2-digit',
          hourCycle: 'h23',
        });
        const day = new Intl.DateTimeFormat(locale, {
          timeZone: ZONE,
          year: 'numeric',
          month: '2-digit',
          day: '2-digit',
        });
        const number = new Intl.NumberFormat(locale, { useGrouping: false, maximumFractionDigits: 100 });
        for (const cell of parsed) {
          const row = rows.get(cell.conversation_id!)!;
          expect(cell.start_timestamp).toBe(stamp.format(new Date(row.start)));
          expect(cell.end_timestamp).toBe(row.end ? day.format(new Date(row.end)) : '');
          expect(cell.ai_confidence_avg).toBe(
            row.confidence === null ? '' : number.format(row.confidence as `${number}`),
          );
          expect(cell.message_count).toBe(String(row.message_count));
        }
        // The planted row ends a minute before midnight UTC: the next day in Berlin.
        const planted = parsed.find((c) => rows.get(c.conversation_id!)!.start === PLANTED.start)!;
        expect(planted.end_timestamp).toBe(day.format(new Date('2026-08-04T12:00:00Z')));
      });
    }

    it('writes money columns in the currency pattern Intl gives the locale', async () => {
      const plain = parseCsv(await run({ dataset: 'revenue_attribution' }), { columns: true }) as Record<
        string,
        string
      >[];
      expect(plain.length).toBeGreaterThan(0);
      for (const [locale, currency] of [
        ['de-DE', 'EUR'],
        ['en-US', 'USD'],
        ['fr-FR', 'JPY'],
      ] as const) {
        const text = await run({ dataset: 'revenue_attribution', shaping: { locale, currency } });
        const delimiter = locale === 'en-US' ? ',' : ';';
        const shaped = parseCsv(text, { delimiter, columns: true }) as Record<string, string>[];
        const money = new Intl.NumberFormat(locale, { style: 'currency', currency, useGrouping: false });
        const number = new Intl.NumberFormat(locale);
        expect(shaped).toHaveLength(plain.length);
        shaped.forEach((row, i) => {
          const before = plain[i]!;
          for (const column of ['total_revenue', 'attributed_revenue'])
            expect(row[column]).toBe(
              before[column] === '' ? '' : money.format(before[column] as `${number}`),
            );
          // A number that is not money keeps the database's digits, with the locale's decimal separator.
          const decimal = number.formatToParts(1.5).find((p) => p.type === 'decimal')!.value;
          expect(row.attribution_percentage).toBe(before.attribution_percentage!.replace('.', decimal));
        });
      }
    });

    it('converts booleans, numbers and timestamps in every tabular format', async () => {
      const convert = {
        escalated: 'yes_no',
        ai_confidence_avg: 'fixed:2',
        start_timestamp: 'epoch_millis',
        end_timestamp: 'epoch_seconds',
      };
      const columns = [
        'conversation_id',
        'escalated',
        'ai_confidence_avg',
        'start_timestamp',
        'end_timestamp',
      ];
      const fixed2 = new Intl.NumberFormat('en-US', {
        useGrouping: false,
        minimumFractionDigits: 2,
        maximumFractionDigits: 2,
      });
      const expected = (row: Row) => ({
        escalated: row.escalated ? 'yes' : 'no',
        ai_confidence_avg: row.confidence === null ? null : fixed2.format(row.confidence as `${number}`),
        start_timestamp: String(Date.parse(`${row.start.slice(0, 19)}Z`) + Number(row.start.slice(20, 23))),
        end_timestamp: row.end === null ? null : String(Math.floor(Date.parse(row.end) / 1000)),
      });
      const csv = parseCsv(await run({ columns, shaping: { convert } }), { columns: true }) as Record<
        string,
        string
      >[];
      for (const cell of csv) {
        const want = expected(rows.get(cell.conversation_id!)!);
        expect(cell).toEqual({
          conversation_id: cell.conversation_id,
          escalated: want.escalated,
          ai_confidence_avg: want.ai_confidence_avg ?? '',
          start_timestamp: want.start_timestamp,
          end_timestamp: want.end_timestamp ?? '',
        });
      }
      const one = parseCsv(await run({ columns, shaping: { convert: { escalated: 'one_zero' } } }), {
        columns: true,
      }) as Record<string, string>[];
      for (const cell of one)
        expect(cell.escalated).toBe(rows.get(cell.conversation_id!)!.escalated ? '1' : '0');

      const ndjson = (await run({ columns, format: 'ndjson', shaping: { convert } }))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(ndjson).toHaveLength(rows.size);
      for (const obj of ndjson) {
        const want = expected(rows.get(obj.conversation_id as string)!);
        expect(obj.escalated).toBe(want.escalated);
        // Fixed decimals are text (trailing zeros stay); epochs are whole numbers.
        expect(obj.ai_confidence_avg).toBe(want.ai_confidence_avg);
        expect(obj.start_timestamp).toBe(Number(want.start_timestamp));
        expect(obj.end_timestamp).toBe(want.end_timestamp === null ? null : Number(want.end_timestamp));
      }

      // The data dictionary's view of the columns: a converted boolean is a string, a renamed column keeps its class.
      const request = parseExportRequest({
        tenantId: h.tenant.id,
        dataset: 'conversations',
        columns: ['customer_email', 'escalated'],
        shaping: { convert: { escalated: 'yes_no' }, rename: { customer_email: 'Email' } },
      });
      const declared = REFERENCE_DATAMAP.datasets.conversations!.fields;
      const [email, escalated] = selectedFields(REFERENCE_DATAMAP.datasets.conversations!, request);
      const source = declared.find((f) => f.name === 'customer_email')!;
      expect(email).toMatchObject({
        name: 'Email',
        type: source.type,
        class: source.class,
        description: source.description,
      });
      expect(escalated).toMatchObject({ name: 'escalated', type: 'string' });
    });

    it('computes calculated fields in SQL: big numbers exactly, division by zero as empty, date parts in the zone', async () => {
      const calculated = [
        { name: 'big', expression: 'message_count * 1000000000000000000 + customer_message_count' },
        { name: 'ratio', expression: 'customer_message_count / (message_count - message_count)' },
        {
          name: 'share',
          expression: 'round(customer_message_count / message_count * 100, 2)',
          type: 'number' as const,
        },
        { name: 'score', expression: 'coalesce(satisfaction_score, -1)' },
        { name: 'start_year', expression: 'year(start_timestamp)' },
        { name: 'start_hour', expression: 'hour(start_timestamp)' },
        { name: 'start_weekday', expression: 'weekday(start_timestamp)' },
        { name: 'busy', expression: "if(message_count >= 5 and not escalated, 'busy', 'calm')" },
        { name: 'after', expression: "start_timestamp > '2026-08-03'" },
      ];
      const csv = parseCsv(
        await run({
          columns: ['conversation_id', ...calculated.map((c) => c.name)],
          shaping: { calculated },
        }),
        { columns: true },
      ) as Record<string, string>[];
      expect(csv).toHaveLength(rows.size);
      const parts = new Intl.DateTimeFormat('en-US', {
        timeZone: ZONE,
        year: 'numeric',
        hour: 'numeric',
        weekday: 'short',
        hourCycle: 'h23',
      });
      const weekdays = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
      const dayStart = Date.parse('2026-08-02T22:00:00Z'); // 3 August 2026, 00:00 in Berlin
      for (const cell of csv) {
        const row = rows.get(cell.conversation_id!)!;
        const at = Object.fromEntries(parts.formatToParts(new Date(row.start)).map((p) => [p.type, p.value]));
        const expectedShare =
          row.message_count === 0
            ? ''
            : new Intl.NumberFormat('en-US', {
                useGrouping: false,
                minimumFractionDigits: 2,
                maximumFractionDigits: 2,
              }).format(
                `${(BigInt(row.customer_message_count) * 10n ** 6n) / BigInt(row.message_count)}E-4` as never,
              );
        expect({ ...cell, conversation_id: undefined }).toEqual({
          conversation_id: undefined,
          big: String(BigInt(row.message_count) * 10n ** 18n + BigInt(row.customer_message_count)),
          ratio: '',
          share: expectedShare,
          score: String(row.satisfaction_score ?? -1),
          start_year: at.year,
          start_hour: String(Number(at.hour)),
          start_weekday: String(weekdays.indexOf(at.weekday!) + 1),
          busy: row.message_count >= 5 && !row.escalated ? 'busy' : 'calm',
          after: Date.parse(row.start) > dayStart ? 'true' : 'false',
        });
      }
    });

    it('keeps constants verbatim: no expression text is ever SQL', async () => {
      const constant = `it's "quoted"; DROP TABLE conversations; -- /* 🚢 */ \\ E'\\x41'`;
      const expression = `concat('${constant.replaceAll("'", "''")}', customer_name)`;
      for (const format of ['csv', 'ndjson'] as const) {
        const text = await run({
          format,
          columns: ['conversation_id', 'note'],
          shaping: { calculated: [{ name: 'note', expression }] },
          csvGuard: false,
        });
        const values =
          format === 'csv'
            ? (parseCsv(text, { columns: true }) as Record<string, string>[])
            : text
                .trim()
                .split('\n')
                .map((l) => JSON.parse(l) as Record<string, string>);
        expect(values).toHaveLength(rows.size);
        for (const v of values)
          expect(v.note).toBe(`${constant}${rows.get(v.conversation_id!)!.customer_name ?? ''}`);
      }
      const still = await h.database.db
        .selectFrom('conversations')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('tenant_id', '=', h.tenant.id)
        .executeTakeFirstOrThrow();
      expect(Number(still.n)).toBe(rows.size);
    });

    it('renames, orders and calculates in JSON, XML and Parquet too, and guards calculated text in CSV', async () => {
      const shaping = {
        rename: { conversation_id: 'Conversation_ID', customer_name: 'Customer-Name' },
        calculated: [{ name: 'msgs', expression: 'message_count + 0', type: 'number' as const }],
      };
      const columns = ['msgs', 'customer_name', 'conversation_id'];
      const json = JSON.parse(await run({ format: 'json', columns, shaping })) as {
        data: Record<string, unknown>[];
      };
      expect(Object.keys(json.data[0]!)).toEqual(['msgs', 'Customer-Name', 'Conversation_ID']);
      for (const r of json.data) {
        const row = rows.get(r.Conversation_ID as string)!;
        expect(r.msgs).toBe(row.message_count);
        expect(r['Customer-Name']).toBe(row.customer_name);
      }
      const xml = await run({ format: 'xml', columns, shaping });
      expect(xml).toContain('<Customer-Name>');
      expect(xml).toContain('<Conversation_ID>');

      const { out, bytes } = sink();
      await exportDataset(
        h.database,
        parseExportRequest({
          tenantId: h.tenant.id,
          dataset: 'conversations',
          pii: 'full',
          format: 'parquet',
          columns,
          shaping,
        }),
        out,
      );
      const file = new Uint8Array(bytes()).buffer;
      const objects = (await parquetReadObjects({ file })) as Record<string, unknown>[];
      expect(objects).toHaveLength(rows.size);
      expect(Object.keys(objects[0]!)).toEqual(['msgs', 'Customer-Name', 'Conversation_ID']);
      for (const o of objects)
        expect(Number(o.msgs)).toBe(rows.get(o.Conversation_ID as string)!.message_count);

      // A calculated text that starts a formula is guarded like any other text.
      const guarded = parseCsv(
        await run({
          columns: ['conversation_id', 'f'],
          shaping: { calculated: [{ name: 'f', expression: "concat('=1+', message_count)" }] },
        }),
        { columns: true },
      ) as Record<string, string>[];
      for (const g of guarded) expect(g.f!.startsWith('=')).toBe(false);
    });

    it('refuses hostile expressions through the API with invalid_expression, naming the position and token', async () => {
      const hostile: [string, RegExp][] = [
        ["1'; DROP TABLE conversations; --", /at position 2/],
        ['message_count; DROP TABLE conversations', /statements are not part .* at position 14 \(";"\)/],
        ['pg_sleep(10)', /unknown function "pg_sleep".*at position 1 \("pg_sleep"\)/],
        ['nosuchcolumn + 1', /unknown column "nosuchcolumn"/],
        ['(select 1)', /expected "\)" at position 9 \("1"\)/],
        ['message_count -- comment', /comments are not part/],
        ['message_count /* c */', /comments are not part/],
        [`${'('.repeat(60)}1${')'.repeat(60)}`, /nested deeper than 24 levels/],
        [`${'-'.repeat(30)}1`, /nested deeper than 24 levels|comments/],
        [Array.from({ length: 120 }, () => '1').join('+'), /longer than 500 characters|more than 200 tokens/],
        ['message_count\u202e + 1', /unexpected character .*U\+202E/],
        ["concat('a\u200bb', customer_name)", /control or invisible character in text/],
        ['message_count \uff0b 1', /unexpected character .*U\+FF0B/],
        ['m\u0435ssage_count + 1', /unexpected character at position 2 \("U\+0435"\)/], // Cyrillic е
        ['customer_name + 1', /needs a number, not text/],
        ["'a' + 'b'", /concat/],
        ['message_count > 1 > 0', /comparisons do not chain/],
        ['tags', /is string\[\]/],
        ['round(message_count, 11)', /whole number from 0 to 10/],
        ["current_setting('x')", /unknown function "current_setting"/],
        ['message_count::text', /unexpected character|unexpected token/],
        ['"message_count"', /unexpected character/],
        ['', /empty|expected a value/],
      ];
      for (const [expression, detail] of hostile) {
        const res = await post({
          datasets: ['conversations'],
          calculated: [{ name: 'x', expression: expression || ' ' }],
        });
        expect(res.statusCode, `${expression}: ${res.body}`).toBe(400);
        expect(res.headers['content-type']).toBe(PROBLEM);
        const problem = res.json() as { code: string; detail: string; errors?: { parameter: string }[] };
        expect(problem.code, expression).toBe('invalid_expression');
        expect(problem.detail, expression).toMatch(detail);
        expect(problem.errors?.[0]?.parameter).toMatch(/^calculated\[0\]\.(expression|type)$/);
      }
      // A NUL or a lone surrogate is refused at the API's door (invalid_parameter); the engine refuses them too.
      expect(() =>
        parseExportRequest({
          tenantId: h.tenant.id,
          dataset: 'conversations',
          shaping: { calculated: [{ name: 'x', expression: "concat('a\u0000', customer_name)" }] },
        }),
      ).toThrow(/control or invisible character in text at position 10 \("U\+0000"\)/);
      // So is a lone surrogate (text that is not Unicode).
      expect(() =>
        parseExportRequest({
          tenantId: h.tenant.id,
          dataset: 'conversations',
          shaping: { calculated: [{ name: 'x', expression: "concat('\ud800', customer_name)" }] },
        }),
      ).toThrow(/lone surrogate is not a character at position 9/);
      // Longer than the schema allows is refused before it is read.
      const long = await post({
        datasets: ['conversations'],
        calculated: [{ name: 'x', expression: '1+'.repeat(400) }],
      });
      expect(long.statusCode).toBe(400);
      expect((long.json() as { code: string }).code).toBe('invalid_parameter');
      const count = await h.database.db
        .selectFrom('conversations')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .executeTakeFirstOrThrow();
      expect(Number(count.n)).toBeGreaterThan(0);
    });

    it('refuses bad renames, conversions, locales and separators with the parameter named', async () => {
      const bad: [Record<string, unknown>, string, RegExp][] = [
        [{ rename: { nosuch: 'x' } }, 'rename', /has no column "nosuch"/],
        [{ rename: { customer_name: 'bad"name' } }, 'rename.customer_name', /not an output name/],
        [
          { rename: { customer_name: "Robert'); DROP TABLE x;--" } },
          'rename.customer_name',
          /not an output name/,
        ],
        [{ rename: { customer_name: 'Nаme' } }, 'rename.customer_name', /not an output name/], // Cyrillic а
        [{ rename: { customer_name: ' lead' } }, 'rename.customer_name', /not an output name/],
        [{ rename: { customer_name: 'customer_email' } }, 'rename.customer_name', /would name two columns/],
        [
          { rename: { customer_name: 'X', customer_email: 'x' } },
          'rename.customer_name',
          /would name two columns/,
        ],
        [
          { format: 'xml', rename: { customer_name: 'Customer name' } },
          'rename.customer_name',
          /XML element name/,
        ],
        [
          { columns: ['conversation_id'], rename: { customer_name: 'N' } },
          'rename.customer_name',
          /not among the requested columns/,
        ],
        [
          { convert: { escalated: 'fixed:2' } },
          'convert.escalated',
          /fixed:2 converts integer or number columns, and escalated is a boolean/,
        ],
        [
          { convert: { message_count: 'yes_no' } },
          'convert.message_count',
          /yes_no converts boolean columns, and message_count is an integer/,
        ],
        [
          { convert: { message_count: 'fixed:11' } },
          'convert.message_count',
          /unknown conversion "fixed:11"/,
        ],
        [{ locale: 'de_DE' }, 'locale', /not a BCP 47 language tag/],
        [{ locale: 'zz-ZZ' }, 'locale', /not a locale Ferry can format/],
        [{ locale: "de-DE'; --" }, 'locale', /not a BCP 47 language tag/],
        [{ format: 'json', locale: 'de-DE' }, 'locale', /applies to CSV/],
        [{ locale: 'de-DE', currency: 'EURO' }, 'currency', /ISO 4217/],
        [{ currency: 'EUR' }, 'currency', /needs a locale/],
        [{ locale: 'de-DE', currency: 'EUR' }, 'currency', /has no money columns/],
        [
          { delimiter: ',', decimal_separator: ',' },
          'decimal_separator',
          /both the delimiter and the decimal separator/,
        ],
        [
          { calculated: [{ name: 'message_count', expression: '1' }] },
          'calculated[0].name',
          /is a column of conversations/,
        ],
        [
          { calculated: [{ name: 'ok', expression: 'message_count / 2', type: 'integer' }] },
          'calculated[0].type',
          /round\(\)/,
        ],
      ];
      for (const [fields, parameter, detail] of bad) {
        const res = await post({ datasets: ['conversations'], ...fields });
        expect(res.statusCode, `${JSON.stringify(fields)}: ${res.body}`).toBe(400);
        expect(res.headers['content-type']).toBe(PROBLEM);
        const problem = res.json() as { code: string; detail: string; errors?: { parameter: string }[] };
        expect(problem.code).toMatch(/^invalid_(parameter|expression)$/);
        expect(problem.errors?.[0]?.parameter, JSON.stringify(fields)).toBe(parameter);
        expect(problem.detail, JSON.stringify(fields)).toMatch(detail);
      }
      // The schema refuses a delimiter outside the list before Ferry reads it.
      const res = await post({ datasets: ['conversations'], delimiter: '"' });
      expect(res.statusCode).toBe(400);
      // Shaping is for one dataset: a package refuses it.
      const pkg = await post({ datasets: ['conversations', 'messages'], rename: { customer_name: 'N' } });
      expect(pkg.statusCode).toBe(400);
      expect((pkg.json() as { detail: string }).detail).toMatch(/^rename: applies to single-dataset exports/);
    });

    it.skipIf(dialect !== 'postgres')('takes the same fields as flags on the command line', async () => {
      const work = await mkdtemp(path.join(tmpdir(), 'ferry-shaping-'));
      const env = {
        ...process.env,
        ...h.t.env,
        FERRY_DATA_DIR: work,
        FERRY_SECRET_KEY: SECRET,
        LOG_LEVEL: 'silent',
      };
      try {
        const ok = await runFerry(
          [
            'export',
            '--tenant',
            h.tenant.id,
            '--dataset',
            'conversations',
            '--pii',
            'full',
            '--timezone',
            ZONE,
            '--columns',
            'conversation_id,twice,escalated',
            '--rename',
            'conversation_id=ID',
            '--convert',
            'escalated=one_zero',
            '--calculated',
            'twice:number=message_count * 2',
            '--locale',
            'fr-FR',
            '--delimiter',
            'tab',
            '--out',
            '-',
          ],
          { env },
        );
        expect(ok.code, ok.stderr).toBe(0);
        expect(ok.stdout.split('\n')[0]).toBe('ID\ttwice\tescalated');
        const parsed = parseCsv(ok.stdout, { delimiter: '\t', columns: true }) as Record<string, string>[];
        expect(parsed).toHaveLength(rows.size);
        for (const p of parsed) {
          const row = rows.get(p.ID!)!;
          expect(p.twice).toBe(String(row.message_count * 2));
          expect(p.escalated).toBe(row.escalated ? '1' : '0');
        }
        const bad = await runFerry(
          [
            'export',
            '--tenant',
            h.tenant.id,
            '--dataset',
            'conversations',
            '--calculated',
            'x=pg_sleep(10)',
            '--out',
            '-',
          ],
          { env },
        );
        expect(bad.code).not.toBe(0);
        expect(bad.stderr.trim()).toMatch(/^ferry: calculated\[0\]\.expression: unknown function "pg_sleep"/);
        expect(bad.stderr.trim().split('\n')).toHaveLength(1);
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    });

    it('takes the same fields in the Output section of the dashboard export page', async () => {
      const admin = await signInAs(h.app, h.database, h.tenant, 'admin');
      const page = await webGet(h.app, admin, '/app/export');
      expect(page.body).toContain('<summary>Output</summary>');
      const form = {
        panel: 'conversations',
        dataset: 'conversations',
        range: 'all',
        format: 'csv',
        pii: 'full',
        columns: 'conversation_id, share',
        rename: 'conversation_id=ID',
        convert: '',
        calculated: 'share:number=round(customer_message_count / message_count * 100, 1)',
        locale: 'de-DE',
        currency: '',
        delimiter: '',
        decimal_separator: '',
      };
      const res = await webPost(h.app, admin, '/app/export', { ...form, intent: 'start' });
      expect(res.statusCode, res.body).toBe(303);
      const id = /\/app\/exports\/([0-9a-f-]{36})$/.exec(String(res.headers.location))![1]!;
      const stored = (
        await sql<{
          config: Record<string, unknown>;
        }>`SELECT config FROM export_requests WHERE id = ${id}`.execute(h.database.db)
      ).rows[0]!.config;
      expect(stored).toMatchObject({
        columns: ['conversation_id', 'share'],
        rename: { conversation_id: 'ID' },
        calculated: [
          {
            name: 'share',
            type: 'number',
            expression: 'round(customer_message_count / message_count * 100, 1)',
          },
        ],
        locale: 'de-DE',
        delimiter: ';',
        decimal_separator: ',',
      });
      const refused = await webPost(h.app, admin, '/app/export', {
        ...form,
        columns: '',
        calculated: 'x=pg_sleep(10)',
        intent: 'start',
      });
      expect(refused.statusCode).toBe(400);
      expect(refused.body).toMatch(
        /<p class="error" role="alert">calculated\[0\]\.expression: unknown function &#34;pg_sleep&#34;/,
      );
    });

    it('runs a shaped export through the API: the request shows what was chosen, the file follows it', async () => {
      const created = await requestExport(h.app, h.keys.admin, {
        datasets: ['conversations'],
        pii: 'full',
        timezone: ZONE,
        columns: ['conversation_id', 'per_message', 'ai_confidence_avg', 'escalated'],
        rename: { conversation_id: 'Gespraech' },
        convert: { escalated: 'yes_no' },
        calculated: [{ name: 'per_message', expression: 'ai_confidence_avg / message_count' }],
        locale: 'de-DE',
      });
      const done = await h.waitForExport(created.id, ['completed', 'failed']);
      expect(done.status, JSON.stringify(done.error)).toBe('completed');
      const shown = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}`,
        headers: bearer(h.keys.admin),
      });
      const request = (shown.json() as ExportJson & { request: Record<string, unknown> }).request;
      expect(request).toMatchObject({
        locale: 'de-DE',
        delimiter: ';',
        decimal_separator: ',',
        rename: { conversation_id: 'Gespraech' },
        convert: { escalated: 'yes_no' },
        calculated: [{ name: 'per_message', expression: 'ai_confidence_avg / message_count' }],
      });
      const link = await h.app.inject({
        method: 'GET',
        url: `/api/v1/exports/${created.id}/download`,
        headers: bearer(h.keys.admin),
      });
      const url = (link.json() as { url: string }).url;
      const file = await h.app.inject({ method: 'GET', url: url.slice(url.indexOf('/api/')) });
      const text = file.body;
      expect(text.split('\n')[0]).toBe('Gespraech;per_message;ai_confidence_avg;escalated');
      const parsed = parseCsv(text, { delimiter: ';', columns: true }) as Record<string, string>[];
      expect(parsed).toHaveLength(rows.size);
      const planted = parsed.find((p) => rows.get(p.Gespraech!)!.start === PLANTED.start)!;
      expect(planted.ai_confidence_avg).toBe('-1234,5678');
      expect(planted.escalated).toBe('yes');
      const row = rows.get(planted.Gespraech!)!;
      // -1234.5678 / message_count, exact in SQL numeric; compared by value.
      expect(Number(planted.per_message!.replace(',', '.'))).toBeCloseTo(
        PLANTED.confidence / row.message_count,
        12,
      );
    });
  });
}
