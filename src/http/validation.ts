import { Ajv, type AnySchema, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaValidationError, FastifyServerOptions } from 'fastify';
import type { ParameterError } from './problem.ts';

const BASE_OPTIONS: Options = {
  // Reject unknown body fields instead of silently dropping them (Fastify's default strips them).
  removeAdditional: false,
  useDefaults: true,
  // Every invalid parameter is reported at once, so a client fixes them in one round. The
  // work stays bounded by the body limit and the schemas' own limits, and the answer lists
  // at most MAX_PARAMETER_ERRORS of them.
  allErrors: true,
  addUsedSchema: false,
};

/**
 * Fastify's validator factory with two Ajv instances: query strings, path
 * parameters and headers arrive as text, so they are coerced (`"10"` → 10, one
 * value → array); a JSON body already has types, so it is validated as sent.
 */
export const buildValidator = buildValidatorFactory as unknown as ValidatorFactory;

// Fastify's published type for this factory says the compiler gets a bare schema;
// at run time it gets the route definition (schema, method, url, httpPart).
type ValidatorFactory = NonNullable<
  NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']
>['buildValidator'];

function buildValidatorFactory(externalSchemas: unknown) {
  const schemas = Object.values((externalSchemas ?? {}) as Record<string, AnySchema>);
  const text = makeAjv({ coerceTypes: 'array' }, schemas);
  const json = makeAjv({ coerceTypes: false }, schemas);
  return ({ schema, httpPart }: { schema: AnySchema; httpPart?: string }): ValidateFunction => {
    const ajv = httpPart === 'body' ? json : text;
    const id = typeof schema === 'object' ? schema.$id : undefined;
    if (typeof id === 'string') {
      const stored = ajv.getSchema(id);
      if (stored) return stored;
    }
    return ajv.compile(schema);
  };
}

function makeAjv(options: Options, schemas: AnySchema[]): Ajv {
  const ajv = new Ajv({ ...BASE_OPTIONS, ...options });
  addFormats.default(ajv);
  for (const schema of schemas) ajv.addSchema(schema);
  return ajv;
}

const LOCATION = { querystring: 'query', params: 'path', headers: 'header', body: 'body' } as const;
type Location = (typeof LOCATION)[keyof typeof LOCATION];

/**
 * Turns Ajv errors into `{parameter, in, message, accepted}` entries, one per invalid
 * parameter (the first problem Ajv found with it). Errors of the
 * branches of an `anyOf` of constants (a TypeBox union of literals) become one entry
 * listing every accepted constant.
 */
export function parameterErrors(
  validation: readonly (FastifySchemaValidationError | ErrorObject)[],
  context: string | undefined,
): ParameterError[] {
  const where: Location | undefined = LOCATION[context as keyof typeof LOCATION];
  const byParameter = new Map<string, ParameterError>();
  for (const error of validation) {
    const { parameter, message, accepted } = describe(error, where);
    const existing = byParameter.get(parameter);
    if (existing) {
      if (accepted && existing.accepted) existing.accepted.push(...accepted);
      continue;
    }
    byParameter.set(parameter, {
      parameter,
      ...(where ? { in: where } : {}),
      message,
      ...(accepted ? { accepted: [...accepted] } : {}),
    });
  }
  for (const entry of byParameter.values()) {
    if (entry.accepted) {
      entry.accepted = [...new Set(entry.accepted)];
      entry.message = `must be one of: ${entry.accepted.map(String).join(', ')}`;
    }
  }
  return [...byParameter.values()].slice(0, MAX_PARAMETER_ERRORS);
}

/** Most parameters one problem lists; a body with thousands of unknown fields gets the first ones. */
export const MAX_PARAMETER_ERRORS = 20;

type Accepted = (string | number | boolean | null)[];

function describe(
  error: FastifySchemaValidationError | ErrorObject,
  where: Location | undefined,
): { parameter: string; message: string; accepted?: Accepted } {
  const params = error.params as Record<string, unknown>;
  const path = pointerToPath(error.instancePath);
  const child = (name: unknown) => (path ? `${path}.${String(name)}` : String(name));
  switch (error.keyword) {
    case 'required':
      return { parameter: child(params.missingProperty), message: 'is required' };
    case 'additionalProperties':
      return { parameter: child(params.additionalProperty), message: 'is not a known parameter' };
    case 'enum':
      return {
        parameter: path || where || 'request',
        message: '',
        accepted: params.allowedValues as Accepted,
      };
    case 'const':
      return {
        parameter: path || where || 'request',
        message: '',
        accepted: [params.allowedValue as string],
      };
    default:
      return { parameter: path || where || 'request', message: error.message ?? 'is invalid' };
  }
}

/** `/items/0/name` → `items[0].name`. */
function pointerToPath(pointer: string): string {
  if (!pointer) return '';
  return pointer
    .slice(1)
    .split('/')
    .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce((acc, part) => (/^\d+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}
