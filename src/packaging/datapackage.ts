import { invalid } from '../domain/ferry-error.ts';
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
 * with the path of their JSON Schema.
 */
export function buildDataPackage(input: DataPackageInput): DataPackageDescriptor {
  if (!NAME.test(input.name)) throw invalid('name', `"${input.name}" must match ${NAME.source}`);
  if (input.resources.length === 0) throw invalid('resources', 'a data package needs at least one resource');
  const created = input.created instanceof Date ? input.created : new Date(input.created);
  if (Number.isNaN(created.getTime())) throw invalid('created', 'must be a valid date-time');
  const names = new Set<string>();
  const resources = input.resources.map((resource, index) => {
    if (names.has(resource.name))
      throw invalid(`resources[${index}].name`, `"${resource.name}" is used twice`);
    names.add(resource.name);
    return buildResource(resource, `resources[${index}]`);
  });
  return {
    $schema: DATA_PACKAGE_PROFILE,
    name: input.name,
    title: input.title,
    ...(input.description ? { description: input.description } : {}),
    ...(input.version ? { version: input.version } : {}),
    created: created.toISOString(),
    ...(input.keywords?.length ? { keywords: [...input.keywords] } : {}),
    resources,
  };
}

/** Resources joined into one string at a time by `dataPackageText`. */
const TEXT_RESOURCES = 1000;

/**
 * `datapackage.json` as text, in pieces: exactly `JSON.stringify(descriptor, null, 2)` and a
 * newline, without ever building it as one string. A package with a file per conversation
 * lists millions of resources, past the longest string V8 can hold.
 */
export function* dataPackageText(descriptor: DataPackageDescriptor): Generator<string> {
  const { resources, ...head } = descriptor;
  if (resources.length === 0) {
    yield `${JSON.stringify(descriptor, null, 2)}\n`;
    return;
  }
  // `resources` is the descriptor's last key; the head's closing brace gives way to it.
  yield `${JSON.stringify(head, null, 2).slice(0, -2)},\n  "resources": [\n`;
  for (let i = 0; i < resources.length; i += TEXT_RESOURCES) {
    const text = resources
      .slice(i, i + TEXT_RESOURCES)
      .map((r) => `    ${JSON.stringify(r, null, 2).replaceAll('\n', '\n    ')}`)
      .join(',\n');
    yield i + TEXT_RESOURCES < resources.length ? `${text},\n` : text;
  }
  yield '\n  ]\n}\n';
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
