/**
 * Whether an error comes from listing the catalog while another client changed it: Kysely's
 * introspection reads every table of the database, and a schema, table or column that
 * another client drops during that read fails it (`schema "x" does not exist`, `column "c"
 * of relation "t" does not exist`, `cache lookup failed for relation 123`). Seen when test
 * suites drop their schemas in parallel; reading again succeeds.
 */
export function isCatalogRace(err: unknown, ownSchema?: string): boolean {
  const message = err instanceof Error ? err.message : String(err);
  const schema = /^schema "(.+)" does not exist$/.exec(message)?.[1];
  if (schema !== undefined) return schema !== ownSchema;
  return (
    /^(column "[^"]+" of )?relation "[^"]+" does not exist$/.test(message) ||
    /^cache lookup failed/.test(message)
  );
}

/** Runs a catalog listing again (up to five times in all) while it fails for a concurrent catalog change. */
export async function retryCatalogRace<T>(fn: () => Promise<T>, ownSchema?: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || !isCatalogRace(err, ownSchema)) throw err;
    }
  }
}
