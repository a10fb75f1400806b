import { REFERENCE_DATAMAP } from '../datamap/datamap.ts';
import { selectedFields } from '../collect/query.ts';
import type { ExportRequest } from '../collect/request.ts';
import { xsdFor } from '../format/xml-schema.ts';

/**
 * The XML Schema of a dataset's XML export: the file `<dataset>.xsd` that the export's
 * `xsi:schemaLocation` names, with the export's columns in its order. Null for the
 * document datasets (knowledge_base, account), whose XML is not the record layout.
 */
export function datasetXsd(request: Pick<ExportRequest, 'dataset' | 'columns' | 'options'>): string | null {
  const dataset = REFERENCE_DATAMAP.datasets[request.dataset];
  if (!dataset || dataset.kind === 'document') return null;
  return xsdFor({ dataset: dataset.name, fields: selectedFields(dataset, request as ExportRequest) });
}
