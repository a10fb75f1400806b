import { Ajv, type AnySchema, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaValidationError, FastifyServerOptions } from 'fastify';
import type { ParameterError } from './problem.ts';
import { undecodableParameters } from './query-string.ts';

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
 * Every validator then applies the boundary rules (`boundaryError`) to what passed.
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
    const stored = typeof id === 'string' ? ajv.getSchema(id) : undefined;
    return withBoundaryRules(stored ?? ajv.compile(schema), httpPart);
  };
}

/**
 * Values no parameter of Ferry accepts, whatever its schema says: text with NUL
 * characters or lone surrogates (PostgreSQL cannot store the one, UTF-8 cannot encode
 * the other), query text whose percent-escapes are not UTF-8, and numbers that are not
 * finite or lie beyond the exactly representable integers (`1e309`, `Infinity`,
 * `99999999999999999999`: Ajv's coercion lets `Infinity` through even past a
 * `maximum`). Checked here, once, so no route can forget them and a database error
 * never stands in for a 400.
 */
function withBoundaryRules(validate: ValidateFunction, httpPart: string | undefined): ValidateFunction {
  const guarded = ((data: unknown, context?: DataValidationCxt) => {
    const valid = validate(data, context);
    // Coercion may replace the root value in its parent (the request).
    const value =
      context?.parentData !== undefined && context.parentDataProperty !== undefined
        ? (context.parentData as Record<string | number, unknown>)[context.parentDataProperty]
        : data;
    const broken = boundaryErrors(value, httpPart === 'querystring' ? undecodableParameters(data) : []);
    const errors = [...(valid ? [] : (validate.errors ?? [])), ...broken];
    guarded.errors = errors.length > 0 ? errors : null;
    return errors.length === 0;
  }) as ValidateFunction;
  // Fastify passes the parent (so that coercion can replace the root value) only to a
  // function that carries Ajv's schema environment.
  Object.assign(guarded, { schema: validate.schema, schemaEnv: validate.schemaEnv });
  return guarded;
}

/** The values of a request part that break a boundary rule, as Ajv errors, in document order. */
export function boundaryErrors(value: unknown, undecodable: readonly string[]): ErrorObject[] {
  const errors = undecodable.map((name) =>
    boundaryViolation(`/${escapePointer(name)}`, 'is not valid percent-encoded UTF-8 text'),
  );
  // Iterative, so a deeply nested free-form body cannot overflow the stack.
  const pending: [unknown, string][] = [[value, '']];
  for (
    let next = pending.pop();
    next !== undefined && errors.length < MAX_PARAMETER_ERRORS;
    next = pending.pop()
  ) {
    const [item, pointer] = next;
    const children: [unknown, string][] = [];
    if (typeof item === 'string') {
      const broken = textViolation(item);
      if (broken) errors.push(boundaryViolation(pointer, broken));
    } else if (typeof item === 'number') {
      if (!Number.isFinite(item)) errors.push(boundaryViolation(pointer, 'must be a finite number'));
      else if (Number.isInteger(item) && !Number.isSafeInteger(item))
        errors.push(boundaryViolation(pointer, `must be between -${MAX_SAFE} and ${MAX_SAFE}`));
    } else if (Array.isArray(item)) {
      for (const [index, element] of item.entries()) children.push([element, `${pointer}/${index}`]);
    } else if (typeof item === 'object' && item !== null) {
      for (const [key, element] of Object.entries(item)) {
        const broken = textViolation(key);
        if (broken) errors.push(boundaryViolation(pointer, `property names ${broken}`));
        else children.push([element, `${pointer}/${escapePointer(key)}`]);
      }
    }
    // Reversed, so the stack yields them in document order (one at a time: a body array can be huge).
    for (let i = children.length - 1; i >= 0; i--) pending.push(children[i]!);
  }
  return errors;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

type DataValidationCxt = Parameters<ValidateFunction>[1];

function textViolation(text: string): string | undefined {
  if (text.includes('\u0000')) return 'must not contain NUL characters';
  if (!text.isWellFormed()) return 'must be valid Unicode text (it holds a lone surrogate)';
  return undefined;
}

function boundaryViolation(instancePath: string, message: string): ErrorObject {
  return { keyword: 'boundary', instancePath, schemaPath: '#', params: {}, message };
}

function escapePointer(name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
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
