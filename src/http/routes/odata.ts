import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { AuthContext } from '../../auth/context.ts';
import { authorize, authorizeExport } from '../../auth/policy.ts';
import { historyStart, limitsFor, quotaExceeded } from '../../auth/quotas.ts';
import { isDated } from '../../datamap/datamap.ts';
import { PAGE_SIZE, planPage } from '../../collect/paging.ts';
import { parseExportRequest } from '../../collect/request.ts';
import { checkSiteUrls, requestedSites } from '../../collect/tenant.ts';
import { FerryError, invalid } from '../../domain/ferry-error.ts';
import { loadOrCreateSecretKey } from '../../lib/secret-box.ts';
import { FEED_DATAMAP, FEED_SETS, RowsToArray, serviceRoot } from '../../odata/feed.ts';
import { type EntitySetModel, metadataXml } from '../../odata/model.ts';
import { type FeedQuery, readFeedQuery } from '../../odata/query-options.ts';
import { problemResponses } from '../problem.ts';
import { parseQueryString, undecodableParameters } from '../query-string.ts';
import { responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';
import { type AuditContext, refusalsAudited, sendStream } from './export-datasets.ts';
import { piiLevel } from './export-datasets-params.ts';

/** Rows per response unless the client asks for fewer with `Prefer: odata.maxpagesize`. */
export const FEED_PAGE_SIZE = 1000;

const JSON_TYPE = 'application/json;odata.metadata=minimal;charset=utf-8';

/** `Prefer: odata.maxpagesize=N` (RFC 7240, OData 8.2.8.3), capped at the engine's page limit. */
function preferredPageSize(request: FastifyRequest): number | null {
  const prefer = request.headers.prefer;
  const text = Array.isArray(prefer) ? prefer.join(',') : (prefer ?? '');
  const match = /(?:^|[,;\s])odata\.maxpagesize\s*=\s*"?(\d{1,9})"?/i.exec(text);
  if (!match) return null;
  return Math.min(Math.max(Number(match[1]), PAGE_SIZE.min), PAGE_SIZE.max);
}

function entitySetOf(name: string): EntitySetModel {
  const set = FEED_SETS.get(name);
  if (!set)
    throw new FerryError(
      'not_found',
      `"${name.slice(0, 100)}" is not an entity set of this feed (entity sets: ${[...FEED_SETS.keys()].join(', ')})`,
    );
  return set;
}

/**
 * The query string as single values: OData options are never repeated, and it is read as
 * RFC 3986 says, not as an HTML form: a `+` is a plus sign (`2026-11-01T09:30:00+02:00`).
 */
function singleValues(request: FastifyRequest): Record<string, string> {
  const at = request.url.indexOf('?');
  const query = parseQueryString(at === -1 ? '' : request.url.slice(at + 1), { plusIsSpace: false });
  const undecodable = undecodableParameters(query)[0];
  if (undecodable !== undefined) throw invalid(undecodable.slice(0, 50), 'is not valid percent-encoding');
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw invalid(name, 'is given more than once');
    out[name] = value;
  }
  return out;
}

/** The link to the rest of the result: the same options, with the page's cursor and what is left of `$top`. */
function nextLink(
  root: string,
  set: string,
  query: Record<string, string>,
  cursor: string,
  top?: number,
): string {
  const url = new URL(`${root}/${set}`);
  for (const [name, value] of Object.entries(query)) {
    if (name !== '$skip' && name !== '$skiptoken' && name !== '$top') url.searchParams.set(name, value);
  }
  if (top !== undefined) url.searchParams.set('$top', String(top));
  url.searchParams.set('$skiptoken', cursor);
  return url.toString();
}

/**
 * The OData v4 feed (`/odata/v4`): the service document, `$metadata` (CSDL from the data
 * map) and one entity set per table dataset, read-only, with server-driven paging. It
 * streams the same statement as `GET /api/v1/export/{dataset}` in NDJSON, wrapped as an
 * OData JSON response; roles, scopes, anonymization, the plan's history window and the
 * audit trail apply as there. See docs/odata.md.
 */
export const odataRoutes: RoutePlugin = async (app, { database, config, now: clock }) => {
  const now = clock ?? (() => new Date());
  let secret: string | undefined;
  const sessionSecret = () => {
    secret ??= loadOrCreateSecretKey(config);
    return secret;
  };
  const common = { tags: ['odata'], security: [{ bearer: [] }, { basic: [] }] as Record<string, string[]>[] };

  const serviceDocument = async (request: FastifyRequest, reply: FastifyReply) => {
    authorize(request.auth!, 'exports:create');
    const root = serviceRoot(request, config.publicUrl);
    reply.header('odata-version', '4.0').type(JSON_TYPE);
    return {
      '@odata.context': `${root}/$metadata`,
      value: [...FEED_SETS.keys()].map((name) => ({ name, kind: 'EntitySet', url: name })),
    };
  };
  for (const url of ['/odata/v4', '/odata/v4/'])
    app.get(
      url,
      {
        onRequest: app.authenticate,
        schema: {
          ...common,
          // One operation in the document: the address with and without its trailing slash.
          hide: url.endsWith('/'),
          summary: 'OData service document: the entity sets of the feed (also at /odata/v4/)',
          response: {
            200: {
              description: 'The service document',
              headers: responseHeaders('OData-Version'),
              content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } },
            },
            ...problemResponses(401, 403, 429),
          },
        },
      },
      serviceDocument,
    );

  app.get(
    '/odata/v4/$metadata',
    {
      onRequest: app.authenticate,
      schema: {
        ...common,
        summary: 'OData CSDL of the feed, generated from the data map',
        response: {
          200: {
            description: 'CSDL XML',
            headers: responseHeaders('OData-Version'),
            content: { 'application/xml': { schema: { type: 'string' } } },
          },
          ...problemResponses(401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      authorize(request.auth!, 'exports:create');
      reply.header('odata-version', '4.0').type('application/xml;charset=utf-8');
      return metadataXml([...FEED_SETS.values()]);
    },
  );

  const SetParams = Type.Object({ set: Type.String({ description: 'An entity set (table dataset)' }) });

  /**
   * The plan's history window in `$filter` terms: without a time comparison the set starts at
   * the window's first day; a comparison before it is refused, naming the first instant allowed.
   */
  const feedHistoryStart = async (auth: AuthContext, set: EntitySetModel, from: string | undefined) => {
    if (!isDated(set.dataset)) return from;
    const earliest = historyStart(await limitsFor(database, auth), now());
    if (!earliest) return from;
    if (from === undefined) return earliest.toISOString().slice(0, 10);
    if (Date.parse(from) < earliest.getTime())
      throw quotaExceeded(
        'history_window',
        `$filter: the ${auth.plan} plan serves history from ${earliest.toISOString()} on; compare the time with that instant or a later one, or upgrade the plan`,
        null,
      );
    return from;
  };

  /** Checks and plans one response of an entity set. */
  const plan = async (request: FastifyRequest, set: EntitySetModel, query: FeedQuery, pageSize: number) => {
    const auth = request.auth!;
    authorize(auth, 'exports:create');
    const dateRange = query.from || query.to ? { from: query.from, to: query.to } : null;
    const audit: AuditContext = { database, auth, dataset: set.name, dateRange, request };
    const granted = await refusalsAudited(audit, () =>
      authorizeExport(auth, { dataset: set.name, pii: piiLevel(query.includePii) }),
    );
    const from = await feedHistoryStart(auth, set, query.from);
    const parsed = parseExportRequest(
      {
        tenantId: auth.tenantId,
        dataset: set.name,
        format: 'ndjson',
        filters: query.filters,
        from,
        to: query.to,
        columns: query.columns?.length ? query.columns : undefined,
        // Edm.DateTimeOffset values in UTC: BI tools convert to the reader's zone.
        timezone: 'UTC',
        pii: granted.pii,
        scope: granted.scope,
      },
      FEED_DATAMAP,
    );
    await checkSiteUrls(database, auth.tenantId, requestedSites(parsed.filters, parsed.options));
    const page = await planPage(database, parsed, {
      pageSize,
      ...(query.skiptoken !== undefined ? { cursor: query.skiptoken } : {}),
      ...(query.skip ? { offset: query.skip } : {}),
      secret: sessionSecret(),
      datamap: FEED_DATAMAP,
    }).catch((err: unknown) => {
      // The engine names its own parameters; the client sent $skiptoken.
      if (err instanceof FerryError && err.details?.parameter === 'cursor')
        throw invalid('$skiptoken', err.message.replace(/^cursor: /, ''));
      throw err;
    });
    return { page, audit };
  };

  app.get(
    '/odata/v4/:set',
    {
      onRequest: app.authenticate,
      schema: {
        ...common,
        summary: 'Rows of one entity set, with $select, $filter, $orderby, $top, $skip and $count',
        description:
          'OData v4 JSON (odata.metadata=minimal). Pages of up to 1,000 rows (Prefer: odata.maxpagesize ' +
          'up to 10,000) with @odata.nextLink. $filter takes comparisons joined by "and" that match the ' +
          "dataset's declared filters; the dataset's other filters are query options by name. See docs/odata.md.",
        params: SetParams,
        response: {
          200: {
            description: 'One page of rows, streamed',
            headers: responseHeaders('OData-Version', 'Preference-Applied', 'Cache-Control'),
            content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } },
          },
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request, reply) => {
      const set = entitySetOf(request.params.set);
      const options = singleValues(request);
      const query = readFeedQuery(set, options);
      const preferred = preferredPageSize(request);
      const limit = preferred ?? FEED_PAGE_SIZE;
      const pageSize = Math.max(1, Math.min(limit, query.top ?? limit));
      const { page, audit } = await plan(request, set, query, pageSize);
      const root = serviceRoot(request, config.publicUrl);
      const selected = query.columns?.length ? `(${query.columns.join(',')})` : '';
      // `$top=0` asks for the count (or nothing): no row is read.
      const empty = query.top === 0;
      const more = !empty && !page.endOfStream && (query.top === undefined || query.top > page.pageSize);
      const link = more
        ? nextLink(
            root,
            set.name,
            options,
            page.nextCursor!,
            query.top === undefined ? undefined : query.top - page.pageSize,
          )
        : null;
      const head =
        `{"@odata.context":${JSON.stringify(`${root}/$metadata#${set.name}${selected}`)}` +
        (query.count ? `,"@odata.count":${page.total}` : '') +
        ',"value":[';
      const tail = () => `]${link ? `,"@odata.nextLink":${JSON.stringify(link)}` : ''}}`;
      reply.header('odata-version', '4.0').type(JSON_TYPE).header('cache-control', 'no-store');
      if (preferred !== null) reply.header('preference-applied', `odata.maxpagesize=${page.pageSize}`);
      return sendStream(
        reply,
        async (body) => {
          const rows = new RowsToArray(head, tail);
          rows.pipe(body);
          if (!empty) return page.write(rows);
          rows.end();
          return { records: 0, bytes: 0 };
        },
        { ...audit, exportId: page.exportId, action: 'export.page' },
      );
    },
  );

  app.get(
    '/odata/v4/:set/$count',
    {
      onRequest: app.authenticate,
      schema: {
        ...common,
        summary: 'The number of rows of an entity set that match $filter',
        params: SetParams,
        response: {
          200: {
            description: 'The count',
            headers: responseHeaders('OData-Version'),
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request, reply) => {
      const set = entitySetOf(request.params.set);
      const options = singleValues(request);
      for (const name of ['$select', '$orderby', '$top', '$skip', '$skiptoken', '$count'])
        if (options[name] !== undefined) throw invalid(name, 'does not apply to $count');
      const { page } = await plan(request, set, readFeedQuery(set, options), 1);
      reply.header('odata-version', '4.0').type('text/plain;charset=utf-8');
      return String(page.total);
    },
  );
};
