import type { ImportInput, ImportSource, ImportSourceName, SourceOptions } from '../types.ts';
import { chatwootSource } from './chatwoot.ts';
import { ferrySource } from './ferry.ts';
import { fileSource } from './files.ts';
import { freshdeskSource } from './freshdesk.ts';
import { helpscoutSource } from './helpscout.ts';
import { intercomSource } from './intercom.ts';
import { zendeskSource } from './zendesk.ts';

/** Every import source by its `--source` name (docs/import.md, docs/migration/). */
const SOURCES: Record<
  ImportSourceName,
  (input: ImportInput, options: SourceOptions) => ImportSource | Promise<ImportSource>
> = {
  ferry: ferrySource,
  csv: (input, options) => fileSource('csv', input, options),
  json: (input, options) => fileSource('json', input, options),
  ndjson: (input, options) => fileSource('ndjson', input, options),
  zendesk: zendeskSource,
  intercom: intercomSource,
  chatwoot: chatwootSource,
  freshdesk: freshdeskSource,
  helpscout: helpscoutSource,
};

export function openSource(
  name: ImportSourceName,
  input: ImportInput,
  options: SourceOptions,
): Promise<ImportSource> {
  return Promise.resolve(SOURCES[name](input, options));
}
