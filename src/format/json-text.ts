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
  const newline = () => `\n${indent.repeat(depth)}`;
  let i = 0;
  while (i < n) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      let j = i + 1;
      while (j < n && isSpace(text[j]!)) j++;
      if (text[j] === close) {
        out += c + close;
        i = j + 1;
      } else {
        depth++;
        out += c + newline();
        i++;
      }
    } else if (c === '}' || c === ']') {
      depth--;
      out += newline() + c;
      i++;
    } else if (c === ',') {
      out += `,${newline()}`;
      i++;
    } else if (c === ':') {
      out += ': ';
      i++;
    } else if (isSpace(c)) {
      i++;
    } else {
      // A number, true, false or null: up to the next delimiter, verbatim.
      let j = i + 1;
      while (j < n && !DELIMITERS.includes(text[j]!)) j++;
      out += text.slice(i, j);
      i = j;
    }
  }
  return out;
}

const DELIMITERS = ',:]} \t\n\r';

function isSpace(c: string): boolean {
  return c === ' ' || c === '\n' || c === '\t' || c === '\r';
}
