import type { DataMap, DatasetField, FieldType, TableDataset } from '../datamap/types.ts';
import { escapeAttribute } from '../format/xml-escape.ts';

/**
 * The OData v4 model of the data map: one entity set per table dataset, one property per
 * field, and the CSDL XML (`$metadata`) that Excel, Power BI and every OData client read.
 * The feed streams the same SQL as every other export, so types here are what the engine's
 * JSON rendering yields for each field type.
 */

export const NAMESPACE = 'Ferry';
export const CONTAINER = 'Ferry';

/** Edm type of a field's JSON value in the feed. */
const EDM: Record<FieldType, string> = {
  // Text, not Edm.Guid: anonymization replaces ids with pseudonyms that are not GUIDs.
  uuid: 'Edm.String',
  string: 'Edm.String',
  integer: 'Edm.Int64',
  number: 'Edm.Double',
  boolean: 'Edm.Boolean',
  timestamp: 'Edm.DateTimeOffset',
  date: 'Edm.Date',
  // The JSON text as a string: BI tools type every column, and a JSON document has no one type.
  json: 'Edm.String',
  'string[]': 'Collection(Edm.String)',
  'uuid[]': 'Collection(Edm.String)',
  'number[]': 'Collection(Edm.Double)',
};

export interface EntityProperty {
  readonly name: string;
  readonly edmType: string;
  readonly field: DatasetField;
}

export interface EntitySetModel {
  readonly name: string;
  readonly dataset: TableDataset;
  readonly properties: readonly EntityProperty[];
  /** Properties that identify an entity (non-nullable in the model). */
  readonly key: readonly string[];
  /** Properties of the dataset's ordering key, in order: the only `$orderby` the feed accepts. */
  readonly orderKey: readonly string[];
}

/** The field whose SQL is exactly this key expression. */
function keyField(dataset: TableDataset, expression: string): DatasetField | undefined {
  return dataset.fields.find((f) => f.sql === expression);
}

/**
 * The entity set of a dataset, or null when the dataset is not a table or a key expression
 * has no field of its own (the feed pages by key, so it must show it).
 */
export function entitySet(dataset: DataMap['datasets'][string]): EntitySetModel | null {
  if (dataset.kind !== 'table') return null;
  const ordered = dataset.key.map((k) => keyField(dataset, k));
  if (ordered.some((f) => !f)) return null;
  const orderKey = (ordered as DatasetField[]).map((f) => f.name);
  // The time column leads the ordering key; the row's identity is the rest.
  const identity = dataset.key.filter((k) => k !== dataset.timeColumn);
  const key = identity.length ? identity.map((k) => keyField(dataset, k)!.name) : orderKey;
  return {
    name: dataset.name,
    dataset,
    properties: dataset.fields.map((field) => ({ name: field.name, edmType: EDM[field.type], field })),
    key,
    orderKey,
  };
}

/** Every entity set of the data map, in its dataset order. */
export function entitySets(datamap: DataMap): EntitySetModel[] {
  return Object.values(datamap.datasets).flatMap((d) => entitySet(d) ?? []);
}

const attr = escapeAttribute;

function propertyXml(p: EntityProperty, key: readonly string[]): string {
  const facets = p.edmType === 'Edm.DateTimeOffset' ? ' Precision="6"' : '';
  const nullable = key.includes(p.name) ? ' Nullable="false"' : '';
  return (
    `<Property Name="${attr(p.name)}" Type="${p.edmType}"${nullable}${facets}>` +
    `<Annotation Term="Core.Description" String="${attr(p.field.description)}"/></Property>`
  );
}

/** The CSDL XML document of the model (`GET /odata/v4/$metadata`). */
export function metadataXml(sets: readonly EntitySetModel[]): string {
  const types = sets.map(
    (s) =>
      `<EntityType Name="${attr(s.name)}">` +
      `<Key>${s.key.map((k) => `<PropertyRef Name="${attr(k)}"/>`).join('')}</Key>` +
      s.properties.map((p) => propertyXml(p, s.key)).join('') +
      `<Annotation Term="Core.Description" String="${attr(s.dataset.description)}"/>` +
      '</EntityType>',
  );
  const container =
    `<EntityContainer Name="${CONTAINER}">` +
    sets
      .map((s) => `<EntitySet Name="${attr(s.name)}" EntityType="${NAMESPACE}.${attr(s.name)}"/>`)
      .join('') +
    '</EntityContainer>';
  return (
    '<?xml version="1.0" encoding="utf-8"?>\n' +
    '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">' +
    '<edmx:Reference Uri="https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.xml">' +
    '<edmx:Include Namespace="Org.OData.Core.V1" Alias="Core"/></edmx:Reference>' +
    '<edmx:DataServices>' +
    `<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="${NAMESPACE}">` +
    types.join('') +
    container +
    '</Schema></edmx:DataServices></edmx:Edmx>\n'
  );
}
