import { Type } from 'typebox';
import { parseExportRequest } from '../../collect/request.ts';
import { REFERENCE_DATAMAP } from '../../datamap/datamap.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { datasetXsd } from '../../pipeline/dataset-xsd.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

/** Datasets whose XML export has an XML Schema. */
function xsdDatasets(): string[] {
  return Object.values(REFERENCE_DATAMAP.datasets)
    .filter((d) => d.kind !== 'document')
    .map((d) => d.name);
}

/**
 * The XML Schema of each dataset's XML export, the `<dataset>.xsd` its `xsi:schemaLocation`
 * names. Public like the data dictionary: it describes the data map, no tenant's data.
 */
export const schemaRoutes: RoutePlugin = async (app) => {
  app.get(
    '/api/v1/schemas/:dataset.xsd',
    {
      schema: {
        tags: ['exports'],
        summary: "A dataset's XML Schema (XSD)",
        description:
          'The XSD that XML exports of the dataset validate against (`xmllint --schema messages.xsd ' +
          'messages.xml`); their `xsi:schemaLocation` names it `<dataset>.xsd`, next to the XML. ' +
          'For an export made with `columns`, pass the same `columns` (their order is part of the ' +
          'schema). The document datasets (`knowledge_base`, `account`) have none.',
        params: Type.Object({
          dataset: Type.String({ maxLength: 64, description: `One of: ${xsdDatasets().join(', ')}` }),
        }),
        querystring: Type.Object(
          {
            columns: Type.Optional(
              Type.String({
                maxLength: 2000,
                description: 'Comma-separated columns of the export, in its order',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The XML Schema',
            content: { 'application/xml': { schema: { type: 'string' } } },
          },
          ...problemResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const { dataset } = request.params;
      if (!xsdDatasets().includes(dataset))
        throw new FerryError(
          'not_found',
          `no XML Schema for "${dataset}"; datasets with one: ${xsdDatasets().join(', ')}`,
        );
      const xsd = datasetXsd(parseExportRequest({ tenantId: '', dataset, columns: request.query.columns }))!;
      return reply.type('application/xml; charset=utf-8').send(xsd);
    },
  );
};
