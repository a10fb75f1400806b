import { literal } from '../db/database.ts';
import type { FieldType } from '../datamap/types.ts';
import { FerryError } from '../domain/ferry-error.ts';

/**
 * The expression language of calculated fields (docs/output-shaping.md): numbers, text in
 * single quotes, `true`/`false`, column names, `+ - * /`, comparisons, `and`/`or`/`not`,
 * parentheses and a fixed list of functions. An expression is parsed into a tree, type-checked
 * against the dataset's fields and compiled to SQL in which every column is that field's own
 * SQL (after anonymization) and every constant goes through `literal()`: no text of the
 * expression is ever copied into the statement.
 *
 * The parser is a hand-written recursive descent over a hand-written tokenizer. The grammar
 * is a dozen rules; an expression library (jsep, expr-eval, filtrex) parses a JavaScript-like
 * language with member access, arbitrary calls and its own evaluation, all of which would have
 * to be refused again node by node, and none reports positions and tokens in the form Ferry's
 * errors give them.
 */

export const MAX_EXPRESSION_LENGTH = 500;
export const MAX_EXPRESSION_DEPTH = 24;
export const MAX_EXPRESSION_TOKENS = 200;
const MAX_STRING_LENGTH = 200;
const MAX_NUMBER_DIGITS = 30;

/** The value types of the language; `integer` is a number known to have no fraction. */
export type ExpressionType = 'number' | 'integer' | 'string' | 'boolean' | 'date' | 'timestamp';

/** A column an expression may read: its type and the SQL of its value (already anonymized). */
export interface ExpressionColumn {
  readonly type: FieldType;
  readonly sql: () => string;
}

type Token =
  | { kind: 'number'; text: string; pos: number }
  | { kind: 'string'; value: string; text: string; pos: number }
  | { kind: 'name'; text: string; pos: number }
  | { kind: 'op'; text: string; pos: number }
  | { kind: 'end'; text: string; pos: number };

type Node =
  | { kind: 'number'; text: string; pos: number }
  | { kind: 'string'; value: string; pos: number }
  | { kind: 'boolean'; value: boolean; pos: number }
  | { kind: 'column'; name: string; pos: number }
  | { kind: 'call'; name: string; args: Node[]; pos: number }
  | { kind: 'unary'; op: '-' | 'not'; operand: Node; pos: number }
  | { kind: 'binary'; op: string; left: Node; right: Node; pos: number };

/** A refusal that names the parameter, the 1-based position and the token found there. */
function refuse(param: string, pos: number, token: string, message: string): FerryError {
  const shown = token.length > 20 ? `${token.slice(0, 20)}…` : token;
  const at = token === '' ? `at the end (position ${pos})` : `at position ${pos} ("${shown}")`;
  return new FerryError('invalid_expression', `${param}: ${message} ${at}`, {
    parameter: param,
    position: pos,
    token: shown,
  });
}

const KEYWORDS = new Set(['and', 'or', 'not', 'true', 'false']);
const OPERATORS = ['<=', '>=', '!=', '<>', '+', '-', '*', '/', '(', ')', ',', '=', '<', '>'];
/** Bidirectional controls, zero-width and other invisible characters: text that reads differently than it is. */
const INVISIBLE =
  /[\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/u;

function tokenize(source: string, param: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i]!;
    const pos = i + 1;
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      i++;
      continue;
    }
    if (source.startsWith('--', i) || source.startsWith('/*', i) || source.startsWith('*/', i))
      throw refuse(param, pos, source.slice(i, i + 2), 'comments are not part of the expression language');
    if (ch === "'") {
      let value = '';
      let j = i + 1;
      for (;;) {
        if (j >= source.length)
          throw refuse(param, pos, source.slice(i, i + 10), 'text without a closing quote');
        const c = source[j]!;
        if (c === "'") {
          if (source[j + 1] === "'") {
            value += "'";
            j += 2;
            continue;
          }
          break;
        }
        const code = c.charCodeAt(0);
        if (code < 0x20 || code === 0x7f || INVISIBLE.test(c))
          throw refuse(
            param,
            j + 1,
            `U+${code.toString(16).toUpperCase().padStart(4, '0')}`,
            'control or invisible character in text',
          );
        value += c;
        j++;
      }
      if ([...value].length > MAX_STRING_LENGTH)
        throw refuse(param, pos, source.slice(i, i + 10), `text longer than ${MAX_STRING_LENGTH} characters`);
      tokens.push({ kind: 'string', value, text: source.slice(i, j + 1), pos });
      i = j + 1;
      continue;
    }
    if (ch >= '0' && ch <= '9') {
      const m = /^[0-9]+(\.[0-9]+)?/.exec(source.slice(i))!;
      const after = source[i + m[0].length];
      if (after !== undefined && /[A-Za-z_.]/.test(after))
        throw refuse(param, pos, source.slice(i, i + m[0].length + 1), 'not a number');
      if (m[0].replace('.', '').length > MAX_NUMBER_DIGITS)
        throw refuse(param, pos, m[0], `a number longer than ${MAX_NUMBER_DIGITS} digits`);
      tokens.push({ kind: 'number', text: m[0], pos });
      i += m[0].length;
      continue;
    }
    if (/[A-Za-z_]/.test(ch)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(source.slice(i))!;
      tokens.push({ kind: 'name', text: m[0], pos });
      i += m[0].length;
      continue;
    }
    const op = OPERATORS.find((o) => source.startsWith(o, i));
    if (op) {
      tokens.push({ kind: 'op', text: op, pos });
      i += op.length;
      continue;
    }
    const code = source.codePointAt(i)!;
    const shown = code < 0x20 || code > 0x7e ? `U+${code.toString(16).toUpperCase().padStart(4, '0')}` : ch;
    throw refuse(
      param,
      pos,
      shown,
      ch === ';' ? 'statements are not part of the expression language' : 'unexpected character',
    );
  }
  if (tokens.length > MAX_EXPRESSION_TOKENS)
    throw refuse(
      param,
      tokens[MAX_EXPRESSION_TOKENS]!.pos,
      tokens[MAX_EXPRESSION_TOKENS]!.text,
      `more than ${MAX_EXPRESSION_TOKENS} tokens`,
    );
  tokens.push({ kind: 'end', text: '', pos: source.length + 1 });
  return tokens;
}

const COMPARISONS = ['=', '!=', '<>', '<', '<=', '>', '>='];

class Parser {
  private index = 0;
  private depth = 0;

  private readonly tokens: Token[];
  private readonly param: string;

  constructor(tokens: Token[], param: string) {
    this.tokens = tokens;
    this.param = param;
  }

  parse(): Node {
    const node = this.or();
    const next = this.peek();
    if (next.kind !== 'end') throw refuse(this.param, next.pos, next.text, 'unexpected token');
    return node;
  }

  private peek(): Token {
    return this.tokens[this.index]!;
  }

  private next(): Token {
    return this.tokens[this.index++]!;
  }

  private isWord(word: string): boolean {
    const t = this.peek();
    return t.kind === 'name' && t.text.toLowerCase() === word;
  }

  private isOp(op: string): boolean {
    const t = this.peek();
    return t.kind === 'op' && t.text === op;
  }

  private nested<T>(at: Token, parse: () => T): T {
    if (++this.depth > MAX_EXPRESSION_DEPTH)
      throw refuse(this.param, at.pos, at.text, `nested deeper than ${MAX_EXPRESSION_DEPTH} levels`);
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  private or(): Node {
    let left = this.and();
    while (this.isWord('or')) {
      const op = this.next();
      left = { kind: 'binary', op: 'or', left, right: this.and(), pos: op.pos };
    }
    return left;
  }

  private and(): Node {
    let left = this.not();
    while (this.isWord('and')) {
      const op = this.next();
      left = { kind: 'binary', op: 'and', left, right: this.not(), pos: op.pos };
    }
    return left;
  }

  private not(): Node {
    if (this.isWord('not')) {
      const op = this.next();
      return this.nested(op, () => ({ kind: 'unary', op: 'not', operand: this.not(), pos: op.pos }));
    }
    return this.comparison();
  }

  private comparison(): Node {
    const left = this.additive();
    const t = this.peek();
    if (t.kind === 'op' && COMPARISONS.includes(t.text)) {
      this.next();
      const right = this.additive();
      const again = this.peek();
      if (again.kind === 'op' && COMPARISONS.includes(again.text))
        throw refuse(this.param, again.pos, again.text, 'comparisons do not chain; join them with and');
      return { kind: 'binary', op: t.text === '<>' ? '!=' : t.text, left, right, pos: t.pos };
    }
    return left;
  }

  private additive(): Node {
    let left = this.term();
    while (this.isOp('+') || this.isOp('-')) {
      const op = this.next();
      left = { kind: 'binary', op: op.text, left, right: this.term(), pos: op.pos };
    }
    return left;
  }

  private term(): Node {
    let left = this.unary();
    while (this.isOp('*') || this.isOp('/')) {
      const op = this.next();
      left = { kind: 'binary', op: op.text, left, right: this.unary(), pos: op.pos };
    }
    return left;
  }

  private unary(): Node {
    if (this.isOp('-')) {
      const op = this.next();
      return this.nested(op, () => ({ kind: 'unary', op: '-', operand: this.unary(), pos: op.pos }));
    }
    return this.primary();
  }

  private primary(): Node {
    const t = this.next();
    switch (t.kind) {
      case 'number':
        return { kind: 'number', text: t.text, pos: t.pos };
      case 'string':
        return { kind: 'string', value: t.value, pos: t.pos };
      case 'name': {
        const word = t.text.toLowerCase();
        if (word === 'true' || word === 'false')
          return { kind: 'boolean', value: word === 'true', pos: t.pos };
        if (KEYWORDS.has(word)) throw refuse(this.param, t.pos, t.text, 'expected a value');
        if (!this.isOp('(')) return { kind: 'column', name: t.text, pos: t.pos };
        this.next();
        return this.nested(t, () => {
          const args: Node[] = [];
          if (!this.isOp(')')) {
            for (;;) {
              args.push(this.or());
              if (!this.isOp(',')) break;
              this.next();
            }
          }
          const close = this.next();
          if (close.kind !== 'op' || close.text !== ')')
            throw refuse(this.param, close.pos, close.text, `expected "," or ")" in ${t.text}(…)`);
          return { kind: 'call', name: word, args, pos: t.pos };
        });
      }
      case 'op':
        if (t.text === '(') {
          return this.nested(t, () => {
            const inner = this.or();
            const close = this.next();
            if (close.kind !== 'op' || close.text !== ')')
              throw refuse(this.param, close.pos, close.text, 'expected ")"');
            return inner;
          });
        }
        throw refuse(this.param, t.pos, t.text, 'expected a value');
      case 'end':
        throw refuse(this.param, t.pos, '', 'expected a value');
    }
  }
}

/** Names of the functions, for the docs and error messages. */
export const EXPRESSION_FUNCTIONS = [
  'abs',
  'coalesce',
  'concat',
  'day',
  'hour',
  'if',
  'length',
  'lower',
  'month',
  'round',
  'upper',
  'weekday',
  'year',
] as const;

interface Compiled {
  readonly sql: string;
  readonly type: ExpressionType;
  /** A text constant, kept so a date or timestamp comparison can read it as one. */
  readonly text?: string;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/;

function isNumeric(type: ExpressionType): boolean {
  return type === 'number' || type === 'integer';
}

const TYPE_WORDS: Record<ExpressionType, string> = {
  number: 'a number',
  integer: 'a number',
  string: 'text',
  boolean: 'a boolean',
  date: 'a date',
  timestamp: 'a timestamp',
};

function columnType(type: FieldType): ExpressionType | null {
  switch (type) {
    case 'integer':
      return 'integer';
    case 'number':
      return 'number';
    case 'string':
    case 'uuid':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'date':
      return 'date';
    case 'timestamp':
      return 'timestamp';
    default:
      return null;
  }
}

class Compiler {
  private readonly param: string;
  private readonly columns: ReadonlyMap<string, ExpressionColumn>;
  private readonly timezone: string;

  constructor(param: string, columns: ReadonlyMap<string, ExpressionColumn>, timezone: string) {
    this.param = param;
    this.columns = columns;
    this.timezone = timezone;
  }

  private fail(node: Node, token: string, message: string): FerryError {
    return refuse(this.param, node.pos, token, message);
  }

  private expect(node: Node, compiled: Compiled, wanted: ExpressionType, what: string): void {
    const ok = wanted === 'number' ? isNumeric(compiled.type) : compiled.type === wanted;
    if (!ok)
      throw this.fail(
        node,
        tokenOf(node),
        `${what} needs ${TYPE_WORDS[wanted]}, not ${TYPE_WORDS[compiled.type]}`,
      );
  }

  /** SQL of a number as numeric, so integer arithmetic neither truncates nor overflows. */
  private numeric(node: Node, what: string): string {
    const c = this.compile(node);
    this.expect(node, c, 'number', what);
    return `(${c.sql})::numeric`;
  }

  compile(node: Node): Compiled {
    switch (node.kind) {
      case 'number':
        return {
          sql: `${literal(node.text)}::numeric`,
          type: node.text.includes('.') ? 'number' : 'integer',
        };
      case 'string':
        return { sql: `${literal(node.value)}::text`, type: 'string', text: node.value };
      case 'boolean':
        return { sql: literal(node.value), type: 'boolean' };
      case 'column': {
        const column = this.columns.get(node.name);
        if (!column)
          throw this.fail(
            node,
            node.name,
            `unknown column "${node.name}" (columns: ${[...this.columns.keys()].join(', ')})`,
          );
        const type = columnType(column.type);
        if (!type)
          throw this.fail(
            node,
            node.name,
            `column "${node.name}" is ${column.type}; expressions read numbers, text, booleans, dates and timestamps`,
          );
        return { sql: type === 'string' ? `(${column.sql()})::text` : `(${column.sql()})`, type };
      }
      case 'unary':
        if (node.op === '-') {
          const c = this.compile(node.operand);
          this.expect(node.operand, c, 'number', '"-"');
          return { sql: `(- (${c.sql})::numeric)`, type: c.type };
        }
        return { sql: `(NOT ${this.boolean(node.operand, 'not')})`, type: 'boolean' };
      case 'binary':
        return this.binary(node);
      case 'call':
        return this.call(node);
    }
  }

  private boolean(node: Node, what: string): string {
    const c = this.compile(node);
    this.expect(node, c, 'boolean', what);
    return `(${c.sql})`;
  }

  private binary(node: Extract<Node, { kind: 'binary' }>): Compiled {
    const { op } = node;
    if (op === 'and' || op === 'or')
      return {
        sql: `(${this.boolean(node.left, op)} ${op.toUpperCase()} ${this.boolean(node.right, op)})`,
        type: 'boolean',
      };
    if (op === '+' || op === '-' || op === '*' || op === '/') {
      const left = this.compile(node.left);
      const right = this.compile(node.right);
      if (op === '+' && left.type === 'string' && right.type === 'string')
        throw this.fail(node, op, 'text is joined with concat(a, b), not +');
      this.expect(node.left, left, 'number', `"${op}"`);
      this.expect(node.right, right, 'number', `"${op}"`);
      const l = `(${left.sql})::numeric`;
      const r = `(${right.sql})::numeric`;
      // Division by zero is NULL rather than an error halfway through an export.
      if (op === '/') return { sql: `(${l} / NULLIF(${r}, 0))`, type: 'number' };
      const type = left.type === 'integer' && right.type === 'integer' ? 'integer' : 'number';
      return { sql: `(${l} ${op} ${r})`, type };
    }
    // A comparison.
    const sqlOp = op === '!=' ? '<>' : op;
    let left = this.compile(node.left);
    let right = this.compile(node.right);
    left = this.asTemporal(node.left, left, right.type);
    right = this.asTemporal(node.right, right, left.type);
    const comparable =
      (isNumeric(left.type) && isNumeric(right.type)) ||
      (left.type === right.type && (left.type !== 'boolean' || op === '=' || op === '!='));
    if (!comparable)
      throw this.fail(
        node,
        op,
        `cannot compare ${TYPE_WORDS[left.type]} with ${TYPE_WORDS[right.type]} using "${op}"`,
      );
    const cast = isNumeric(left.type) ? '::numeric' : '';
    return { sql: `((${left.sql})${cast} ${sqlOp} (${right.sql})${cast})`, type: 'boolean' };
  }

  /** A text constant compared with a date or timestamp is read as one (`'2024-05-01'`). */
  private asTemporal(node: Node, c: Compiled, other: ExpressionType): Compiled {
    if (c.text === undefined || (other !== 'date' && other !== 'timestamp')) return c;
    const text = c.text;
    if (
      DATE.test(text) &&
      !Number.isNaN(Date.parse(`${text}T00:00:00Z`)) &&
      new Date(`${text}T00:00:00Z`).toISOString().startsWith(text)
    ) {
      if (other === 'date') return { sql: `${literal(text)}::date`, type: 'date' };
      return {
        sql: `(${literal(text)}::date::timestamp AT TIME ZONE ${literal(this.timezone)})`,
        type: 'timestamp',
      };
    }
    if (other === 'timestamp' && DATETIME.test(text) && !Number.isNaN(Date.parse(text)))
      return { sql: `${literal(text)}::timestamptz`, type: 'timestamp' };
    throw this.fail(
      node,
      `'${text}'`,
      other === 'date'
        ? 'not a date (YYYY-MM-DD)'
        : 'not a date (YYYY-MM-DD) or an ISO 8601 timestamp with offset',
    );
  }

  private arity(node: Extract<Node, { kind: 'call' }>, min: number, max: number): void {
    const n = node.args.length;
    if (n < min || n > max) {
      const wanted =
        min === max ? `${min}` : max === Number.POSITIVE_INFINITY ? `at least ${min}` : `${min} to ${max}`;
      throw this.fail(
        node,
        node.name,
        `${node.name}() takes ${wanted} argument${wanted === '1' ? '' : 's'}, not ${n}`,
      );
    }
  }

  /** The common type of branches (if, coalesce): the same type, or numbers of either kind. */
  private unify(node: Node, parts: Compiled[]): ExpressionType {
    const first = parts[0]!.type;
    if (parts.every((p) => p.type === first)) return first;
    if (parts.every((p) => isNumeric(p.type))) return 'number';
    const other = parts.find((p) => p.type !== first)!;
    throw this.fail(node, tokenOf(node), `mixes ${TYPE_WORDS[first]} and ${TYPE_WORDS[other.type]}`);
  }

  private call(node: Extract<Node, { kind: 'call' }>): Compiled {
    const name = node.name;
    const args = node.args;
    switch (name) {
      case 'abs': {
        this.arity(node, 1, 1);
        const c = this.compile(args[0]!);
        this.expect(args[0]!, c, 'number', 'abs()');
        return { sql: `abs((${c.sql})::numeric)`, type: c.type };
      }
      case 'round': {
        this.arity(node, 1, 2);
        const value = this.numeric(args[0]!, 'round()');
        if (args.length === 1) return { sql: `round(${value})`, type: 'integer' };
        const digits = args[1]!;
        if (digits.kind !== 'number' || digits.text.includes('.') || Number(digits.text) > 10)
          throw this.fail(digits, tokenOf(digits), 'round(x, n) needs n as a whole number from 0 to 10');
        return { sql: `round(${value}, ${literal(Number(digits.text))})`, type: 'number' };
      }
      case 'coalesce': {
        this.arity(node, 2, 10);
        const parts = args.map((a) => this.compile(a));
        const type = this.unify(node, parts);
        const cast = isNumeric(type) ? '::numeric' : '';
        return { sql: `coalesce(${parts.map((p) => `(${p.sql})${cast}`).join(', ')})`, type };
      }
      case 'if': {
        this.arity(node, 3, 3);
        const condition = this.boolean(args[0]!, 'if()');
        const parts = [this.compile(args[1]!), this.compile(args[2]!)];
        const type = this.unify(node, parts);
        const cast = isNumeric(type) ? '::numeric' : '';
        return {
          sql: `(CASE WHEN ${condition} THEN (${parts[0]!.sql})${cast} ELSE (${parts[1]!.sql})${cast} END)`,
          type,
        };
      }
      case 'concat': {
        this.arity(node, 2, 10);
        const parts = args.map((a) => {
          const c = this.compile(a);
          if (c.type !== 'string' && !isNumeric(c.type))
            throw this.fail(a, tokenOf(a), `concat() joins text and numbers, not ${TYPE_WORDS[c.type]}`);
          return `(${c.sql})::text`;
        });
        return { sql: `concat(${parts.join(', ')})`, type: 'string' };
      }
      case 'lower':
      case 'upper':
      case 'length': {
        this.arity(node, 1, 1);
        const c = this.compile(args[0]!);
        this.expect(args[0]!, c, 'string', `${name}()`);
        if (name === 'length') return { sql: `char_length(${c.sql})`, type: 'integer' };
        return { sql: `${name}(${c.sql})`, type: 'string' };
      }
      case 'year':
      case 'month':
      case 'day':
      case 'hour':
      case 'weekday': {
        this.arity(node, 1, 1);
        const c = this.compile(args[0]!);
        if (c.type !== 'timestamp' && (c.type !== 'date' || name === 'hour'))
          throw this.fail(
            args[0]!,
            tokenOf(args[0]!),
            `${name}() needs ${name === 'hour' ? 'a timestamp' : 'a date or a timestamp'}, not ${TYPE_WORDS[c.type]}`,
          );
        // ISO weekday: 1 is Monday, 7 is Sunday. A timestamp's parts are those of the export's zone.
        const part = name === 'weekday' ? 'isodow' : name;
        const value =
          c.type === 'timestamp' ? `((${c.sql}) AT TIME ZONE ${literal(this.timezone)})` : `(${c.sql})`;
        return { sql: `(extract(${part} from ${value}))::integer`, type: 'integer' };
      }
      default:
        throw this.fail(
          node,
          name,
          `unknown function "${name}" (functions: ${EXPRESSION_FUNCTIONS.join(', ')})`,
        );
    }
  }
}

function tokenOf(node: Node): string {
  switch (node.kind) {
    case 'number':
      return node.text;
    case 'string':
      return `'${node.value}'`;
    case 'boolean':
      return String(node.value);
    case 'column':
      return node.name;
    case 'call':
      return node.name;
    case 'unary':
    case 'binary':
      return node.op;
  }
}

/**
 * Parses, type-checks and compiles one expression. `param` names it in errors (e.g.
 * `calculated[0].expression`); `columns` are the fields it may read; `timezone` is the zone
 * whose calendar `year()`…`hour()` and date constants use. Throws `invalid_expression`.
 */
export function compileExpression(
  source: string,
  param: string,
  columns: ReadonlyMap<string, ExpressionColumn>,
  timezone: string,
): { sql: string; type: ExpressionType } {
  if (source.length > MAX_EXPRESSION_LENGTH)
    throw refuse(
      param,
      MAX_EXPRESSION_LENGTH + 1,
      source.slice(MAX_EXPRESSION_LENGTH, MAX_EXPRESSION_LENGTH + 5),
      `longer than ${MAX_EXPRESSION_LENGTH} characters`,
    );
  if (!source.isWellFormed()) {
    let at = 0;
    for (; at < source.length; at++) {
      const c = source.charCodeAt(at);
      const next = source.charCodeAt(at + 1);
      if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) at++;
      else if (c >= 0xd800 && c <= 0xdfff) break;
    }
    throw refuse(param, at + 1, 'U+D800–U+DFFF', 'a lone surrogate is not a character');
  }
  const tree = new Parser(tokenize(source, param), param).parse();
  const compiled = new Compiler(param, columns, timezone).compile(tree);
  return { sql: compiled.sql, type: compiled.type };
}
