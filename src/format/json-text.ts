/**
 * Lays out JSON text as `JSON.stringify(value, null, indent)` would, without parsing it:
 * numbers (and every other token) keep their exact source text, so an integer beyond
 * 2^53 or a decimal with more digits than a double holds comes out as the database
 * wrote it. The input must be valid JSON (PostgreSQL's json/jsonb output is).
 */
export function indentJsonText(text: string, indent = '  '): string {
  let out = '';
  let depth = 0;
  const n = text.length;
  const newlines: string[] = [];
  const newline = () => (newlines[depth] ??= `\n${indent.repeat(depth)}`);
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // The closing quote is the next one not escaped: preceded by an even run of backslashes.
      let j = text.indexOf('"', i + 1);
      while (j !== -1 && escaped(text, j)) j = text.indexOf('"', j + 1);
      if (j === -1) j = n - 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const close = c === OPEN_BRACE ? CLOSE_BRACE : CLOSE_BRACKET;
      let j = i + 1;
      while (j < n && isSpace(text.charCodeAt(j))) j++;
      if (text.charCodeAt(j) === close) {
        out += text[i]! + text[j]!;
        i = j + 1;
      } else {
        depth++;
        out += text[i]! + newline();
        i++;
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
      out += newline() + text[i]!;
      i++;
    } else if (c === COMMA) {
      out += `,${newline()}`;
      i++;
    } else if (c === COLON) {
      out += ': ';
      i++;
    } else if (isSpace(c)) {
      i++;
    } else {
      // A number, true, false or null: up to the next delimiter, verbatim.
      let j = i + 1;
      while (j < n && !isDelimiter(text.charCodeAt(j))) j++;
      out += text.slice(i, j);
      i = j;
    }
  }
  return out;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

/** Whether the quote at `at` is escaped: an odd number of backslashes right before it. */
function escaped(text: string, at: number): boolean {
  let k = at - 1;
  while (text.charCodeAt(k) === BACKSLASH) k--;
  return (at - 1 - k) % 2 === 1;
}

function isDelimiter(c: number): boolean {
  return c === COMMA || c === COLON || c === CLOSE_BRACKET || c === CLOSE_BRACE || isSpace(c);
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
}
