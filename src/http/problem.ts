import { type Static, Type } from 'typebox';
import { ERROR_CODES, type ErrorCode, errorDefinition } from '../domain/error-catalog.ts';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** One invalid parameter of a request, as listed in a problem's `errors`. */
export const ParameterErrorSchema = Type.Object(
  {
    parameter: Type.String({
      description: 'Name (or dotted path inside the body) of the parameter',
      examples: ['format'],
    }),
    in: Type.Optional(
      Type.Enum(['path', 'query', 'header', 'body'], { description: 'Where the parameter was sent' }),
    ),
    message: Type.String({ description: 'What is wrong with it', examples: ['must be one of: csv, json'] }),
    accepted: Type.Optional(
      Type.Array(Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null()]), {
        description: 'The accepted values, when the parameter is an enumeration',
      }),
    ),
  },
  { additionalProperties: false },
);
export type ParameterError = Static<typeof ParameterErrorSchema>;

/** An RFC 9457 problem document with Ferry's extension members. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String({
      description: 'URI reference of the problem type; GET it for the catalog entry',
      examples: ['/problems/not_found'],
    }),
    title: Type.String({ description: 'Short summary of the problem type; stable for a code' }),
    status: Type.Integer({ description: 'The HTTP status code' }),
    detail: Type.String({ description: 'What went wrong in this occurrence' }),
    instance: Type.String({ description: 'The request path (without its query string)' }),
    code: Type.Enum(ERROR_CODES, { description: 'Stable error code; see docs/errors.md' }),
    request_id: Type.String({ description: 'Identifier of the request in the server logs' }),
    errors: Type.Optional(Type.Array(ParameterErrorSchema, { description: 'The invalid parameters' })),
    quota: Type.Optional(
      Type.String({
        description: 'quota_exceeded: the plan quota that refused the request',
        examples: ['exports_per_month'],
      }),
    ),
    attempts_left: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'verification_failed: tries of the one-time code that remain (0: ask for a new code)',
      }),
    ),
    resets_at: Type.Optional(
      Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
        description: 'quota_exceeded: when the quota frees again; null when it does not free with time',
      }),
    ),
  },
  { $id: 'Problem', additionalProperties: false, description: 'RFC 9457 problem details' },
);
export type Problem = Static<typeof ProblemSchema>;

/** The route `response` entry of a problem status, documented as `application/problem+json`. */
export function problemResponse(status: number) {
  return {
    description: errorTitleForStatus(status),
    content: { [PROBLEM_CONTENT_TYPE]: { schema: Type.Ref('Problem') } },
  };
}

/** Route `response` entries for problem statuses, documented as `application/problem+json`. */
export function problemResponses(...statuses: number[]) {
  return Object.fromEntries(statuses.map((status) => [status, problemResponse(status)])) as Record<
    number,
    unknown
  >;
}

function errorTitleForStatus(status: number): string {
  const titles = ERROR_CODES.filter((code) => errorDefinition(code).status === status).map(
    (code) => `${code}: ${errorDefinition(code).title}`,
  );
  return titles.length ? titles.join('; ') : `HTTP ${status}`;
}

export interface ProblemInput {
  code: ErrorCode;
  detail: string;
  instance: string;
  requestId: string;
  errors?: ParameterError[];
  /** quota_exceeded: the quota and when it frees. */
  quota?: { name: string; resetsAt: string | null };
  /** verification_failed: tries of the one-time code that remain. */
  attemptsLeft?: number;
}

/** Builds a problem document for a catalog code. */
export function problem(input: ProblemInput): Problem {
  const def = errorDefinition(input.code);
  return {
    type: `/problems/${def.code}`,
    title: def.title,
    status: def.status,
    detail: input.detail,
    instance: input.instance,
    code: def.code,
    request_id: input.requestId,
    ...(input.errors?.length ? { errors: input.errors } : {}),
    ...(input.quota ? { quota: input.quota.name, resets_at: input.quota.resetsAt } : {}),
    ...(input.attemptsLeft !== undefined ? { attempts_left: input.attemptsLeft } : {}),
  };
}
