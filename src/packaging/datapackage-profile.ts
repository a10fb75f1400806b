import { readFile } from 'node:fs/promises';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { FerryError } from '../domain/ferry-error.ts';

/** The vendored Data Package v2 profiles (JSON Schema draft-07), keyed by their canonical URLs. */
export const DATA_PACKAGE_PROFILES = {
  'https://datapackage.org/profiles/2.0/datapackage.json': 'datapackage.json',
  'https://datapackage.org/profiles/2.0/dataresource.json': 'dataresource.json',
  'https://datapackage.org/profiles/2.0/tableschema.json': 'tableschema.json',
  'https://datapackage.org/profiles/2.0/tabledialect.json': 'tabledialect.json',
} as const;

const PROFILE_DIR = new URL('../../standards/datapackage-v2/', import.meta.url);

// ajv-formats is CommonJS; its default export arrives wrapped under Node's ESM interop.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

let validator: Promise<ValidateFunction> | undefined;

/** Compiles the vendored `datapackage.json` profile once (the others are registered for `$ref`s). */
function compile(): Promise<ValidateFunction> {
  validator ??= (async () => {
    // The profiles carry documentation keywords (propertyOrder, context, options) that strict mode rejects.
    const ajv = new Ajv({ strict: false, allErrors: true });
    addFormats(ajv);
    // A json-editor display hint used by the profiles, not a validation format.
    ajv.addFormat('textarea', true);
    for (const [url, file] of Object.entries(DATA_PACKAGE_PROFILES)) {
      const schema = JSON.parse(await readFile(new URL(file, PROFILE_DIR), 'utf8')) as object;
      ajv.addSchema(schema, url);
    }
    return ajv.getSchema('https://datapackage.org/profiles/2.0/datapackage.json')!;
  })();
  return validator;
}

/** Throws `invalid_datapackage` with ajv's messages when the descriptor breaks the v2 profile. */
export async function assertValidDataPackage(descriptor: unknown): Promise<void> {
  const validate = await compile();
  if (validate(descriptor)) return;
  const problems = (validate.errors ?? []).slice(0, 10).map((e) => `${e.instancePath || '/'} ${e.message}`);
  throw new FerryError(
    'invalid_datapackage',
    `datapackage.json breaks the Data Package v2 profile: ${problems.join('; ')}`,
  );
}
