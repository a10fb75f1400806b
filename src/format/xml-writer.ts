import type { FieldType } from '../datamap/types.ts';
import { lineTransform } from './line-splitter.ts';
import type { FieldSpec, FormatWriter, WriterContext } from './types.ts';
import {
  badValue,
  formatTimestampMicros,
  isInfinite,
  parseDateDays,
  parseRow,
  parseTimestampMicros,
  toDouble,
  toInt64,
} from './values.ts';
import { escapeAttribute, escapeText } from './xml-escape.ts';
import {
  assertElementName,
  isArrayType,
  metadataElementName,
  XML_NAMESPACE,
  XSI_NAMESPACE,
  xsdFileName,
} from './xml-schema.ts';

export { xsdFor } from './xml-schema.ts';

/**
 * XML: UTF-8, default namespace `https://ferry.dev/schema/export/1.0`, valid against
 * `xsdFor(ctx)`. Written row by row with hand escaping (no DOM, nothing collected):
 *
 * ```xml
 * <export xmlns="https://ferry.dev/schema/export/1.0" dataset="messages" ...>
 *   <metadata><export_id>...</export_id>...</metadata>
 *   <records>
 *     <record><message_id>...</message_id>...</record>
 *   </records>
 * </export>
 * ```
 *
 * A null is an omitted element; arrays are `<item>` children (a null item is
 * `xsi:nil`); nested rows (a field with `members`) are `<item>` children holding their
 * fields' elements; other json fields hold their JSON text; booleans are `true`/`false`;
 * timestamps keep the database's ISO 8601 text (with the export's UTC offset), which
 * is an xs:dateTime; any other timestamp form is rewritten as UTC (`Z`). Characters XML 1.0 cannot carry (control
 * characters other than tab/LF/CR, U+FFFE/U+FFFF, lone surrogates) are removed.
 */
export const xml: FormatWriter = {
  format: 'xml',
  extension: 'xml',
  contentType: 'application/xml; charset=utf-8',
  input: 'ndjson',
  create(ctx: WriterContext) {
    const renderers = ctx.fields.map(fieldRenderer);
    let started = false;
    const head = () => {
      started = true;
      return xmlHead(ctx);
    };
    return lineTransform({
      lines(lines) {
        let out = started ? '' : head();
        for (const line of lines) {
          const row = parseRow(line);
          out += '    <record>\n';
          for (const render of renderers) out += render(row);
          out += '    </record>\n';
        }
        return out;
      },
      end() {
        return `${started ? '' : head()}  </records>\n</export>\n`;
      },
    });
  },
};

function xmlHead(ctx: WriterContext): string {
  let out =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<export xmlns="${XML_NAMESPACE}" xmlns:xsi="${XSI_NAMESPACE}" ` +
    `xsi:schemaLocation="${XML_NAMESPACE} ${escapeAttribute(xsdFileName(ctx.dataset))}" ` +
    `dataset="${escapeAttribute(ctx.dataset)}">\n  <metadata>\n`;
  for (const [key, value] of Object.entries(ctx.metadata)) {
    if (value === null || value === undefined) continue;
    const name = metadataElementName(key);
    const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
    out += `    <${name}>${escapeText(text)}</${name}>\n`;
  }
  return `${out}  </metadata>\n  <records>\n`;
}

type Renderer = (row: Record<string, unknown>) => string;

/**
 * Renders one field of a row as its element (or nothing, for a null), at `depth` (the
 * fields of a record are at 3: six spaces).
 */
function fieldRenderer(field: FieldSpec, depth = 3): Renderer {
  const name = assertElementName(field.name);
  const pad = '  '.repeat(depth);
  const open = `${pad}<${name}>`;
  const close = `</${name}>\n`;
  if (field.members) {
    // An array of objects (nested rows): one <item> per object, its members as elements.
    const members = field.members.map((member) => fieldRenderer(member, depth + 2));
    return (row) => {
      const value = row[name];
      if (value === null || value === undefined) return '';
      if (!Array.isArray(value)) throw badValue(name, 'array of objects', value);
      if (value.length === 0) return `${pad}<${name}/>\n`;
      let out = `${open}\n`;
      for (const element of value) {
        if (typeof element !== 'object' || element === null || Array.isArray(element))
          throw badValue(name, 'array of objects', value);
        out += `${pad}  <item>\n`;
        for (const render of members) out += render(element as Record<string, unknown>);
        out += `${pad}  </item>\n`;
      }
      return `${out}${pad}${close}`;
    };
  }
  if (isArrayType(field.type)) {
    const item = scalarText(
      field,
      field.type === 'number[]' ? 'number' : field.type === 'uuid[]' ? 'uuid' : 'string',
    );
    return (row) => {
      const value = row[name];
      if (value === null || value === undefined) return '';
      if (!Array.isArray(value)) throw badValue(name, field.type, value);
      if (value.length === 0) return `${pad}<${name}/>\n`;
      let out = `${open}\n`;
      for (const element of value) {
        const text = element === null ? undefined : item(element);
        out += text === undefined ? `${pad}  <item xsi:nil="true"/>\n` : `${pad}  <item>${text}</item>\n`;
      }
      return `${out}${pad}${close}`;
    };
  }
  const text = scalarText(field, field.type);
  return (row) => {
    const value = row[name];
    if (value === null || value === undefined) return '';
    const rendered = text(value);
    return rendered === undefined ? '' : open + rendered + close;
  };
}

/** Escaped element text of a non-null value; undefined means "write as null". */
function scalarText(field: FieldSpec, type: FieldType): (value: unknown) => string | undefined {
  const name = field.name;
  switch (type) {
    case 'uuid':
    case 'string':
      return (v) => escapeText(typeof v === 'string' ? v : JSON.stringify(v));
    case 'integer':
      return (v) => {
        const n = toInt64(v);
        if (n === undefined) throw badValue(name, 'integer', v);
        return String(n);
      };
    case 'number':
      return (v) => {
        const n = toDouble(v);
        if (n === undefined) throw badValue(name, 'number', v);
        return xsDouble(n);
      };
    case 'boolean':
      return (v) => {
        if (typeof v !== 'boolean') throw badValue(name, 'boolean', v);
        return v ? 'true' : 'false';
      };
    case 'timestamp':
      return (v) => {
        if (typeof v === 'string' && isInfinite(v)) return undefined;
        const micros = typeof v === 'string' ? parseTimestampMicros(v) : undefined;
        if (micros === undefined) throw badValue(name, 'timestamp', v);
        // Keep the database's text (its offset is the export's time zone) when it already is an
        // xs:dateTime; otherwise write the same instant in canonical UTC form.
        return XS_DATE_TIME.test(v as string) ? (v as string) : formatTimestampMicros(micros);
      };
    case 'date':
      return (v) => {
        if (typeof v === 'string' && isInfinite(v)) return undefined;
        if (typeof v !== 'string' || parseDateDays(v) === undefined) throw badValue(name, 'date', v);
        return v.slice(0, 10);
      };
    case 'json':
      return (v) => escapeText(JSON.stringify(v));
    default:
      throw new Error(`no XML rendering for field type ${type}`);
  }
}

const XS_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;

/** The xs:double lexical form of a number. */
function xsDouble(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Number.POSITIVE_INFINITY) return 'INF';
  if (n === Number.NEGATIVE_INFINITY) return '-INF';
  return String(n);
}
