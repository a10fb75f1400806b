import type { DatasetFilter } from '../datamap/types.ts';
import { invalid } from '../domain/ferry-error.ts';
import type { EntitySetModel } from './model.ts';

/**
 * OData system query options of the feed, turned into the export engine's input. `$filter`
 * takes comparisons of a property with a literal, joined by `and`, where each comparison is
 * one of the dataset's declared filters (`conversation_status eq 'resolved'` is the
 * `status` filter, `start_timestamp ge 2026-01-01T00:00:00Z` is `from`). The parser is
 * written here rather than taken from an OData library: the accepted grammar is that one
 * conjunction, and a general parser would accept (and need refusing) everything else.
 * Nothing of the expression reaches SQL as text: each literal becomes a filter value that
 * the engine validates by the filter's type and quotes.
 */

export type ComparisonOperator = 'eq' | 'ge' | 'gt' | 'le' | 'lt';

/** A declared filter as a comparison of one property. */
export interface FilterComparison {
  readonly property: string;
  readonly operator: ComparisonOperator;
  readonly filter: DatasetFilter;
}

const SQL_OPERATORS: Record<string, ComparisonOperator> = {
  '=': 'eq',
  '>=': 'ge',
  '>': 'gt',
  '<=': 'le',
  '<': 'lt',
};

/** The comparisons `$filter` accepts on this entity set, derived from the declared filters' SQL. */
export function filterComparisons(set: EntitySetModel): FilterComparison[] {
  const found: FilterComparison[] = [];
  for (const filter of set.dataset.filters) {
    const match = /^\s*(.+?)\s*(>=|<=|=|<|>)\s*\$value\s*$/.exec(filter.sql);
    if (!match) continue;
    const property = set.properties.find((p) => p.field.sql === match[1]);
    if (property) found.push({ property: property.name, operator: SQL_OPERATORS[match[2]!]!, filter });
  }
  return found;
}

/** What the request asks of the engine and of paging. */
export interface FeedQuery {
  /** Declared filter values by filter name (text, validated by the engine). */
  readonly filters: Record<string, string>;
  readonly from: string | undefined;
  readonly to: string | undefined;
  readonly columns: readonly string[] | undefined;
  readonly top: number | undefined;
  readonly skip: number | undefined;
  readonly skiptoken: string | undefined;
  readonly count: boolean;
  /** The personal-data switch, as on `GET /api/v1/export/{dataset}`. */
  readonly includePii: string | undefined;
}

/** System query options the feed implements. */
export const SYSTEM_OPTIONS = [
  '$select',
  '$filter',
  '$orderby',
  '$top',
  '$skip',
  '$skiptoken',
  '$count',
  '$format',
] as const;

const MAX_SKIP = 1_000_000_000_000;

function wholeNumber(param: string, text: string, max: number): number {
  if (!/^\d{1,15}$/.test(text) || Number(text) > max)
    throw invalid(param, `must be a whole number from 0 to ${max}, got "${text}"`);
  return Number(text);
}

/** Reads the query string of `GET /odata/v4/{set}`. Unknown options are errors that name them. */
export function readFeedQuery(set: EntitySetModel, query: Readonly<Record<string, string>>): FeedQuery {
  const filters: Record<string, string> = {};
  let from: string | undefined;
  let to: string | undefined;
  const custom = new Set(set.dataset.filters.map((f) => f.name).filter((n) => n !== 'from' && n !== 'to'));
  for (const [name, value] of Object.entries(query)) {
    if (name.startsWith('$')) {
      if (!(SYSTEM_OPTIONS as readonly string[]).includes(name))
        throw invalid(name, 'is not a query option this feed implements', SYSTEM_OPTIONS);
    } else if (name !== 'include_pii') {
      if (!custom.has(name))
        throw invalid(name, `is not a filter of ${set.name}`, [...custom, 'include_pii']);
      filters[name] = value;
    }
  }
  if (query.$format !== undefined && !/^json$|^application\/json(;.*)?$/i.test(query.$format))
    throw invalid('$format', `the feed answers in JSON, not "${query.$format}"`, ['json']);

  if (query.$filter !== undefined) {
    for (const c of parseFilter(set, query.$filter)) {
      if (c.name === 'from') from = c.value;
      else if (c.name === 'to') to = c.value;
      else if (filters[c.name] !== undefined)
        throw invalid('$filter', `${c.name} is given twice (in $filter and as ${c.name}=)`);
      else filters[c.name] = c.value;
    }
  }
  const columns = query.$select === undefined ? undefined : readSelect(set, query.$select);
  if (query.$orderby !== undefined) checkOrderBy(set, query.$orderby);
  if (query.$skiptoken !== undefined && query.$skip !== undefined)
    throw invalid('$skip', 'cannot be combined with $skiptoken; follow @odata.nextLink as given');
  const count = query.$count === undefined ? false : readBoolean('$count', query.$count);
  return {
    filters,
    from,
    to,
    columns,
    top: query.$top === undefined ? undefined : wholeNumber('$top', query.$top, MAX_SKIP),
    skip: query.$skip === undefined ? undefined : wholeNumber('$skip', query.$skip, MAX_SKIP),
    skiptoken: query.$skiptoken,
    count,
    includePii: query.include_pii,
  };
}

function readBoolean(param: string, text: string): boolean {
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw invalid(param, `must be true or false, got "${text}"`, ['true', 'false']);
}

function readSelect(set: EntitySetModel, text: string): string[] {
  const names = set.properties.map((p) => p.name);
  if (text.trim() === '*') return [];
  const selected = text.split(',').map((s) => s.trim());
  for (const name of selected) {
    if (!names.includes(name)) throw invalid('$select', `${set.name} has no property "${name}"`, names);
  }
  if (new Set(selected).size !== selected.length) throw invalid('$select', 'a property is listed twice');
  return selected;
}

/** The feed is ordered by the dataset's key, ascending: `$orderby` may only say so. */
function checkOrderBy(set: EntitySetModel, text: string): void {
  const parts = text.split(',').map((p) => p.trim().split(/\s+/));
  const ok =
    parts.length <= set.orderKey.length &&
    parts.every(
      ([name, direction, ...rest], i) =>
        name === set.orderKey[i] && (direction === undefined || direction === 'asc') && rest.length === 0,
    );
  if (!ok)
    throw invalid('$orderby', `${set.name} is ordered by its key, ascending; "${text}" cannot be served`, [
      set.orderKey.join(','),
    ]);
}

type Token =
  | { kind: 'name'; text: string }
  | { kind: 'string'; text: string }
  | { kind: 'literal'; text: string }
  | { kind: 'paren'; text: string };

/** Splits a `$filter` into names, quoted strings ('' is a quote) and other literals. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === "'") {
      let value = '';
      i++;
      for (;;) {
        if (i >= text.length) throw invalid('$filter', 'a string literal is not closed');
        if (text[i] === "'") {
          if (text[i + 1] === "'") {
            value += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += text[i];
        i++;
      }
      tokens.push({ kind: 'string', text: value });
    } else if (ch === '(' || ch === ')') {
      tokens.push({ kind: 'paren', text: ch });
      i++;
    } else {
      const match = /^[^\s()']+/.exec(text.slice(i))!;
      const word = match[0];
      tokens.push(
        /^[A-Za-z_][A-Za-z0-9_]*$/.test(word)
          ? { kind: 'name', text: word }
          : { kind: 'literal', text: word },
      );
      i += word.length;
    }
  }
  return tokens;
}

const DATETIME_OFFSET =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,12})?)?(Z|[+-]\d{2}:\d{2})$/;

/** An OData DateTimeOffset literal that is a real instant (no 2026-02-30 or 25:00). */
function dateTimeOffset(text: string): string | null {
  const m = DATETIME_OFFSET.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m;
  const day = new Date(`${y}-${mo}-${d}T00:00:00Z`);
  if (Number.isNaN(day.getTime()) || day.toISOString().slice(0, 10) !== `${y}-${mo}-${d}`) return null;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s ?? 0) > 59) return null;
  return text;
}

/** The literal's text as the declared filter takes it, or an error saying what the property needs. */
function literalValue(c: FilterComparison, token: Token, edmType: string): string {
  const expect = (what: string) =>
    invalid(
      '$filter',
      `${c.property} ${c.operator} needs ${what}, got ${token.kind === 'string' ? `'${token.text}'` : token.text}`,
    );
  if (edmType === 'Edm.DateTimeOffset') {
    const value = token.kind === 'literal' ? dateTimeOffset(token.text) : null;
    if (!value) throw expect('a DateTimeOffset such as 2026-01-31T00:00:00Z');
    return value;
  }
  switch (c.filter.type) {
    case 'string':
    case 'enum':
      if (token.kind !== 'string') throw expect("a string in single quotes, such as 'resolved'");
      return token.text;
    case 'boolean':
      if (token.kind !== 'name' || (token.text !== 'true' && token.text !== 'false'))
        throw expect('true or false');
      return token.text;
    case 'integer':
      if (token.kind !== 'literal' || !/^-?\d{1,15}$/.test(token.text)) throw expect('a whole number');
      return token.text;
    case 'number':
      if (token.kind !== 'literal' || !/^-?\d{1,15}(\.\d{1,15})?$/.test(token.text)) throw expect('a number');
      return token.text;
    case 'string[]':
      throw expect('a declared filter');
  }
}

/** Parses `$filter` into declared filter values by filter name. */
export function parseFilter(set: EntitySetModel, text: string): { name: string; value: string }[] {
  const comparisons = filterComparisons(set);
  const supported = comparisons.map((c) => `${c.property} ${c.operator}`);
  const tokens = tokenize(text);
  if (tokens.length === 0) throw invalid('$filter', 'is empty');
  const out: { name: string; value: string }[] = [];
  let i = 0;
  for (;;) {
    const [property, operator, literal] = [tokens[i], tokens[i + 1], tokens[i + 2]];
    if (property?.kind !== 'name' || operator?.kind !== 'name' || !literal || literal.kind === 'paren')
      throw invalid(
        '$filter',
        'takes comparisons of a property with a value joined by "and", such as conversation_status eq \'resolved\'',
        supported,
      );
    const c = comparisons.find((x) => x.property === property.text && x.operator === operator.text);
    if (!c)
      throw invalid(
        '$filter',
        `"${property.text} ${operator.text}" is not a filter of ${set.name}`,
        supported,
      );
    if (literal.kind === 'name' && literal.text === 'null')
      throw invalid('$filter', `${c.property} ${c.operator} null is not a filter of ${set.name}`, supported);
    const edmType = set.properties.find((p) => p.name === c.property)!.edmType;
    if (out.some((o) => o.name === c.filter.name))
      throw invalid('$filter', `"${c.property} ${c.operator}" is given twice`);
    out.push({ name: c.filter.name, value: literalValue(c, literal, edmType) });
    i += 3;
    if (i === tokens.length) return out;
    const joiner = tokens[i];
    if (joiner?.kind !== 'name' || joiner.text !== 'and' || i + 1 === tokens.length)
      throw invalid('$filter', `only "and" joins comparisons here, not "${joiner?.text ?? ''}"`, supported);
    i++;
  }
}
