/**
 * Anonymization levels, pushed down into SQL: for each dataset field the export engine asks
 * for the SQL expression that yields the field at the export's level and puts it in the
 * `COPY (SELECT ...)` projection. The decision depends on the field's `pii` kind first and
 * its `class` otherwise; the SQL functions come from migration 0002. Column types never
 * change, and a removed field stays in the output with NULL values. docs/anonymization.md
 * has the full table.
 */
import type { ColumnClass, DatasetField, FieldType, PiiKind } from '../datamap/types.ts';
import { literal } from '../db/database.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { isPiiLevel, type PiiLevel, parsePiiLevel } from '../domain/pii-level.ts';
import { normalizeKey } from './pseudonym.ts';

/** The level as the SQL functions take it: 0 full, 1 basic, 2 enhanced, 3 complete. */
export const PII_LEVEL_NUMBER = { full: 0, basic: 1, enhanced: 2, complete: 3 } as const satisfies Record<
  PiiLevel,
  number
>;

export interface AnonymizeContext {
  level: PiiLevel;
  /** per-export random key (hex, at least 128 bits) for keyed hashes */
  key: string;
  /**
   * Optional SQL expressions, over the same FROM clause, of the row's data subject's name and
   * email (e.g. `t.customer_name`, `t.customer_email` for conversations, `c.customer_name` for
   * messages). At every anonymization level, free-text fields of the row also have those
   * values replaced by [name] and [email].
   */
  subject?: { name?: string; email?: string };
}

/** What happens to a field at a level. */
export type Treatment =
  | 'kept'
  | 'removed'
  | 'masked_email'
  | 'first_name'
  | 'ip_truncated'
  | 'browser_family'
  | 'continent'
  | 'pseudonymized'
  | 'rounded_to_hour'
  | 'scrubbed';

/** The parts of a field (or a table column) that decide its treatment. */
export type AnonymizableField = Pick<DatasetField, 'type' | 'class' | 'pii'> & { readonly name?: string };

type Level = Exclude<PiiLevel, 'full'>;

const BY_KIND = {
  email: (level) => (level === 'basic' ? 'masked_email' : 'removed'),
  name: (level) => (level === 'basic' ? 'first_name' : 'removed'),
  phone: () => 'removed',
  ip: (level) => (level === 'complete' ? 'removed' : 'ip_truncated'),
  user_agent: (level) => (level === 'basic' ? 'kept' : level === 'enhanced' ? 'browser_family' : 'removed'),
  // A class parsed from a user agent (device class, browser, operating system): no finer than
  // the browser family that enhanced keeps of the user agent itself.
  device: (level) => (level === 'complete' ? 'removed' : 'kept'),
  country: (level) => (level === 'complete' ? 'continent' : 'kept'),
  session: (level) => (level === 'complete' ? 'pseudonymized' : 'kept'),
  person_id: (level) => (level === 'complete' ? 'pseudonymized' : 'kept'),
} as const satisfies Record<PiiKind, (level: Level) => Treatment>;

/** Fields without a pii kind. Unknown personal data is removed rather than guessed at. */
const BY_CLASS = {
  identifier: () => 'kept',
  internal: () => 'kept',
  none: () => 'kept',
  free_text: () => 'scrubbed',
  contact: () => 'removed',
  network: () => 'removed',
  location: (level) => (level === 'basic' ? 'kept' : 'removed'),
  secret: () => 'removed',
} as const satisfies Record<ColumnClass, (level: Level) => Treatment>;

/** Field types each treatment works on; anything else is a data map error. */
const ACCEPTS: Record<Treatment, readonly FieldType[] | 'any'> = {
  kept: 'any',
  removed: 'any',
  masked_email: ['string', 'string[]'],
  first_name: ['string', 'string[]'],
  ip_truncated: ['string', 'string[]'],
  browser_family: ['string', 'string[]'],
  continent: ['string', 'string[]'],
  pseudonymized: ['uuid', 'string', 'uuid[]', 'string[]'],
  rounded_to_hour: ['timestamp'],
  scrubbed: ['string', 'string[]', 'json'],
};

/** SQL types for typed NULLs of removed fields. */
export const SQL_TYPES = {
  uuid: 'uuid',
  string: 'text',
  integer: 'bigint',
  number: 'numeric',
  boolean: 'boolean',
  timestamp: 'timestamptz',
  date: 'date',
  json: 'jsonb',
  'string[]': 'text[]',
  'uuid[]': 'uuid[]',
  'number[]': 'numeric[]',
} as const satisfies Record<FieldType, string>;

const label = (field: AnonymizableField) => field.name ?? '(unnamed field)';

function checkLevel(level: string): asserts level is PiiLevel {
  if (!isPiiLevel(level)) parsePiiLevel(level, 'level');
}

/** What happens to the field at the level. Throws for `secret` fields, which never leave. */
export function fieldTreatment(field: AnonymizableField, level: PiiLevel): Treatment {
  checkLevel(level);
  if (field.class === 'secret') {
    throw new FerryError(
      'internal',
      `field ${label(field)} is of class secret and can never be exported, at any anonymization level`,
    );
  }
  if (level === 'full') return 'kept';
  const treatment: Treatment = field.pii ? BY_KIND[field.pii](level) : BY_CLASS[field.class](level);
  if (treatment === 'kept' && level === 'complete' && field.type === 'timestamp') return 'rounded_to_hour';
  return treatment;
}

/** True when the field is present but empty (NULL) at the level; for the data dictionary. */
export function fieldIsRemoved(field: AnonymizableField, level: PiiLevel): boolean {
  return fieldTreatment(field, level) === 'removed';
}

/** A sentence for the data dictionary: what the export does to the field at the level. */
export function describeTreatment(field: AnonymizableField, level: PiiLevel): string {
  const treatment = fieldTreatment(field, level);
  switch (treatment) {
    case 'kept':
      return 'Unchanged.';
    case 'removed':
      return 'Removed: the column is present with empty values.';
    case 'masked_email':
      return 'Masked: the first four characters of the local part, then ***@ and the domain.';
    case 'first_name':
      return 'First name only (the first word).';
    case 'ip_truncated':
      return level === 'basic'
        ? 'Truncated: IPv4 keeps the first three octets, IPv6 the first 48 bits; the rest is zero.'
        : 'Truncated: IPv4 keeps the first two octets, IPv6 the first 32 bits; the rest is zero.';
    case 'browser_family':
      return 'Browser family only: Chrome, Firefox, Safari, Edge, Opera, Samsung Internet or Other.';
    case 'continent':
      return 'Continent code instead of the country: AF, AN, AS, EU, NA, OC or SA.';
    case 'pseudonymized':
      return field.pii === 'session' && field.type !== 'uuid' && field.type !== 'uuid[]'
        ? 'Pseudonymized: anon_ and 16 hex characters of a keyed hash, stable within this export only.'
        : 'Pseudonymized: a UUID from a keyed hash, stable within this export only.';
    case 'rounded_to_hour':
      return 'Rounded down to the hour (UTC).';
    case 'scrubbed':
      return level === 'basic'
        ? 'Free text with phone and card numbers replaced by [phone] and [card].'
        : level === 'enhanced'
          ? 'Free text with emails masked and phone numbers, card numbers and IP addresses replaced by tokens.'
          : 'Free text with emails, phone numbers, card numbers and IP addresses replaced by tokens.';
  }
}

/** Applies an expression to each element of an array expression, keeping order and NULL. */
function perElement(field: AnonymizableField, expr: string, apply: (element: string) => string): string {
  if (!field.type.endsWith('[]')) return apply(expr);
  return `CASE WHEN (${expr}) IS NULL THEN NULL ELSE ARRAY(SELECT ${apply('ferry_el.v')} FROM unnest(${expr}) WITH ORDINALITY AS ferry_el(v, n) ORDER BY ferry_el.n) END`;
}

function subjectArgs(ctx: AnonymizeContext): string {
  const { name, email } = ctx.subject ?? {};
  if (PII_LEVEL_NUMBER[ctx.level] < 1 || (!name && !email)) return '';
  return `, ${name ? `(${name})::text` : 'NULL'}, ${email ? `(${email})::text` : 'NULL'}`;
}

/**
 * The SQL expression that yields the field's value at the context's level. A removed field
 * becomes `NULL::<sql type>`, so the column stays in the output, typed. The result always
 * has the field's declared type. Throws for `secret` fields.
 */
export function anonymizeSql(field: AnonymizableField, expr: string, ctx: AnonymizeContext): string {
  const treatment = fieldTreatment(field, ctx.level);
  const accepts = ACCEPTS[treatment];
  if (accepts !== 'any' && !accepts.includes(field.type)) {
    throw new FerryError(
      'internal',
      `field ${label(field)}: ${treatment} applies to ${accepts.join(', ')} fields, not ${field.type}`,
    );
  }
  const level = PII_LEVEL_NUMBER[ctx.level];
  switch (treatment) {
    case 'kept':
      return expr;
    case 'removed':
      return `NULL::${SQL_TYPES[field.type]}`;
    case 'masked_email':
      return perElement(field, expr, (e) => `ferry_mask_email(${e})`);
    case 'first_name':
      return perElement(field, expr, (e) => `ferry_first_name(${e})`);
    case 'ip_truncated': {
      const [v4, v6] = ctx.level === 'basic' ? [24, 48] : [16, 32];
      return perElement(field, expr, (e) => `ferry_mask_ip(${e}, ${v4}, ${v6})`);
    }
    case 'browser_family':
      return perElement(field, expr, (e) => `ferry_browser_family(${e})`);
    case 'continent':
      return perElement(field, expr, (e) => `ferry_continent(${e})`);
    case 'pseudonymized': {
      const key = literal(normalizeKey(ctx.key));
      const asUuid = field.type === 'uuid' || field.type === 'uuid[]';
      if (field.pii === 'session' && !asUuid) {
        return perElement(field, expr, (e) => `ferry_token((${e})::text, ${key})`);
      }
      // Person ids are UUID-shaped whatever their type, so a uuid column and a text column
      // holding the same id (conversations.assigned_agent_id, messages.sender_id) still join.
      return perElement(
        field,
        expr,
        (e) => `ferry_token_uuid((${e})::text, ${key})${asUuid ? '' : '::text'}`,
      );
    }
    case 'rounded_to_hour':
      return `date_trunc('hour', (${expr})::timestamptz, 'UTC')`;
    case 'scrubbed': {
      const args = `${level}${subjectArgs(ctx)}`;
      if (field.type === 'json') return `ferry_scrub_jsonb((${expr})::jsonb, ${args})`;
      return perElement(field, expr, (e) => `ferry_scrub_text(${e}, ${args})`);
    }
  }
}
