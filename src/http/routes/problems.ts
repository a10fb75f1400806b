import { Type } from 'typebox';
import { ERROR_CODES, ERRORS } from '../../domain/error-catalog.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { problemResponses } from '../problem.ts';
import type { RoutePlugin } from '../types.ts';

const ErrorType = Type.Object(
  {
    code: Type.String(),
    status: Type.Integer(),
    title: Type.String(),
    description: Type.String(),
  },
  { additionalProperties: false },
);

/** The error catalog, so that a problem's `type` (`/problems/<code>`) resolves to its documentation. */
export const problemRoutes: RoutePlugin = async (app) => {
  app.get(
    '/problems',
    {
      schema: {
        tags: ['errors'],
        summary: 'List every error code',
        response: { 200: Type.Array(ErrorType) },
      },
    },
    async () => ERROR_CODES.map((code) => ({ code, ...ERRORS[code] })),
  );

  app.get(
    '/problems/:code',
    {
      schema: {
        tags: ['errors'],
        summary: 'Describe one error code',
        params: Type.Object({ code: Type.String({ maxLength: 64 }) }),
        response: { 200: ErrorType, ...problemResponses(404) },
      },
    },
    async (request) => {
      const { code } = request.params;
      if (!Object.hasOwn(ERRORS, code))
        throw new FerryError('not_found', `no error code "${code}" (see GET /problems for the list)`);
      return { code, ...ERRORS[code as keyof typeof ERRORS] };
    },
  );
};
