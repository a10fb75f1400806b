import { invalid } from './ferry-error.ts';

/**
 * How much personal data an export (or a live stream) carries: `full` data, or an
 * anonymization level, each removing more than the one before. src/transform/anonymize.ts
 * says what each level does to each field; docs/anonymization.md has the table.
 */
export const PII_LEVELS = ['full', 'basic', 'enhanced', 'complete'] as const;
export type PiiLevel = (typeof PII_LEVELS)[number];

/** The level used when an export does not ask for personal data. */
export const DEFAULT_PII_LEVEL: PiiLevel = 'enhanced';

export function isPiiLevel(value: unknown): value is PiiLevel {
  return typeof value === 'string' && (PII_LEVELS as readonly string[]).includes(value);
}

/** Validates a level given by a user (API parameter, CLI option). */
export function parsePiiLevel(value: unknown, param = 'anonymization'): PiiLevel {
  if (isPiiLevel(value)) return value;
  throw invalid(param, `unknown anonymization level ${JSON.stringify(value)}`, PII_LEVELS);
}
