import { Transform, type TransformCallback } from 'node:stream';
import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import type { DataMap, DatasetDeclaration } from '../datamap/types.ts';
import { type EntitySetModel, entitySets } from './model.ts';

/**
 * The data map as the OData feed serves it: every `json` field becomes its JSON text (an
 * `Edm.String`), since a BI tool types each column and a JSON document has no one type.
 * Everything else (SQL, filters, anonymization, scopes) is the reference map's.
 */
function feedMap(map: DataMap): DataMap {
  const datasets: Record<string, DatasetDeclaration> = {};
  for (const [name, dataset] of Object.entries(map.datasets)) {
    datasets[name] = {
      ...dataset,
      fields: dataset.fields.map((f) =>
        f.type === 'json' && dataset.kind === 'table' ? { ...f, type: 'string', sql: `(${f.sql})::text` } : f,
      ),
    };
  }
  return { ...map, datasets };
}

export const FEED_DATAMAP: DataMap = feedMap(REFERENCE_DATAMAP);

/** The feed's entity sets, by name. */
export const FEED_SETS: ReadonlyMap<string, EntitySetModel> = new Map(
  entitySets(FEED_DATAMAP).map((s) => [s.name, s]),
);

/** The feed's root in links clients follow: FERRY_PUBLIC_URL, else the request's own scheme and host. */
export function serviceRoot(
  request: { protocol: string; host: string },
  publicUrl: string | undefined,
): string {
  return `${(publicUrl ?? `${request.protocol}://${request.host}`).replace(/\/+$/, '')}/odata/v4`;
}

const NEWLINE = 0x0a;
const COMMA = 0x2c;

/**
 * Turns the engine's NDJSON rows into the members of a JSON array, between a prefix and a
 * suffix: each line break between two rows becomes a comma. JSON text never holds a raw
 * line break (strings escape it), so every 0x0A byte ends a row.
 */
export class RowsToArray extends Transform {
  private started = false;
  /** A row ended at the end of the previous chunk: a comma goes before the next byte. */
  private rowEnded = false;

  private readonly prefix: string;
  private readonly suffix: () => string;

  constructor(prefix: string, suffix: () => string) {
    super();
    this.prefix = prefix;
    this.suffix = suffix;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length === 0) {
      callback();
      return;
    }
    if (!this.started) {
      this.started = true;
      this.push(this.prefix);
    }
    if (this.rowEnded) {
      this.push(Buffer.of(COMMA));
      this.rowEnded = false;
    }
    let body = chunk;
    if (body[body.length - 1] === NEWLINE) {
      body = body.subarray(0, body.length - 1);
      this.rowEnded = true;
    }
    if (body.includes(NEWLINE)) {
      body = Buffer.from(body);
      for (let at = body.indexOf(NEWLINE); at !== -1; at = body.indexOf(NEWLINE, at + 1)) body[at] = COMMA;
    }
    if (body.length) this.push(body);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.started) this.push(this.prefix);
    this.push(this.suffix());
    callback();
  }
}
