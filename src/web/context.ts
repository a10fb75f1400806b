import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AuthContext } from '../auth/context.ts';
import { ERRORS, type ErrorCode } from '../domain/error-catalog.ts';
import { FerryError } from '../domain/ferry-error.ts';
import type { ExportServiceDeps } from '../export-requests/service.ts';
import type { FerryApp, RouteDeps } from '../http/types.ts';
import { type ClientInfo, type SignedIn, authOf } from './accounts.ts';
import type { Fragment } from './html.ts';
import { appPage } from './layout.ts';

/** What the dashboard's pages get: the app's adapters and the export service built from them. */
export interface WebDeps extends RouteDeps {
  readonly now: () => Date;
  readonly exports: ExportServiceDeps;
  /** The public base URL links are made with. */
  readonly baseUrl: string;
}

/** One area of the dashboard: a function that adds its routes (src/web/pages/). */
export type WebPages = (app: FerryApp, deps: WebDeps) => void | Promise<void>;

export interface SignedInRequest {
  readonly signedIn: SignedIn;
  readonly auth: AuthContext;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The signed-in team member, on dashboard routes (set by the session hook). */
    web: SignedInRequest | null;
  }
}

export const SESSION_COOKIE = 'ferry_session';
export const FLASH_COOKIE = 'ferry_flash';

export function clientOf(request: FastifyRequest): ClientInfo {
  const ua = request.headers['user-agent'];
  return { ip: request.ip ?? null, userAgent: typeof ua === 'string' ? ua.slice(0, 512) : null };
}

export function signedInOf(request: FastifyRequest): SignedInRequest {
  if (!request.web) throw new Error('dashboard route without the session hook');
  return request.web;
}

export { authOf };

/** Whether the answer goes over HTTPS (directly or behind a proxy Fastify trusts). */
export const secureRequest = (request: FastifyRequest) => request.protocol === 'https';

/** A notice for the next page (after a redirect), kept in a short-lived cookie. */
export function flash(reply: FastifyReply, message: string): void {
  reply.setCookie(FLASH_COOKIE, encodeURIComponent(message.slice(0, 500)), {
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure: secureRequest(reply.request),
    maxAge: 60,
  });
}

function takeFlash(request: FastifyRequest, reply: FastifyReply): string | null {
  const value = request.cookies[FLASH_COOKIE];
  if (!value) return null;
  reply.clearCookie(FLASH_COOKIE, { path: '/' });
  try {
    return decodeURIComponent(value);
  } catch {
    return null;
  }
}

/** Renders a dashboard page for the signed-in member. */
export function sendPage(
  request: FastifyRequest,
  reply: FastifyReply,
  shell: { title: string; current: string; error?: string | null; notice?: string | null; head?: Fragment },
  body: Fragment,
) {
  const { signedIn, auth } = signedInOf(request);
  const page = appPage(
    {
      ...shell,
      notice: shell.notice ?? takeFlash(request, reply),
      csrf: reply.generateCsrf(),
      auth,
      member: signedIn.member,
      tenant: signedIn.tenant,
      organisation: signedIn.organisation,
    },
    body,
  );
  return reply.header('cache-control', 'no-store').type('text/html; charset=utf-8').send(page.value);
}

/** Redirects after a form (303, so the browser follows with GET). */
export function seeOther(reply: FastifyReply, location: string, notice?: string) {
  if (notice) flash(reply, notice);
  return reply.redirect(location, 303);
}

/**
 * Runs a form's change and redirects back to `page` with its notice; an error with one of
 * `shown` codes shows the page again with the reason, under the code's status (a refused
 * change is not an error page). Anything else propagates to the error page.
 */
export async function changeThenRedirect(
  reply: FastifyReply,
  page: string,
  change: () => Promise<string>,
  showAgain: (message: string) => Promise<unknown>,
  shown: readonly ErrorCode[] = ['invalid_parameter', 'conflict'],
) {
  try {
    return seeOther(reply, page, await change());
  } catch (err) {
    if (err instanceof FerryError && shown.includes(err.code)) {
      reply.code(ERRORS[err.code].status);
      return showAgain(err.message);
    }
    throw err;
  }
}

/** A form field as a trimmed string (forms send strings or repeated strings). */
export function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  if (Array.isArray(value)) return String(value[0] ?? '').trim();
  return typeof value === 'string' ? value.trim() : '';
}

/** A form field that may repeat (checkboxes), as a list of non-empty strings. */
export function fields(body: unknown, name: string): string[] {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return list.map((v) => String(v).trim()).filter((v) => v.length > 0);
}
