import { escapeHtml } from '../lib/escape-html.ts';

/**
 * Typed HTML templates: `html\`<p>${text}</p>\`` escapes every interpolated value unless it
 * is itself `Html` (a fragment built the same way). Pages are TypeScript functions, so
 * the compiler checks every value a page shows; nothing is compiled at run time.
 * Hand-written (thirty lines) because the template engines on npm either do not check
 * the data a template reads (Eta, EJS) or need a JSX build step (which Ferry does not have).
 */
export class Html {
  readonly value: string;
  constructor(value: string) {
    this.value = value;
  }
  toString(): string {
    return this.value;
  }
}

export type Fragment = Html | string | number | bigint | boolean | null | undefined | readonly Fragment[];

function render(part: Fragment): string {
  if (part === null || part === undefined || part === false) return '';
  if (part instanceof Html) return part.value;
  if (Array.isArray(part)) return part.map(render).join('');
  return escapeHtml(part);
}

export function html(strings: TemplateStringsArray, ...values: readonly Fragment[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]!) + strings[i + 1]!;
  return new Html(out);
}

/** Markup that is already safe: only for constants written in Ferry's own code. */
export function trusted(markup: string): Html {
  return new Html(markup);
}

/** Joins fragments (a list of rows, options). */
export function join(parts: readonly Fragment[]): Html {
  return new Html(parts.map(render).join(''));
}
