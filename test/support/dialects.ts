/**
 * The databases the suites run on, and FERRY_TEST_DIALECTS, which narrows them. Kept free
 * of imports so vitest.config.ts can check the variable before any suite loads.
 */

/** Every database Ferry runs on. */
export const ALL_DIALECTS = ['pglite', 'postgres'] as const;
export type Dialect = (typeof ALL_DIALECTS)[number];

/**
 * The dialects named by a FERRY_TEST_DIALECTS value: comma-separated, unset or empty for
 * all. An unknown name throws, so a typo cannot quietly skip every database suite.
 */
export function selectDialects(value: string | undefined): readonly Dialect[] {
  const names = (value ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  if (names.length === 0) return ALL_DIALECTS;
  for (const name of names)
    if (!(ALL_DIALECTS as readonly string[]).includes(name))
      throw new Error(
        `FERRY_TEST_DIALECTS: unknown dialect '${name}' (known: ${ALL_DIALECTS.join(', ')}; unset for all)`,
      );
  return ALL_DIALECTS.filter((dialect) => names.includes(dialect));
}
