import { createReadStream } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { invalid } from '../domain/ferry-error.ts';
import { FingerprintTable, fingerprint } from './fingerprints.ts';
import { checkEntryPath } from './entry-path.ts';
import { type PackageField, tableSchemaField } from './fields.ts';

/** The Data Package v2 profile every descriptor names (vendored under standards/datapackage-v2/). */
export const DATA_PACKAGE_PROFILE = 'https://datapackage.org/profiles/2.0/datapackage.json';

/** Names of packages and resources: lower case, url-usable (the v2 spec's recommendation). */
const NAME = /^[a-z0-9._-]+$/;
const SHA256_HEX = /^(?:sha256:)?([0-9a-f]{64})$/i;

export interface DataResourceInput {
  /** Path(s) relative to the package root; several paths form one resource (e.g. partitions). */
  readonly path: string | readonly string[];
  readonly name: string;
  readonly title?: string;
  readonly description?: string;
  /** `csv`, `json`, `ndjson`, `xml`, `parquet`, `html`, ... */
  readonly format: string;
  readonly mediatype: string;
  readonly encoding?: string;
  /** Columns of a tabular resource; without them the resource is described as a plain file. */
  readonly fields?: readonly PackageField[];
  readonly primaryKey?: readonly string[];
  /** Table Dialect of a tabular resource, e.g. `{ property: 'data' }` for rows inside a JSON document. */
  readonly dialect?: Readonly<Record<string, unknown>>;
  /**
   * Path of the JSON Schema file (inside the package) that a JSON or NDJSON file follows, as
   * the Data Package JSON Data Resource recipe's `jsonSchema`.
   */
  readonly jsonSchema?: string;
  readonly bytes?: number;
  /** SHA-256 as hex (with or without a `sha256:` prefix). */
  readonly hash?: string;
}

export interface DataPackageInput {
  readonly name: string;
  readonly title: string;
  readonly description?: string;
  readonly created: Date | string;
  readonly version?: string;
  readonly keywords?: readonly string[];
  readonly resources: readonly DataResourceInput[];
}

export interface DataResource {
  name: string;
  path: string | string[];
  type?: 'table';
  title?: string;
  description?: string;
  format: string;
  mediatype: string;
  encoding: string;
  bytes?: number;
  hash?: string;
  jsonSchema?: string;
  dialect?: Record<string, unknown>;
  schema?: { fields: Record<string, unknown>[]; primaryKey?: string[] };
}

export interface DataPackageDescriptor {
  $schema: typeof DATA_PACKAGE_PROFILE;
  name: string;
  title: string;
  description?: string;
  version?: string;
  created: string;
  keywords?: string[];
  resources: DataResource[];
}

/**
 * A Frictionless Data Package v2 descriptor (`datapackage.json`) for an export: one resource per
 * data file, tabular ones with a Table Schema derived from the data map's field types, JSON ones
 * with the path of their JSON Schema. The descriptor whole, in memory: packages write theirs
 * through `DataPackageSpool`, whose text is this descriptor's (the tests hold them equal).
 */
export function buildDataPackage(input: DataPackageInput): DataPackageDescriptor {
  const head = packageHead(input);
  if (input.resources.length === 0) throw invalid('resources', 'a data package needs at least one resource');
  const names = new Set<string>();
  const resources = input.resources.map((resource, index) => {
    if (names.has(resource.name))
      throw invalid(`resources[${index}].name`, `"${resource.name}" is used twice`);
    names.add(resource.name);
    return buildResource(resource, `resources[${index}]`);
  });
  return { ...head, resources };
}

/** The descriptor without its resources, checked; `resources` is its last key. */
function packageHead(input: Omit<DataPackageInput, 'resources'>): Omit<DataPackageDescriptor, 'resources'> {
  if (!NAME.test(input.name)) throw invalid('name', `"${input.name}" must match ${NAME.source}`);
  const created = input.created instanceof Date ? input.created : new Date(input.created);
  if (Number.isNaN(created.getTime())) throw invalid('created', 'must be a valid date-time');
  return {
    $schema: DATA_PACKAGE_PROFILE,
    name: input.name,
    title: input.title,
    ...(input.description ? { description: input.description } : {}),
    ...(input.version ? { version: input.version } : {}),
    created: created.toISOString(),
    ...(input.keywords?.length ? { keywords: [...input.keywords] } : {}),
  };
}

/** The first lines of `datapackage.json`, up to its resources. */
function headText(head: Omit<DataPackageDescriptor, 'resources'>): string {
  // `resources` is the descriptor's last key; the head's closing brace gives way to it.
  return `${JSON.stringify(head, null, 2).slice(0, -2)},\n  "resources": [\n`;
}

/** One resource as it sits in `datapackage.json`'s list. */
function resourceText(resource: DataResource): string {
  return `    ${JSON.stringify(resource, null, 2).replaceAll('\n', '\n    ')}`;
}

const RESOURCES_TAIL = '\n  ]\n}\n';

/** Resource text gathered before it is appended to the spool file. */
const SPOOL_CHUNK = 256 * 1024;

/**
 * `datapackage.json` for a package whose resources are too many to hold (a company package
 * describes a file per conversation): each resource is checked and turned into its text as it
 * comes, and the text goes to a file in a temporary folder. Names stay unique without a list of
 * them in memory: a fingerprint table says which names are new, and only a name whose
 * fingerprint was seen is looked up in the file. The result is byte for byte what
 * `JSON.stringify(buildDataPackage(…), null, 2)` and a newline give for the same resources.
 */
export class DataPackageSpool {
  readonly #file: string;
  readonly #names = new FingerprintTable();
  #buffer: string[] = [];
  #bufferBytes = 0;
  #flushed: Promise<void> = Promise.resolve();
  #count = 0;

  /** `file` is created (or replaced) on the first flush; the caller removes it. */
  constructor(file: string) {
    this.#file = file;
  }

  /** Resources added. */
  get count(): number {
    return this.#count;
  }

  /** A name made from `base` that no resource has yet: `base`, else `base-2`, `base-3`, … */
  async freeName(base: string): Promise<string> {
    let name = base;
    for (let n = 2; await this.#taken(name); n++) name = `${base}-${n}`;
    return name;
  }

  /** Checks a resource and appends it; a name already used is refused. */
  async add(input: DataResourceInput): Promise<void> {
    const index = this.#count;
    const resource = buildResource(input, `resources[${index}]`);
    if (await this.#taken(resource.name))
      throw invalid(`resources[${index}].name`, `"${resource.name}" is used twice`);
    this.#names.add(fingerprint(resource.name));
    const text = `${index ? ',\n' : ''}${resourceText(resource)}`;
    this.#count++;
    this.#buffer.push(text);
    this.#bufferBytes += text.length;
    if (this.#bufferBytes >= SPOOL_CHUNK) await this.#flush();
  }

  /** `datapackage.json`, streamed from the spool; needs at least one resource. */
  async *text(input: Omit<DataPackageInput, 'resources'>): AsyncGenerator<string | Buffer> {
    const head = packageHead(input);
    if (this.#count === 0) throw invalid('resources', 'a data package needs at least one resource');
    await this.#flush();
    yield headText(head);
    yield* createReadStream(this.#file, { highWaterMark: SPOOL_CHUNK }) as AsyncIterable<Buffer>;
    yield RESOURCES_TAIL;
  }

  async #taken(name: string): Promise<boolean> {
    if (!this.#names.has(fingerprint(name))) return false;
    // Seen before, or a fingerprint shared by chance: the names in the file settle it.
    await this.#flush();
    const line = `      "name": ${JSON.stringify(name)},`;
    const lines = createInterface({ input: createReadStream(this.#file), crlfDelay: Infinity });
    for await (const l of lines) if (l === line) return true;
    return false;
  }

  #flush(): Promise<void> {
    if (this.#buffer.length) {
      const text = this.#buffer.join('');
      this.#buffer = [];
      this.#bufferBytes = 0;
      this.#flushed = this.#flushed.then(() => appendFile(this.#file, text));
    }
    return this.#flushed;
  }
}

function buildResource(input: DataResourceInput, param: string): DataResource {
  if (!NAME.test(input.name)) throw invalid(`${param}.name`, `"${input.name}" must match ${NAME.source}`);
  const paths = typeof input.path === 'string' ? [input.path] : [...input.path];
  if (paths.length === 0) throw invalid(`${param}.path`, 'needs at least one path');
  for (const path of paths) checkEntryPath(path, `${param}.path`);
  if (!/^[^/]+\/[^/]+$/.test(input.mediatype)) {
    throw invalid(`${param}.mediatype`, `"${input.mediatype}" is not a media type like text/csv`);
  }
  if (input.bytes !== undefined && !(Number.isSafeInteger(input.bytes) && input.bytes >= 0)) {
    throw invalid(`${param}.bytes`, 'must be a non-negative integer');
  }
  if (input.jsonSchema !== undefined) checkEntryPath(input.jsonSchema, `${param}.jsonSchema`);
  let hash: string | undefined;
  if (input.hash !== undefined) {
    const match = SHA256_HEX.exec(input.hash);
    if (!match) throw invalid(`${param}.hash`, 'must be a SHA-256 hex digest');
    hash = `sha256:${match[1]!.toLowerCase()}`;
  }
  return {
    name: input.name,
    path: typeof input.path === 'string' ? input.path : paths,
    ...(input.fields ? { type: 'table' as const } : {}),
    ...(input.title ? { title: input.title } : {}),
    ...(input.description ? { description: input.description } : {}),
    format: input.format,
    mediatype: input.mediatype,
    encoding: input.encoding ?? 'utf-8',
    ...(input.bytes !== undefined ? { bytes: input.bytes } : {}),
    ...(hash ? { hash } : {}),
    ...(input.jsonSchema ? { jsonSchema: input.jsonSchema } : {}),
    ...(input.fields && input.dialect ? { dialect: { ...input.dialect } } : {}),
    ...(input.fields ? { schema: tableSchema(input, param) } : {}),
  };
}

function tableSchema(input: DataResourceInput, param: string): NonNullable<DataResource['schema']> {
  const fields = input.fields!;
  if (fields.length === 0) throw invalid(`${param}.fields`, 'a table needs at least one field');
  const fieldNames = new Set(fields.map((f) => f.name));
  if (fieldNames.size !== fields.length) throw invalid(`${param}.fields`, 'field names must be unique');
  for (const key of input.primaryKey ?? []) {
    if (!fieldNames.has(key))
      throw invalid(`${param}.primaryKey`, `"${key}" is not a field`, [...fieldNames]);
  }
  return {
    fields: fields.map(tableSchemaField),
    ...(input.primaryKey?.length ? { primaryKey: [...input.primaryKey] } : {}),
  };
}
