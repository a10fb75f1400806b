import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { parse as parseCsv } from 'csv-parse/sync';
import { chromium } from 'playwright-core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageDatasets, REFERENCE_DATAMAP } from '../src/datamap/datamap.ts';
import { exportConfigFromBody, toPackageRequest } from '../src/export-requests/config.ts';
import { exportCompanyPackage } from '../src/pipeline/company-package.ts';
import { assertValidDataPackage } from '../src/packaging/datapackage-profile.ts';
import { seed } from '../src/seed/seed.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const run = promisify(execFile);

for (const dialect of DIALECTS) {
  describe(`company package on ${dialect}`, () => {
    let t: TestDatabase;
    let tenantId: string;
    let work: string;

    beforeAll(async () => {
      t = await createTestDatabase(dialect);
      const summary = await seed(t.database, {
        tenants: 1,
        conversations: 40,
        messagesPerConversation: 6,
        seed: 5,
        since: new Date('2026-08-01T00:00:00Z'),
        until: new Date('2026-10-01T00:00:00Z'),
      });
      tenantId = summary.tenants[0]!.id;
      work = await mkdtemp(path.join(tmpdir(), 'ferry-package-test-'));
    });
    afterAll(async () => {
      await t.drop();
      await rm(work, { recursive: true, force: true });
    });

    async function build(
      kind: 'zip' | 'tar.gz',
      name: string,
      extra: Partial<Parameters<typeof exportCompanyPackage>[1]> = {},
    ) {
      const file = path.join(work, `${name}.${kind}`);
      const out = createWriteStream(file);
      const outcome = await exportCompanyPackage(t.database, { tenantId, kind, pii: 'full', ...extra }, out);
      await new Promise<void>((resolve) => (out.closed ? resolve() : out.once('close', () => resolve())));
      const dir = path.join(work, name);
      await run('mkdir', ['-p', dir]);
      if (kind === 'zip') await run('unzip', ['-q', file, '-d', dir]);
      else await run('tar', ['xzf', file, '-C', dir]);
      return { outcome, root: path.join(dir, outcome.root), file };
    }

    it('writes a zip that verifies with sha256sum -c and holds every dataset', async () => {
      const { outcome, root } = await build('zip', 'full');
      expect(outcome.root).toMatch(/^company-export-\d{4}-\d{2}-\d{2}$/);
      const { stdout } = await run('sha256sum', ['-c', 'checksums.sha256'], { cwd: root });
      expect(stdout).not.toMatch(/FAILED/);
      const files = await readdir(root);
      for (const f of [
        'metadata.json',
        'datapackage.json',
        'schemas',
        'company.json',
        'sites.json',
        'team_members.json',
        'conversations',
        'messages.csv',
        'knowledge',
        'analytics',
        'revenue',
        'activity_logs',
        'consent_records.json',
        'billing',
        'settings.json',
        'integrations.json',
        'index.html',
        'checksums.sha256',
        'data_dictionary.md',
      ]) {
        expect(files).toContain(f);
      }
      // One file per conversation, each with its messages, matching the database.
      const conversations = await t.database.db
        .selectFrom('conversations')
        .select(['id', 'message_count'])
        .where('tenant_id', '=', tenantId)
        .execute();
      const index = JSON.parse(await readFile(path.join(root, 'conversations/index.json'), 'utf8')) as {
        conversation_id: string;
        message_count: number;
      }[];
      expect(index.map((c) => c.conversation_id).sort()).toEqual(conversations.map((c) => c.id).sort());
      const one = JSON.parse(
        await readFile(path.join(root, `conversations/${conversations[0]!.id}.json`), 'utf8'),
      ) as { messages: unknown[] };
      expect(one.messages).toHaveLength(conversations[0]!.message_count);
      // Counts in metadata.json are the rows of the files.
      const metadata = JSON.parse(await readFile(path.join(root, 'metadata.json'), 'utf8')) as {
        counts: Record<string, number>;
        anonymization_level: string;
        tenant: { id: string };
      };
      expect(metadata.tenant.id).toBe(tenantId);
      expect(metadata.anonymization_level).toBe('full');
      const messages = parseCsv(await readFile(path.join(root, 'messages.csv')), {
        columns: true,
      }) as unknown[];
      expect(metadata.counts['messages.csv']).toBe(messages.length);
      // Secrets never travel.
      const integrations = await readFile(path.join(root, 'integrations.json'), 'utf8');
      const sealed = await t.database.db
        .selectFrom('integrations')
        .select('credentials_encrypted')
        .where('tenant_id', '=', tenantId)
        .execute();
      for (const s of sealed) expect(integrations).not.toContain(s.credentials_encrypted);
      const team = await readFile(path.join(root, 'team_members.json'), 'utf8');
      expect(team).not.toMatch(/password/);
    });

    it('describes every tabular file in a valid Data Package v2 descriptor', async () => {
      const { root } = await build('zip', 'described');
      const descriptor = JSON.parse(await readFile(path.join(root, 'datapackage.json'), 'utf8')) as {
        resources: { path: string; type?: string; schema: { fields: { name: string }[] } }[];
      };
      await assertValidDataPackage(descriptor);
      const { stdout } = await run('find', ['.', '-name', '*.csv'], { cwd: root });
      const csvFiles = stdout
        .trim()
        .split('\n')
        .map((f) => f.replace(/^\.\//, ''))
        .sort();
      const tables = descriptor.resources.filter((r) => r.type === 'table');
      expect(tables.map((r) => r.path).sort()).toEqual(csvFiles);
      for (const resource of tables) {
        const [header] = parseCsv(await readFile(path.join(root, resource.path)), {
          to_line: 1,
        }) as string[][];
        expect(resource.schema.fields.map((f) => f.name)).toEqual(header);
      }
    });

    it('describes every data file with its bytes and SHA-256: JSON with its JSON Schema, Markdown as documents', async () => {
      const { root } = await build('zip', 'every-file');
      const descriptor = JSON.parse(await readFile(path.join(root, 'datapackage.json'), 'utf8')) as {
        resources: {
          name: string;
          path: string;
          type?: string;
          format: string;
          mediatype: string;
          bytes: number;
          hash: string;
          jsonSchema?: string;
        }[];
      };
      await assertValidDataPackage(descriptor);
      // Every file but the package's own description, schemas and viewer is data.
      const { stdout } = await run('find', ['.', '-type', 'f'], { cwd: root });
      const notData =
        /^(metadata\.json|datapackage\.json|index\.html|data_dictionary\.md|checksums\.sha256|schemas\/.*|viewer\/.*|.*\.xsd)$/;
      const dataFiles = stdout
        .trim()
        .split('\n')
        .map((f) => f.replace(/^\.\//, ''))
        .filter((f) => !notData.test(f))
        .sort();
      for (const f of [
        'company.json',
        'consent_records.json',
        'conversations/index.json',
        'integrations.json',
      ])
        expect(dataFiles).toContain(f);
      expect(dataFiles.some((f) => /^knowledge\/.+\.md$/.test(f))).toBe(true);
      expect(descriptor.resources.map((r) => r.path).sort()).toEqual(dataFiles);
      expect(new Set(descriptor.resources.map((r) => r.name)).size).toBe(descriptor.resources.length);
      for (const resource of descriptor.resources) {
        const bytes = await readFile(path.join(root, resource.path));
        expect(resource.bytes, resource.path).toBe(bytes.length);
        expect(resource.hash, resource.path).toBe(
          `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
        );
        if (resource.path.endsWith('.md'))
          expect(resource).toMatchObject({ format: 'md', mediatype: 'text/markdown' });
        else if (resource.path.endsWith('.csv'))
          expect(resource).toMatchObject({ type: 'table', format: 'csv' });
        else expect(resource).toMatchObject({ format: 'json', mediatype: 'application/json' });
        if (resource.jsonSchema)
          expect(JSON.parse(await readFile(path.join(root, resource.jsonSchema), 'utf8'))).toHaveProperty(
            '$schema',
          );
      }
      const team = descriptor.resources.find((r) => r.path === 'team_members.json')!;
      expect(team.jsonSchema).toBe('schemas/team_members.schema.json');
    });

    it('writes its tabular files in the requested format and describes them as they are', async () => {
      const { root, outcome } = await build('zip', 'as-json', { format: 'json' });
      await run('sha256sum', ['-c', 'checksums.sha256'], { cwd: root });
      const { stdout } = await run('find', ['.', '-type', 'f', '-name', '*.csv'], { cwd: root });
      expect(stdout).toBe('');
      const descriptor = JSON.parse(await readFile(path.join(root, 'datapackage.json'), 'utf8')) as {
        resources: {
          path: string;
          format: string;
          mediatype: string;
          dialect: { property: string };
          schema: { fields: { name: string }[] };
        }[];
      };
      await assertValidDataPackage(descriptor);
      descriptor.resources = descriptor.resources.filter((r) => 'schema' in r);
      expect(descriptor.resources.map((r) => r.path).sort()).toEqual(
        [
          'activity_logs/activity_logs.json',
          'analytics/daily.json',
          'analytics/monthly.json',
          'billing/invoices.json',
          'customers.json',
          'messages.json',
          'revenue/attribution_first_touch.json',
          'revenue/attribution_last_touch.json',
          'revenue/attribution_multi_touch.json',
        ].sort(),
      );
      for (const resource of descriptor.resources) {
        expect(resource).toMatchObject({
          format: 'json',
          mediatype: 'application/json',
          dialect: { property: 'data' },
        });
        const file = JSON.parse(await readFile(path.join(root, resource.path), 'utf8')) as {
          export_metadata: { format: string };
          data: Record<string, unknown>[];
        };
        expect(file.export_metadata.format).toBe('json');
        expect(file.data.length, resource.path).toBe(outcome.counts[resource.path]);
        if (file.data[0])
          expect(resource.schema.fields.map((f) => f.name)).toEqual(Object.keys(file.data[0]));
        // Every JSON file has its JSON Schema, the tabular ones too.
        const schemaFile = `schemas/${resource.path.replace(/\.json$/, '').replaceAll('/', '_')}.schema.json`;
        const schema = JSON.parse(await readFile(path.join(root, schemaFile), 'utf8')) as {
          $defs: { record: { required: string[] } };
        };
        expect(schema.$defs.record.required).toEqual(resource.schema.fields.map((f) => f.name));
      }
      expect(await readdir(path.join(root, 'schemas'))).toEqual(
        expect.arrayContaining(['team_members.schema.json', 'consent_records.schema.json']),
      );
    });

    it('writes an XSD next to XML tabular files, where their schemaLocation points', async () => {
      const { root } = await build('zip', 'as-xml', { format: 'xml', datasets: ['customers', 'analytics'] });
      const files = (await run('find', ['.', '-type', 'f'], { cwd: root })).stdout;
      for (const f of [
        'customers.xml',
        'customers.xsd',
        'analytics/daily.xml',
        'analytics/analytics.xsd',
        'schemas/customers.xsd',
        'schemas/analytics.xsd',
      ])
        expect(files).toContain(`./${f}\n`);
      expect(await readFile(path.join(root, 'schemas/analytics.xsd'), 'utf8')).toBe(
        await readFile(path.join(root, 'analytics/analytics.xsd'), 'utf8'),
      );
      const xml = await readFile(path.join(root, 'analytics/monthly.xml'), 'utf8');
      expect(xml).toContain('analytics.xsd"');
      const descriptor = JSON.parse(await readFile(path.join(root, 'datapackage.json'), 'utf8')) as {
        resources: { path: string; format: string; mediatype: string }[];
      };
      await assertValidDataPackage(descriptor);
      expect(descriptor.resources.map((r) => [r.path, r.format, r.mediatype])).toEqual([
        ['customers.xml', 'xml', 'application/xml'],
        ['analytics/daily.xml', 'xml', 'application/xml'],
        ['analytics/monthly.xml', 'xml', 'application/xml'],
      ]);
    });

    it('refuses a package format that is not a tabular format', async () => {
      await expect(
        exportCompanyPackage(
          t.database,
          { tenantId, kind: 'zip', pii: 'full', format: 'markdown' },
          createWriteStream(path.join(work, 'md.zip')),
        ),
      ).rejects.toThrow(/^format: a package writes its tabular files as csv, json, ndjson, xml, parquet/);
    });

    it('writes tar.gz with the chosen datasets only, anonymized', async () => {
      const { root, outcome } = await build('tar.gz', 'partial', {
        datasets: ['messages', 'team_members'],
        pii: 'complete',
      });
      await run('sha256sum', ['-c', 'checksums.sha256'], { cwd: root });
      const files = await readdir(root);
      expect(files).toContain('messages.csv');
      expect(files).not.toContain('conversations');
      const emails = await t.database.db
        .selectFrom('team_members')
        .select('email')
        .where('tenant_id', '=', tenantId)
        .execute();
      const team = await readFile(path.join(root, 'team_members.json'), 'utf8');
      for (const e of emails) expect(team).not.toContain(e.email);
      expect(Object.keys(outcome.counts).sort()).toEqual(['messages.csv', 'team_members.json']);
    });

    it('guards spreadsheet formulas in its CSVs unless asked not to', async () => {
      const conversation = await t.database.db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .orderBy('id')
        .executeTakeFirstOrThrow();
      const formulas = ['=1+2', "@SUM(1+1)*cmd|' /C calc'!A0"];
      const planted = await t.database.db
        .selectFrom('messages')
        .select('id')
        .where('conversation_id', '=', conversation.id)
        .orderBy('id')
        .limit(2)
        .execute();
      for (const [i, m] of planted.entries())
        await t.database.db
          .updateTable('messages')
          .set({ content: formulas[i]! })
          .where('id', '=', m.id)
          .execute();
      const cells = async (root: string) =>
        (
          parseCsv(await readFile(path.join(root, 'messages.csv')), { columns: true }) as Record<
            string,
            string
          >[]
        )
          .filter((m) => planted.some((p) => p.id === m.message_id))
          .map((m) => m.message_content)
          .sort();
      const guarded = await build('zip', 'guarded', { datasets: ['conversations', 'messages'] });
      expect(await cells(guarded.root)).toEqual(formulas.map((f) => `'${f}`).sort());
      const raw = await build('zip', 'unguarded', { datasets: ['messages'], csvGuard: false });
      expect(await cells(raw.root)).toEqual([...formulas].sort());
      // The API's request (csv_guard, default true) reaches the package.
      const config = exportConfigFromBody(tenantId, {
        datasets: ['messages'],
        package: 'zip',
        csv_guard: false,
      });
      expect(toPackageRequest(tenantId, config).csvGuard).toBe(false);
      expect(
        toPackageRequest(tenantId, exportConfigFromBody(tenantId, { datasets: ['messages'], package: 'zip' }))
          .csvGuard,
      ).toBe(true);
    });

    it('keeps numbers in conversations/<id>.json exactly as the database holds them', async () => {
      const conversation = await t.database.db
        .selectFrom('conversations')
        .select('id')
        .where('tenant_id', '=', tenantId)
        .orderBy('id')
        .executeTakeFirstOrThrow();
      await sql`UPDATE conversations SET custom_fields = '{"big": 12345678901234567890, "price": 0.1000000000000000055511151231257827}'::jsonb
                WHERE id = ${conversation.id}`.execute(t.database.db);
      const { root } = await build('zip', 'numbers', { datasets: ['conversations'] });
      const file = await readFile(path.join(root, `conversations/${conversation.id}.json`), 'utf8');
      expect(file).toContain('"big": 12345678901234567890');
      expect(file).toContain('"price": 0.1000000000000000055511151231257827');
      const parsed = JSON.parse(file) as { conversation: { conversation_id: string }; messages: unknown[] };
      expect(parsed.conversation.conversation_id).toBe(conversation.id);
    });

    it('rejects a dataset that cannot go in a package, naming it', async () => {
      await expect(
        exportCompanyPackage(
          t.database,
          { tenantId, kind: 'zip', pii: 'full', datasets: ['nope'] },
          createWriteStream(path.join(work, 'x.zip')),
        ),
      ).rejects.toThrow(
        `datasets: "nope" cannot go in a package (accepted: ${packageDatasets(REFERENCE_DATAMAP).join(', ')})`,
      );
    });

    if (dialect === 'pglite') {
      it('opens index.html offline in Chromium and shows a transcript', async () => {
        const { root } = await build('zip', 'browse');
        // The 40 conversations' transcripts are one viewer file: a page of up to 200.
        expect(await readdir(path.join(root, 'viewer', 'conversations'))).toEqual(['page-000001.js']);
        const browser = await chromium.launch({
          executablePath: '/usr/bin/chromium',
          args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
          ],
        });
        try {
          const page = await browser.newPage();
          const errors: string[] = [];
          page.on('pageerror', (err) => errors.push(err.message));
          await page.goto(pathToFileURL(path.join(root, 'index.html')).href);
          await page.waitForFunction(() => document.querySelectorAll('tr.conversation-row').length > 0);
          expect(await page.locator('tr.conversation-row').count()).toBe(40);
          await page.locator('tr.conversation-row').first().click();
          await page.waitForFunction(() => document.body.textContent?.includes('Conversation id'));
          // The transcript shows the first conversation's messages as stored.
          const first = await t.database.db
            .selectFrom('conversations')
            .select('id')
            .where('tenant_id', '=', tenantId)
            .orderBy('start_timestamp')
            .orderBy('id')
            .executeTakeFirstOrThrow();
          const message = await t.database.db
            .selectFrom('messages')
            .select('content')
            .where('conversation_id', '=', first.id)
            .orderBy('created_at')
            .executeTakeFirstOrThrow();
          const text = (await page.locator('body').textContent()) ?? '';
          expect(text).toContain(first.id);
          expect(text).toContain(message.content.split('\n')[0]!.trim());
          expect(errors).toEqual([]);
        } finally {
          await browser.close();
        }
      });
    }
  });
}
