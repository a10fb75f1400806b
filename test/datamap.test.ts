import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkDataMap,
  checkDataMapAgainstDatabase,
  REFERENCE_DATAMAP,
  validateDataMap,
} from '../src/datamap/datamap.ts';
import type { DataMap } from '../src/datamap/types.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './support/databases.ts';

const secretColumns = Object.entries(REFERENCE_DATAMAP.tables).flatMap(([table, t]) =>
  Object.entries(t.columns)
    .filter(([, c]) => c.class === 'secret')
    .map(([name]) => ({ table, name })),
);

describe('reference data map', () => {
  it('is internally consistent', () => {
    expect(checkDataMap(REFERENCE_DATAMAP)).toEqual([]);
  });

  it('declares the secrets it must never export', () => {
    expect(secretColumns.map((c) => `${c.table}.${c.name}`).sort()).toEqual([
      'integrations.credentials_encrypted',
      'team_members.password_hash',
    ]);
  });

  it('reaches no secret column from any dataset projection', () => {
    for (const dataset of Object.values(REFERENCE_DATAMAP.datasets)) {
      for (const field of dataset.fields) {
        for (const ref of field.reads) {
          const [table, column] = ref.split('.') as [string, string];
          expect(
            REFERENCE_DATAMAP.tables[table]?.columns[column]?.class,
            `${dataset.name}.${field.name} reads ${ref}`,
          ).not.toBe('secret');
        }
        // The declared reads could be wrong, so the SQL itself is checked too.
        for (const secret of secretColumns) {
          expect(field.sql, `${dataset.name}.${field.name}`).not.toMatch(new RegExp(`\\b${secret.name}\\b`));
        }
        expect(field.class).not.toBe('secret');
      }
    }
  });

  it('gives the conversations and messages datasets exactly the contract columns, in order', () => {
    const conversations = REFERENCE_DATAMAP.datasets.conversations!.fields;
    expect(conversations.filter((f) => f.enrichment).map((f) => f.name)).toEqual([
      'device_class',
      'browser',
      'os',
      'ip_country',
      'ip_region',
    ]);
    // Enriched fields come only when asked for by name; the rest is the contract of every export.
    expect(conversations.filter((f) => !f.enrichment).map((f) => f.name)).toEqual(
      'conversation_id, tenant_id, session_id, start_timestamp, end_timestamp, site_url, page_url, referrer, customer_email, customer_name, ip_address, country, language, user_agent, conversation_status, escalated, escalation_reason, resolution_time_minutes, satisfaction_score, satisfaction_feedback, ai_confidence_avg, message_count, customer_message_count, ai_message_count, human_message_count, topics_detected, full_transcript, internal_notes, tags, custom_fields, last_updated, customer_id, assigned_agent_id'.split(
        ', ',
      ),
    );
    expect(REFERENCE_DATAMAP.datasets.messages!.fields.map((f) => f.name)).toEqual(
      'message_id, conversation_id, timestamp, sender_type, sender_id, message_content, confidence_score, processing_time_ms, tokens_used, content_sources, source_relevance_scores, message_length, language_detected, sentiment_score, intent_classification, entities_extracted, custom_metadata, edited'.split(
        ', ',
      ),
    );
  });

  it('reports a field that reads a column the map does not declare', () => {
    const conversations = REFERENCE_DATAMAP.datasets.conversations!;
    const broken: DataMap = {
      ...REFERENCE_DATAMAP,
      datasets: {
        ...REFERENCE_DATAMAP.datasets,
        conversations: {
          ...conversations,
          fields: [{ ...conversations.fields[0]!, reads: ['conversations.nope'] }],
        },
      },
    };
    expect(checkDataMap(broken)).toEqual([
      'dataset conversations.conversation_id: reads missing column conversations.nope',
    ]);
  });
});

for (const dialect of DIALECTS) {
  describe(`data map against the ${dialect} schema`, () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase(dialect);
    });
    afterAll(() => t.drop());

    it('declares every column of every reference table, and nothing that is not there', async () => {
      expect(await checkDataMapAgainstDatabase(REFERENCE_DATAMAP, t.database.db)).toEqual([]);
      await expect(validateDataMap(REFERENCE_DATAMAP, t.database.db)).resolves.toBeUndefined();
    });

    it('fails start with a clear message when a column has no class', async () => {
      await t.database.exec('ALTER TABLE customers ADD COLUMN shoe_size integer');
      try {
        await expect(validateDataMap(REFERENCE_DATAMAP, t.database.db)).rejects.toThrow(
          'column "customers.shoe_size" exists in the database but has no class in the data map',
        );
      } finally {
        await t.database.exec('ALTER TABLE customers DROP COLUMN shoe_size');
      }
    });

    it('fails with a clear message when the map names a missing column', async () => {
      const customers = REFERENCE_DATAMAP.tables.customers!;
      const map: DataMap = {
        ...REFERENCE_DATAMAP,
        tables: {
          ...REFERENCE_DATAMAP.tables,
          customers: {
            ...customers,
            columns: {
              ...customers.columns,
              loyalty_tier: { type: 'string', class: 'none', description: 'x' },
            },
          },
        },
      };
      await expect(validateDataMap(map, t.database.db)).rejects.toThrow(
        'data map names column "customers.loyalty_tier", which does not exist in the database',
      );
    });
  });
}

describe('data dictionary', () => {
  it('in docs/ matches the data map (regenerate: npx ferry datamap --format markdown > docs/data-dictionary.md)', async () => {
    const { readFile } = await import('node:fs/promises');
    const { dataDictionaryMarkdown } = await import('../src/datamap/dictionary.ts');
    expect(await readFile(new URL('../docs/data-dictionary.md', import.meta.url), 'utf8')).toBe(
      dataDictionaryMarkdown(REFERENCE_DATAMAP),
    );
  });
});

describe('migrations are history', () => {
  it('only the migrator imports a migration, and a migration imports no runtime code', async () => {
    const { readdir, readFile } = await import('node:fs/promises');
    const path = await import('node:path');
    const src = path.resolve('src');
    const migrations = path.join(src, 'db', 'migrations');
    const files = (await readdir(src, { recursive: true }))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => path.join(src, f));
    const problems: string[] = [];
    for (const file of files) {
      const text = await readFile(file, 'utf8');
      for (const [, specifier] of text.matchAll(/(?:from|import\()\s*'(\.[^']+)'/g)) {
        const target = path.resolve(path.dirname(file), specifier!);
        const fromMigration = file.startsWith(`${migrations}${path.sep}`);
        const toMigration = target.startsWith(`${migrations}${path.sep}`);
        if (fromMigration && !toMigration) problems.push(`${path.relative(src, file)} imports ${specifier}`);
        if (!fromMigration && toMigration && file !== path.join(src, 'db', 'migrate.ts'))
          problems.push(`${path.relative(src, file)} imports ${specifier}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
