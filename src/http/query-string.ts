/**
 * The query string parser of the HTTP app. It reads `a=1&a=2&b` as Fastify's default
 * does (repeated names become an array, `+` is a space, the object has no prototype),
 * but a percent-escape that does not decode to UTF-8 text (`%ff`, `%c0%ae`, a lone `%`)
 * is not passed on as if it were the literal text: the name is remembered, and request
 * validation answers 400 naming it (see `undecodableParameters`). With `plusIsSpace: false`
 * a `+` stays a plus sign, as RFC 3986 reads a URL (the OData feed: `…T09:30:00+02:00`).
 */
export function parseQueryString(
  query: string,
  options: { plusIsSpace?: boolean } = {},
): Record<string, string | string[]> {
  const plusIsSpace = options.plusIsSpace ?? true;
  const result: Record<string, string | string[]> = Object.create(null);
  if (query.length === 0) return result;
  const undecodable: string[] = [];
  for (const pair of query.split('&')) {
    if (pair.length === 0) continue;
    const eq = pair.indexOf('=');
    const rawName = eq === -1 ? pair : pair.slice(0, eq);
    if (rawName.length === 0 && eq === -1) continue;
    const name = decode(rawName, plusIsSpace);
    const value = eq === -1 ? { text: '', ok: true } : decode(pair.slice(eq + 1), plusIsSpace);
    if (!name.ok || !value.ok) undecodable.push(name.text);
    const existing = result[name.text];
    if (existing === undefined) result[name.text] = value.text;
    else if (Array.isArray(existing)) existing.push(value.text);
    else result[name.text] = [existing, value.text];
  }
  if (undecodable.length > 0) UNDECODABLE.set(result, undecodable);
  return result;
}

/** The names of a parsed query whose name or value held an undecodable percent-escape. */
export function undecodableParameters(query: unknown): readonly string[] {
  return (typeof query === 'object' && query !== null && UNDECODABLE.get(query)) || [];
}

const UNDECODABLE = new WeakMap<object, string[]>();

function decode(text: string, plusIsSpace: boolean): { text: string; ok: boolean } {
  const spaced = plusIsSpace && text.includes('+') ? text.replaceAll('+', ' ') : text;
  if (!spaced.includes('%')) return { text: spaced, ok: true };
  try {
    return { text: decodeURIComponent(spaced), ok: true };
  } catch {
    return { text: spaced, ok: false };
  }
}
