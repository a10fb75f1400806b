import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { codeForStatus, type ErrorCode, errorDefinition, isErrorCode } from '../domain/error-catalog.ts';
import { FerryError } from '../domain/ferry-error.ts';
import { type ParameterError, PROBLEM_CONTENT_TYPE, type Problem, problem } from './problem.ts';
import { parameterErrors } from './validation.ts';

/**
 * Every error leaves as `application/problem+json` with a catalog code. A
 * `FerryError` keeps its message (it is written for users); Fastify's own client
 * errors (bad JSON, body too large) keep theirs; anything else becomes a 500
 * `internal` whose message and stack stay in the log, tied to the request id.
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request, reply) => {
    const body = toProblem(error, request);
    logProblem(request, body, error);
    // The problem replaces the body the handler was preparing: its encoding and file name go with it.
    reply.removeHeader('content-encoding').removeHeader('content-disposition');
    return sendProblem(reply, body);
  });

  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem({
        code: 'not_found',
        detail: `no route ${request.method} ${instanceOf(request)}`,
        instance: instanceOf(request),
        requestId: request.id,
      }),
    ),
  );
}

/**
 * Fastify's `frameworkErrors`: errors its router raises before any route or hook runs (a
 * path parameter longer than `maxParamLength`, a percent-escape that is not UTF-8). They
 * get the request id header and a problem like every other answer. Fastify's own message
 * quotes the whole URL, query string (and so a link's signature) included, so it is not used.
 */
export function frameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', request.id);
  const base = { instance: instanceOf(request), requestId: request.id };
  const body =
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? problem({ ...base, code: 'uri_too_long', detail: 'a path parameter is longer than any valid value' })
      : error.code === 'FST_ERR_BAD_URL'
        ? problem({
            ...base,
            code: 'malformed_request',
            detail: 'the request path holds a percent-escape that does not decode to UTF-8 text',
          })
        : problem({ ...base, code: 'internal', detail: GENERIC_DETAIL });
  logProblem(request, body, error);
  void sendProblem(reply, body);
}

/**
 * The HTTP server's `clientError` handler: a request so broken that Node's parser gave up
 * on it (bad request line or header syntax, headers over 16 KiB, too slow to arrive) never
 * becomes a Fastify request. It still gets a problem document with a fresh request id,
 * and a log line with that id; then the connection closes, as Node's own handler does.
 */
export function clientErrorHandler(
  this: FastifyInstance,
  error: NodeJS.ErrnoException,
  socket: Socket,
): void {
  // A reset connection has no one left to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const code: ErrorCode =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? 'request_timeout'
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? 'headers_too_large'
        : 'malformed_request';
  const requestId = randomUUID();
  const body = problem({
    code,
    detail: CLIENT_ERROR_DETAILS[code] ?? errorDefinition(code).title,
    instance: '/',
    requestId,
  });
  this.log.info({ request_id: requestId, code, reason: error.code }, 'request rejected by the HTTP parser');
  if (socket.writable) {
    const json = JSON.stringify(body);
    socket.write(
      `HTTP/1.1 ${body.status} ${body.title}\r\n` +
        `Content-Type: ${PROBLEM_CONTENT_TYPE}; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(json)}\r\n` +
        `X-Request-Id: ${requestId}\r\n` +
        `Connection: close\r\n\r\n${json}`,
    );
  }
  socket.destroy(error);
}

const CLIENT_ERROR_DETAILS: Partial<Record<ErrorCode, string>> = {
  request_timeout: 'the request did not arrive completely in time',
  headers_too_large: 'the request headers exceed 16 KiB',
  malformed_request: 'the request is not valid HTTP/1.1 (request line or header syntax)',
};

export function logProblem(request: FastifyRequest, body: Problem, error: unknown): void {
  if (body.status >= 500) request.log.error({ err: error, code: body.code }, 'request failed');
  else request.log.info({ code: body.code, detail: body.detail }, 'request rejected');
}

export function sendProblem(reply: FastifyReply, body: Problem): FastifyReply {
  return reply.code(body.status).type(PROBLEM_CONTENT_TYPE).send(body);
}

/** The request path without its query string, which may carry a signature. */
export function instanceOf(request: FastifyRequest): string {
  const url = request.url;
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

export function toProblem(error: unknown, request: FastifyRequest): Problem {
  const base = { instance: instanceOf(request), requestId: request.id };
  if (error instanceof FerryError) {
    // The type admits catalog codes only, but a cast or a deserialized error could bring another.
    const code: string = error.code;
    if (!isErrorCode(code)) {
      request.log.error({ err: error }, `FerryError code "${code}" is not in the error catalog`);
      return problem({ ...base, code: 'internal', detail: GENERIC_DETAIL });
    }
    const quota = typeof error.details?.quota === 'string' ? error.details.quota : undefined;
    const resetsAt = typeof error.details?.resets_at === 'string' ? error.details.resets_at : null;
    const attemptsLeft = error.details?.attempts_left;
    return problem({
      ...base,
      code,
      detail: error.message,
      errors: detailErrors(error),
      ...(quota ? { quota: { name: quota, resetsAt } } : {}),
      ...(typeof attemptsLeft === 'number' ? { attemptsLeft } : {}),
    });
  }
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.validation) {
    const errors = parameterErrors(fastifyError.validation, fastifyError.validationContext);
    const detail = errors.map((e) => `${e.parameter}: ${e.message}`).join('; ');
    return problem({ ...base, code: 'invalid_parameter', detail, errors });
  }
  const status = fastifyError.statusCode;
  if (status === 415)
    return problem({ ...base, code: 'unsupported_media_type', detail: mediaTypeDetail(request) });
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // Client errors raised by Fastify and its plugins carry messages meant for the client.
    const code: ErrorCode = CLIENT_ERROR_CODES[status] ?? codeForStatus(status) ?? 'malformed_request';
    return problem({ ...base, code, detail: fastifyError.message ?? errorDefinition(code).title });
  }
  if (status === 503) return problem({ ...base, code: 'service_unavailable', detail: UNAVAILABLE_DETAIL });
  return problem({ ...base, code: 'internal', detail: GENERIC_DETAIL });
}

/** Fastify says only "Unsupported Media Type"; every body the API reads is JSON, so say how to send it. */
function mediaTypeDetail(request: FastifyRequest): string {
  const sent = request.headers['content-type'];
  const how = sent
    ? `was sent as ${JSON.stringify(sent.slice(0, 100))}`
    : 'was sent without a Content-Type header';
  return `the request body ${how}; send it as JSON with the header Content-Type: application/json`;
}

const GENERIC_DETAIL = 'an unexpected error occurred; the server logged it with this request_id';
const UNAVAILABLE_DETAIL = 'the service is temporarily unavailable; retry later';

/** Statuses whose first catalog code is not the right one for a framework error. */
const CLIENT_ERROR_CODES: Partial<Record<number, ErrorCode>> = {
  400: 'malformed_request',
  404: 'not_found',
  429: 'rate_limited',
};

function detailErrors(error: FerryError): ParameterError[] | undefined {
  const parameter = error.details?.parameter;
  if (typeof parameter !== 'string') return undefined;
  const accepted = error.details?.accepted;
  const prefix = `${parameter}: `;
  return [
    {
      parameter,
      message: error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message,
      ...(Array.isArray(accepted) ? { accepted: accepted as (string | number)[] } : {}),
    },
  ];
}
