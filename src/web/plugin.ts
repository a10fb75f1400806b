import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import cookie from '@fastify/cookie';
import csrf from '@fastify/csrf-protection';
import multipart from '@fastify/multipart';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { addressAllowed, refuseAddress } from '../auth/ip-allowlist.ts';
import { registerExportUsage } from '../export-requests/service.ts';
import { linkBase } from '../export-requests/links.ts';
import { logProblem, toProblem } from '../http/error-handler.ts';
import type { RoutePlugin } from '../http/types.ts';
import { authOf, memberTenantId, resolveSession } from './accounts.ts';
import { clientOf, SESSION_COOKIE, type WebDeps, type WebPages } from './context.ts';
import { html } from './html.ts';
import { plainPage } from './layout.ts';
import { accountPages } from './pages/account.ts';
import { auditPages } from './pages/audit.ts';
import { dsarPages } from './pages/dsar.ts';
import { retentionPages } from './pages/retention.ts';
import { deletionPages } from './pages/deletions.ts';
import { backupPages } from './pages/backups.ts';
import { importPages } from './pages/imports.ts';
import { compliancePages } from './pages/compliance.ts';
import { exportPages } from './pages/export.ts';
import { historyPages } from './pages/history.ts';
import { keyPages } from './pages/keys.ts';
import { organisationPages } from './pages/organisation.ts';
import { biPages } from './pages/bi.ts';
import { privacyCenterPages } from './pages/privacy-center.ts';
import { schedulePages } from './pages/schedules.ts';
import { signInPages } from './pages/signin.ts';
import { usagePages } from './pages/usage.ts';
import { webhookPages } from './pages/webhooks.ts';

/**
 * The dashboard (`/app/…`, team members signed in with a session cookie) and the privacy
 * center (`/privacy/<tenant>`, data subjects): server-rendered pages on the same services
 * as the API, with htmx for partial updates. Registered in its own Fastify context, so its
 * cookies, form parsing, CSRF checks and Content-Security-Policy apply to these routes only.
 */

/** The areas of the dashboard, one file each in src/web/pages/. */
const PAGES: readonly WebPages[] = [
  signInPages,
  exportPages,
  historyPages,
  schedulePages,
  webhookPages,
  usagePages,
  keyPages,
  biPages,
  auditPages,
  dsarPages,
  retentionPages,
  deletionPages,
  backupPages,
  importPages,
  compliancePages,
  accountPages,
  organisationPages,
  privacyCenterPages,
];

const require = createRequire(import.meta.url);
const packageDir = (entry: string) => dirname(require.resolve(entry));

/** Vendored browser files, served from the npm packages that ship them (no build step, no CDN). */
const ASSETS: readonly { prefix: string; root: string }[] = [
  { prefix: '/assets/htmx/', root: packageDir('htmx.org/dist/htmx.min.js') },
  { prefix: '/assets/htmx-sse/', root: packageDir('htmx-ext-sse/dist/sse.min.js') },
  { prefix: '/assets/uplot/', root: packageDir('uplot/dist/uPlot.iife.min.js') },
  { prefix: '/assets/pico/', root: packageDir('@picocss/pico/css/pico.min.css') },
  { prefix: '/assets/ferry/', root: join(dirname(fileURLToPath(import.meta.url)), 'static') },
];

/** Every route of the dashboard and the privacy center (method and URL pattern), as registered. */
const REGISTERED: { method: string; url: string }[] = [];
export function registeredWebRoutes(): readonly { method: string; url: string }[] {
  return REGISTERED;
}

export const webRoutes: RoutePlugin = async (app, deps) => {
  registerExportUsage();
  app.addHook('onRoute', (route) => {
    // Pages, not API operations: kept out of the OpenAPI document.
    route.schema = { ...(route.schema ?? {}), hide: true };
    for (const method of [route.method].flat())
      if (method !== 'HEAD' && !REGISTERED.some((r) => r.method === method && r.url === route.url))
        REGISTERED.push({ method, url: route.url });
  });
  const now = deps.now ?? (() => new Date());
  const web: WebDeps = {
    ...deps,
    now,
    baseUrl: linkBase(deps.config),
    exports: {
      database: deps.database,
      config: deps.config,
      queue: deps.queue,
      store: deps.store,
      signer: deps.signer,
      secrets: deps.secrets,
      now,
      logger: app.log as WebDeps['exports']['logger'],
    },
  };

  await app.register(cookie);
  await app.register(formbody, { bodyLimit: 256 * 1024 });
  // File uploads (imports) are streamed by their route, so the form's token cannot be in a
  // parsed body when the CSRF check runs: a multipart form carries it in its action's query.
  await app.register(multipart, {
    limits: {
      fileSize: deps.config.imports.limits.maxBytes,
      files: 1,
      fields: 20,
      fieldSize: 4096,
      parts: 25,
    },
    throwFileSizeLimit: true,
  });
  await app.register(csrf, {
    cookieKey: 'ferry_csrf',
    cookieOpts: { path: '/', sameSite: 'lax', httpOnly: true },
    getToken: (request) => {
      const body = request.body as { _csrf?: string } | undefined;
      const header = request.headers['x-csrf-token'];
      if (body?._csrf) return body._csrf;
      if (typeof header === 'string') return header;
      const query = request.query as { _csrf?: string } | undefined;
      return request.isMultipart() ? query?._csrf : undefined;
    },
  });
  await app.register(helmet, {
    // Strict: scripts and styles only from Ferry's own files, no inline code, no eval.
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:', 'https:'],
        connectSrc: ["'self'"],
        fontSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        objectSrc: ["'none'"],
      },
    },
    // The dashboard is served over plain HTTP on a laptop; HSTS belongs to the TLS proxy.
    strictTransportSecurity: false,
    crossOriginEmbedderPolicy: false,
  });
  for (const [i, asset] of ASSETS.entries()) {
    await app.register(fastifyStatic, {
      root: asset.root,
      prefix: asset.prefix,
      decorateReply: i === 0,
      index: false,
      list: false,
      wildcard: true,
      maxAge: '1h',
    });
  }

  app.decorateRequest('web', null);
  // Forms change things: every request that is not a read carries the CSRF token
  // (a hidden `_csrf` field, or the `x-csrf-token` header htmx sends).
  app.addHook('preHandler', (request, reply, done) => {
    if (request.method === 'GET' || request.method === 'HEAD') return done();
    app.csrfProtection(request, reply, done);
  });
  // Dashboard routes need a signed-in member; the others (sign-in, privacy center) do not.
  app.addHook('preHandler', async (request, reply) => {
    if (!request.url.startsWith('/app')) return;
    const token = request.cookies[SESSION_COOKIE];
    const signedIn = token ? await resolveSession(deps.database, token, now()) : null;
    if (!signedIn || signedIn.secondFactorPending) return toSignIn(request, reply);
    const client = clientOf(request);
    const refusal = {
      ip: request.ip ?? null,
      userAgent: client.userAgent,
      list: 'tenant' as const,
      route: `${request.method} ${request.routeOptions.url ?? request.url}`,
      occurredAt: now(),
    };
    if (!addressAllowed(signedIn.ipAllowlist ?? [], request.ip))
      throw await refuseAddress(deps.database, {
        ...refusal,
        tenantId: memberTenantId(signedIn),
        actor: `team_member:${signedIn.member.id}`,
      });
    const auth = authOf(signedIn, client);
    // Switched to another tenant of the organisation: that tenant's allow-list applies as well.
    if (signedIn.actingIpAllowlist && !addressAllowed(signedIn.actingIpAllowlist, request.ip))
      throw await refuseAddress(deps.database, { ...refusal, tenantId: auth.tenantId, actor: auth.actor });
    request.web = { signedIn, auth };
  });

  app.setErrorHandler((error: unknown, request, reply) => {
    const problem = toProblem(error, request);
    logProblem(request, problem, error);
    const page = plainPage(
      { title: problem.title, csrf: '', error: problem.detail },
      html`<p><a href="${request.url.startsWith('/privacy') ? privacyHome(request.url) : '/app'}">Back</a></p>
<p><small>Reference: ${problem.request_id ?? request.id}</small></p>`,
    );
    return reply
      .code(problem.status)
      .header('cache-control', 'no-store')
      .type('text/html; charset=utf-8')
      .send(page.value);
  });

  app.get('/', async (_request, reply) => reply.redirect('/app', 302));
  for (const pages of PAGES) await pages(app, web);
};

/** Where a request without a session goes: the sign-in page, coming back afterwards. */
function toSignIn(request: FastifyRequest, reply: FastifyReply) {
  const next = request.method === 'GET' ? request.url : '/app';
  const location = `/signin?next=${encodeURIComponent(next)}`;
  if (request.headers['hx-request']) return reply.header('hx-redirect', location).code(204).send();
  return reply.redirect(location, 303);
}

function privacyHome(url: string): string {
  const slug = /^\/privacy\/([a-z0-9-]{1,64})/.exec(url)?.[1];
  return slug ? `/privacy/${slug}` : '/';
}
