import { randomUUID } from 'node:crypto';
import { stringify } from 'csv-stringify/sync';
import { sql } from 'kysely';
import { recordAudit } from '../auth/audit.ts';
import type { Database } from '../db/database.ts';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { ColumnClass, DataMap } from '../datamap/types.ts';
import { FerryError, invalid } from '../domain/ferry-error.ts';
import { csvGuard } from '../transform/csv-guard.ts';
import { PERSONAL_CLASSES, tenantProcessors } from './processors.ts';
import { effectiveRetention } from './retention-policies.ts';

/**
 * The record of processing activities (GDPR Art. 30; docs/processors.md#records-of-processing).
 * The tenant declares its activities (or keeps the built-in ones for a support platform);
 * what can be derived is never declared: the data categories come from the data map's column
 * classes of the activity's tables, the retention period from the retention policies in
 * force, the recipients and transfers from the processors registry.
 */

/** How a column class reads in a record of processing (the product documentation's wording). */
export const CATEGORY_NAMES: Partial<Record<ColumnClass, string>> = {
  identifier: 'Identifiers',
  contact: 'Contact information',
  network: 'Technical data (IP address, browser)',
  location: 'Location data',
  free_text: 'Communication content',
};

export interface ActivityDeclaration {
  readonly processing_activity: string;
  readonly legal_basis: string;
  /** The data-map tables the activity uses. */
  readonly datasets: readonly string[];
  readonly data_subjects: readonly string[];
  /** Recipients besides the registered processors (e.g. the support team). */
  readonly recipients: readonly string[];
  readonly international_transfers: { countries: string[]; safeguards: string | null };
  readonly automated_processing: { exists: boolean; description: string | null; human_review: string | null };
}

const VISITORS = 'Website visitors and customers';
const NO_AUTOMATION = { exists: false, description: null, human_review: null };
const NO_TRANSFER = { countries: [], safeguards: null };

/** The built-in activities of an AI customer-support platform, each naming the data-map tables it uses. */
export const DEFAULT_ACTIVITIES: readonly ActivityDeclaration[] = [
  {
    processing_activity: 'Customer support conversations',
    legal_basis: 'Legitimate interests (Art. 6(1)(f)): answering the questions visitors ask',
    datasets: ['conversations', 'messages', 'customers'],
    data_subjects: [VISITORS],
    recipients: ['Customer support team'],
    international_transfers: NO_TRANSFER,
    automated_processing: {
      exists: true,
      description:
        'An AI assistant answers visitors and decides when to hand the conversation over to a person.',
      human_review: 'Visitors can ask for a person at any time; agents take over escalated conversations.',
    },
  },
  {
    processing_activity: 'Conversation analytics and quality',
    legal_basis: 'Legitimate interests (Art. 6(1)(f)): improving answers and service quality',
    datasets: ['conversations', 'messages'],
    data_subjects: [VISITORS],
    recipients: ['Support managers and analysts'],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
  {
    processing_activity: 'Revenue attribution',
    legal_basis: 'Legitimate interests (Art. 6(1)(f)): measuring what support contributes to sales',
    datasets: ['revenue_events', 'customers'],
    data_subjects: [VISITORS],
    recipients: ['Marketing and finance'],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
  {
    processing_activity: 'Knowledge base for the AI assistant',
    legal_basis: 'Legitimate interests (Art. 6(1)(f)): articles the assistant answers from',
    datasets: ['documents', 'document_chunks'],
    data_subjects: ['Authors and people mentioned in articles'],
    recipients: ['Customer support team'],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
  {
    processing_activity: 'Consent management',
    legal_basis: 'Legal obligation (Art. 6(1)(c), Art. 7(1)): proof of consent',
    datasets: ['consent_records'],
    data_subjects: [VISITORS],
    recipients: [],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
  {
    processing_activity: 'Account, team and billing administration',
    legal_basis: 'Contract (Art. 6(1)(b)) and legal obligation (Art. 6(1)(c)) for bookkeeping',
    datasets: ['team_members', 'subscriptions', 'invoices', 'settings', 'integrations'],
    data_subjects: ["The tenant's team members"],
    recipients: ['Account administrators', 'Accounting'],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
  {
    processing_activity: 'Security and audit logging',
    legal_basis: 'Legitimate interests (Art. 6(1)(f)) and legal obligation (Art. 5(2), Art. 30, Art. 32)',
    datasets: ['activity_logs', 'audit_events'],
    data_subjects: ["The tenant's team members", VISITORS],
    recipients: ['Security and compliance staff'],
    international_transfers: NO_TRANSFER,
    automated_processing: NO_AUTOMATION,
  },
];

export interface RopaActivity {
  readonly processing_activity: string;
  readonly legal_basis: string;
  readonly data_categories: string[];
  readonly retention_period: string;
  readonly data_subjects: string[];
  readonly recipients: string[];
  readonly international_transfers: { countries: string[]; safeguards: string | null };
  readonly automated_processing: { exists: boolean; description: string | null; human_review: string | null };
  readonly datasets: string[];
}

export interface Ropa {
  readonly tenant_id: string;
  readonly controller: string;
  readonly generated_at: string;
  /** `declared` by the tenant, or Ferry's `default` activities. */
  readonly source: 'declared' | 'default';
  readonly activities: RopaActivity[];
}

/**
 * The data-map column classes of some tables that are personal data: the personal classes
 * (contact, network, location, free_text), and `identifier` when a table holds an identifier
 * of a person (a column with a `pii` kind such as a customer id or a session), not only the
 * keys of records. In the data map's order of classes.
 */
export function classesOf(datasets: readonly string[], map: DataMap = REFERENCE_DATAMAP): ColumnClass[] {
  const found = new Set<ColumnClass>();
  for (const d of datasets)
    for (const c of Object.values(map.tables[d]?.columns ?? {}))
      if (PERSONAL_CLASSES.includes(c.class) || (c.class === 'identifier' && c.pii)) found.add(c.class);
  return (['identifier', ...PERSONAL_CLASSES] as ColumnClass[]).filter((c) => found.has(c));
}

/** The categories of personal data of some tables, as a record of processing names them. */
export function categoriesOf(datasets: readonly string[], map: DataMap = REFERENCE_DATAMAP): string[] {
  return classesOf(datasets, map).map((c) => CATEGORY_NAMES[c] ?? c.replaceAll('_', ' '));
}

/** EEA member states: a processor there (or in "EU"/"EEA") is no transfer for an EEA controller. */
const EEA = new Set(
  'AT BE BG HR CY CZ DK EE FI FR DE GR EL HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO EU EEA'.split(
    ' ',
  ),
);

/** Whether a processor's location is outside the controller's country (and, for an EEA controller, the EEA). */
function abroad(location: string, home: string): boolean {
  const where = location.trim().toUpperCase();
  const from = home.trim().toUpperCase();
  if (!where || where === from) return false;
  return !(EEA.has(from) && EEA.has(where));
}

/** The tenant's declared activities, or none. */
async function declared(database: Database, tenantId: string): Promise<ActivityDeclaration[]> {
  const r = await sql<{
    processing_activity: string;
    legal_basis: string;
    datasets: string[];
    data_subjects: string[];
    recipients: string[];
    international_transfers: ActivityDeclaration['international_transfers'] | string;
    automated_processing: ActivityDeclaration['automated_processing'] | string;
  }>`SELECT processing_activity, legal_basis, datasets, data_subjects, recipients, international_transfers, automated_processing
    FROM processing_activities WHERE tenant_id = ${tenantId} ORDER BY created_at, id`.execute(database.db);
  const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);
  return r.rows.map((a) => ({
    ...a,
    international_transfers: json(a.international_transfers),
    automated_processing: json(a.automated_processing),
  }));
}

/** The record of processing, with everything derivable derived. */
export async function recordOfProcessing(
  database: Database,
  tenantId: string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<Ropa> {
  const tenant = await database.db
    .selectFrom('tenants')
    .select(['name', 'home_country'])
    .where('id', '=', tenantId)
    .executeTakeFirst();
  if (!tenant) throw new FerryError('not_found', `no tenant ${tenantId}`);
  const own = await declared(database, tenantId);
  const activities = own.length ? own : DEFAULT_ACTIVITIES;
  const policies = new Map((await effectiveRetention(database, tenantId, map)).map((p) => [p.dataset, p]));
  const processors = await tenantProcessors(database, tenantId);
  return {
    tenant_id: tenantId,
    controller: tenant.name,
    generated_at: new Date().toISOString(),
    source: own.length ? 'declared' : 'default',
    activities: activities.map((a) => {
      const classes: string[] = classesOf(a.datasets, map);
      const receiving = processors.filter((p) => p.data_categories.some((c) => classes.includes(c)));
      const transfers = receiving.map((p) => p.location.trim()).filter((l) => abroad(l, tenant.home_country));
      const countries = [...new Set([...a.international_transfers.countries, ...transfers])];
      return {
        processing_activity: a.processing_activity,
        legal_basis: a.legal_basis,
        data_categories: categoriesOf(a.datasets, map),
        retention_period: a.datasets
          .map((d) => policies.get(d)?.statement)
          .filter((statement): statement is string => Boolean(statement))
          .join(' '),
        data_subjects: [...a.data_subjects],
        recipients: [...a.recipients, ...receiving.map((p) => `${p.name} (processor, ${p.location})`)],
        international_transfers: {
          countries,
          safeguards:
            a.international_transfers.safeguards ??
            (countries.length
              ? 'Standard contractual clauses (Art. 46(2)(c)) unless an adequacy decision applies'
              : null),
        },
        automated_processing: { ...a.automated_processing },
        datasets: [...a.datasets],
      };
    }),
  };
}

/** The record as JSON text (what `GET /api/v1/ropa` answers), indented, with a final newline. */
export function ropaJson(ropa: Ropa): string {
  return `${JSON.stringify(ropa, null, 2)}\n`;
}

/**
 * The record as CSV (RFC 4180: a header row, cells quoted when they hold a comma, quote or
 * line break, quotes doubled): one row per activity, lists joined with "; ", text cells
 * through the spreadsheet formula guard (the names and purposes are the tenant's text).
 */
export function ropaCsv(ropa: Ropa): string {
  const rows = ropa.activities.map((a) =>
    [
      a.processing_activity,
      a.legal_basis,
      a.data_categories.join('; '),
      a.retention_period,
      a.data_subjects.join('; '),
      a.recipients.join('; '),
      a.international_transfers.countries.join('; '),
      a.international_transfers.safeguards ?? '',
      String(a.automated_processing.exists),
      a.automated_processing.description ?? '',
      a.automated_processing.human_review ?? '',
      a.datasets.join('; '),
    ].map(csvGuard),
  );
  return stringify(rows, {
    header: true,
    columns: [
      'processing_activity',
      'legal_basis',
      'data_categories',
      'retention_period',
      'data_subjects',
      'recipients',
      'international_transfers_countries',
      'international_transfers_safeguards',
      'automated_processing_exists',
      'automated_processing_description',
      'automated_processing_human_review',
      'datasets',
    ],
  });
}

export interface ActivityInput {
  processing_activity: string;
  legal_basis: string;
  datasets: string[];
  data_subjects: string[];
  recipients?: string[] | undefined;
  international_transfers?:
    | { countries?: string[] | undefined; safeguards?: string | null | undefined }
    | undefined;
  automated_processing?:
    | { exists: boolean; description?: string | null | undefined; human_review?: string | null | undefined }
    | undefined;
}

/** Replaces the tenant's declared activities; an empty list returns to the built-in ones. */
export async function putActivities(
  database: Database,
  tenantId: string,
  input: readonly ActivityInput[],
  actor: string,
  map: DataMap = REFERENCE_DATAMAP,
): Promise<Ropa> {
  const tables = Object.keys(map.tables).filter((t) => map.tables[t]?.tenantKey);
  const rows = input.map((a, i) => {
    const at = (f: string) => `activities[${i}].${f}`;
    if (!a.processing_activity?.trim()) throw invalid(at('processing_activity'), 'is required');
    if (!a.legal_basis?.trim()) throw invalid(at('legal_basis'), 'is required');
    if (!a.datasets?.length) throw invalid(at('datasets'), 'name the tables the activity uses', tables);
    a.datasets.forEach((d, j) => {
      if (!tables.includes(d))
        throw invalid(`${at('datasets')}[${j}]`, `"${d}" is not a table of the data map`, tables);
    });
    if (!a.data_subjects?.length) throw invalid(at('data_subjects'), 'name whose data it is');
    if (a.automated_processing?.exists && !a.automated_processing.human_review?.trim())
      throw invalid(
        at('automated_processing.human_review'),
        'say how a person can have a decision reviewed (Art. 22(3))',
      );
    return {
      id: randomUUID(),
      processing_activity: a.processing_activity.trim(),
      legal_basis: a.legal_basis.trim(),
      datasets: [...new Set(a.datasets)],
      data_subjects: a.data_subjects,
      recipients: a.recipients ?? [],
      international_transfers: JSON.stringify({
        countries: a.international_transfers?.countries ?? [],
        safeguards: a.international_transfers?.safeguards ?? null,
      }),
      automated_processing: JSON.stringify({
        exists: a.automated_processing?.exists ?? false,
        description: a.automated_processing?.description ?? null,
        human_review: a.automated_processing?.human_review ?? null,
      }),
    };
  });
  const now = new Date();
  await database.db.transaction().execute(async (trx) => {
    await sql`DELETE FROM processing_activities WHERE tenant_id = ${tenantId}`.execute(trx);
    for (const [i, r] of rows.entries())
      await sql`INSERT INTO processing_activities (id, tenant_id, processing_activity, legal_basis, datasets, data_subjects,
          recipients, international_transfers, automated_processing, created_at, updated_at)
        VALUES (${r.id}, ${tenantId}, ${r.processing_activity}, ${r.legal_basis}, ${r.datasets}, ${r.data_subjects},
          ${r.recipients}, ${r.international_transfers}::jsonb, ${r.automated_processing}::jsonb,
          ${new Date(now.getTime() + i)}, ${now})`.execute(trx);
  });
  await recordAudit(database, {
    tenantId,
    actor,
    action: 'ropa.updated',
    dataType: 'processing_activities',
    success: true,
  });
  return recordOfProcessing(database, tenantId, map);
}
