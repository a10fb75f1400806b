import type { FieldType } from '../datamap/types.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { FieldSpec, WriterContext } from './types.ts';
import { escapeAttribute, escapeText } from './xml-escape.ts';

/** Default namespace of every Ferry XML export and of its XSD's target namespace. */
export const XML_NAMESPACE = 'https://ferry.dev/schema/export/1.0';
export const XSI_NAMESPACE = 'http://www.w3.org/2001/XMLSchema-instance';

/** The file name an export's XSD is expected under, next to the XML (see `xsi:schemaLocation`). */
export function xsdFileName(dataset: string): string {
  return `${dataset}.xsd`;
}

const UUID_PATTERN = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';

/** XSD type of a scalar field type, or of the items of an array type. */
const XSD_TYPES: Record<FieldType, string> = {
  uuid: 'uuid',
  string: 'xs:string',
  integer: 'xs:long',
  number: 'xs:double',
  boolean: 'xs:boolean',
  timestamp: 'xs:dateTime',
  date: 'xs:date',
  json: 'xs:string',
  'string[]': 'xs:string',
  'uuid[]': 'uuid',
  'number[]': 'xs:double',
};

export function isArrayType(type: FieldType): type is 'string[]' | 'uuid[]' | 'number[]' {
  return type.endsWith('[]');
}

// ASCII subset of XML NCName; data-map field names are snake_case, so this is enough.
const NC_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** Checks that a field name can be an XML element name (it becomes one, unchanged). */
export function assertElementName(name: string): string {
  if (!NC_NAME.test(name) || /^xml/i.test(name)) {
    throw new FerryError('format_error', `field ${name}: not usable as an XML element name`, { field: name });
  }
  return name;
}

/** A metadata key as an element name: characters an element name cannot have become `_`. */
export function metadataElementName(key: string): string {
  let name = key.replace(/[^A-Za-z0-9_.-]/g, '_');
  if (!/^[A-Za-z_]/.test(name) || /^xml/i.test(name)) name = `_${name}`;
  return name;
}

/**
 * The XML Schema (XSD 1.0) of a dataset's XML export. Every field is optional
 * (`minOccurs="0"`: a null is an omitted element); array fields hold `<item>`
 * children, and a null inside an array is `<item xsi:nil="true"/>`.
 */
export function xsdFor(ctx: Pick<WriterContext, 'dataset' | 'fields'>): string {
  const fields = ctx.fields.map(fieldElement).join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="${XML_NAMESPACE}" targetNamespace="${XML_NAMESPACE}" elementFormDefault="qualified" attributeFormDefault="unqualified">
  <xs:annotation>
    <xs:documentation>Ferry export of the dataset ${escapeAttribute(ctx.dataset)}.</xs:documentation>
  </xs:annotation>
  <xs:simpleType name="uuid">
    <xs:restriction base="xs:string">
      <xs:pattern value="${UUID_PATTERN}"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:element name="export">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="metadata">
          <xs:annotation>
            <xs:documentation>Export metadata, one element per key; structured values as JSON text.</xs:documentation>
          </xs:annotation>
          <xs:complexType>
            <xs:sequence>
              <xs:any namespace="##targetNamespace" processContents="skip" minOccurs="0" maxOccurs="unbounded"/>
            </xs:sequence>
          </xs:complexType>
        </xs:element>
        <xs:element name="records">
          <xs:complexType>
            <xs:sequence>
              <xs:element name="record" minOccurs="0" maxOccurs="unbounded">
                <xs:complexType>
                  <xs:sequence>
${fields}
                  </xs:sequence>
                </xs:complexType>
              </xs:element>
            </xs:sequence>
          </xs:complexType>
        </xs:element>
      </xs:sequence>
      <xs:attribute name="dataset" type="xs:string" use="required" fixed="${escapeAttribute(ctx.dataset)}"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
`;
}

function fieldElement(field: FieldSpec, indent = 20): string {
  const pad = ' '.repeat(indent);
  const name = assertElementName(field.name);
  const doc = field.description
    ? `\n${pad}  <xs:annotation><xs:documentation>${escapeText(field.description)}</xs:documentation></xs:annotation>`
    : '';
  if (field.members) {
    // Nested rows: `<item>` elements, each holding the members' elements.
    const members = field.members.map((member) => fieldElement(member, indent + 12)).join('\n');
    return `${pad}<xs:element name="${name}" minOccurs="0">${doc}
${pad}  <xs:complexType>
${pad}    <xs:sequence>
${pad}      <xs:element name="item" minOccurs="0" maxOccurs="unbounded">
${pad}        <xs:complexType>
${pad}          <xs:sequence>
${members}
${pad}          </xs:sequence>
${pad}        </xs:complexType>
${pad}      </xs:element>
${pad}    </xs:sequence>
${pad}  </xs:complexType>
${pad}</xs:element>`;
  }
  const type = XSD_TYPES[field.type];
  if (!isArrayType(field.type)) {
    return doc
      ? `${pad}<xs:element name="${name}" type="${type}" minOccurs="0">${doc}\n${pad}</xs:element>`
      : `${pad}<xs:element name="${name}" type="${type}" minOccurs="0"/>`;
  }
  return `${pad}<xs:element name="${name}" minOccurs="0">${doc}
${pad}  <xs:complexType>
${pad}    <xs:sequence>
${pad}      <xs:element name="item" type="${type}" minOccurs="0" maxOccurs="unbounded" nillable="true"/>
${pad}    </xs:sequence>
${pad}  </xs:complexType>
${pad}</xs:element>`;
}
