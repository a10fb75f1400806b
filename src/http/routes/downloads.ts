import type { FastifyReply, FastifyRequest } from 'fastify';
import { type Static, Type } from 'typebox';
import { AUDIT_ACTIONS, recordAudit } from '../../auth/audit.ts';
import { addressAllowed, refuseAddress, tenantAccess } from '../../auth/ip-allowlist.ts';
import { DOWNLOAD_PATH } from '../../export-requests/links.ts';
import { parseRange } from '../../export-requests/range.ts';
import {
  type ExportFileRow,
  type ExportRow,
  exportJobs,
  tenantExports,
} from '../../export-requests/repository.ts';
import { assertDownloadable } from '../../export-requests/service.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import { contentDisposition } from '../../store/content-disposition.ts';
import { problemResponse, problemResponses } from '../problem.ts';
import { responseHeaders } from '../responses.ts';
import type { RouteDeps, RoutePlugin } from '../types.ts';

const Params = Type.Object({
  exportId: Type.String({ maxLength: 64, description: 'Export id' }),
  fileId: Type.String({ maxLength: 64, description: 'File id' }),
});
const Query = Type.Object(
  {
    expires: Type.String({ maxLength: 20, description: 'Expiry of the link, in Unix seconds' }),
    bound: Type.Optional(
      Type.Literal('1', {
        description: "The link is bound to the account's IP allow-list (`bind_ip_allowlist`); signed as well",
      }),
    ),
    signature: Type.String({ maxLength: 128, description: 'HMAC-SHA256 signature of the link' }),
  },
  { additionalProperties: false },
);
const RangeHeaders = Type.Object({
  range: Type.Optional(
    Type.String({ maxLength: 200, description: 'One byte range, `bytes=first-` or `bytes=first-last`' }),
  ),
  'if-range': Type.Optional(
    Type.String({
      maxLength: 200,
      description: 'The ETag: the range applies only while the file is unchanged',
    }),
  ),
});
/** The file as stored: its own content type (text/csv, application/gzip, application/zip, ...). */
const File = { '*/*': { schema: Type.Unsafe<unknown>({ type: 'string', format: 'binary' }) } };
const FILE_HEADERS = [
  'Content-Disposition',
  'Content-Length',
  'Accept-Ranges',
  'ETag',
  'Repr-Digest',
  'Cache-Control',
  'X-Content-Type-Options',
] as const;

interface Resolved {
  row: ExportRow;
  file: ExportFileRow;
}

/**
 * Signed downloads: the links handed out by `GET /api/v1/exports/{id}/download`.
 * No API key: the signature is the credential. Supports single byte ranges (206,
 * `Accept-Ranges`, `Content-Range`, 416 outside the file, `If-Range` on the ETag),
 * so a broken download resumes where it stopped. A tampered or expired link answers
 * 403 `link_invalid`; a link to an export whose files were removed answers 410. A link bound
 * to the tenant's IP allow-list answers 403 `ip_not_allowed` from an address outside it.
 * A download that starts at the first byte is counted and audited with IP and user agent.
 */
export const downloadRoutes: RoutePlugin = async (app, deps) => {
  const now = deps.now ?? (() => new Date());

  async function resolve(
    request: FastifyRequest<{ Params: Static<typeof Params>; Querystring: Static<typeof Query> }>,
  ): Promise<Resolved> {
    const { exportId, fileId } = request.params;
    const { expires, signature } = request.query;
    const invalidLink = () =>
      new FerryError(
        'link_invalid',
        'the download link is not valid: it was altered or cut; request a new link',
      );
    const signer = requireSigner(deps);
    if (!/^\d{1,15}$/.test(expires)) throw invalidLink();
    // The signature covers the export's tenant, so the export is looked up first; an unknown
    // export answers like a bad signature, so ids cannot be probed.
    const row = /^[0-9a-f-]{36}$/.test(exportId) ? await exportJobs(deps.database).load(exportId) : undefined;
    const bound = request.query.bound === '1';
    const target = { tenantId: row?.tenant_id ?? '', exportId, fileId, expires: Number(expires), bound };
    if (!row || !signer.verify(target, signature)) throw invalidLink();
    const at = now();
    if (bound) {
      const { ipAllowlist } = await tenantAccess(deps.database, row.tenant_id);
      if (!addressAllowed(ipAllowlist, request.ip)) {
        const userAgent = request.headers['user-agent'];
        throw await refuseAddress(deps.database, {
          tenantId: row.tenant_id,
          actor: 'download_link',
          ip: request.ip ?? null,
          userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null,
          list: 'tenant',
          route: `${request.method} ${DOWNLOAD_PATH}`,
          occurredAt: at,
        });
      }
    }
    // A genuine link to an export whose files are gone says so (410) even after its own expiry.
    assertDownloadable(row, at);
    if (Number(expires) * 1000 <= at.getTime())
      throw new FerryError(
        'link_invalid',
        `the download link expired at ${new Date(Number(expires) * 1000).toISOString()}; request a new one`,
      );
    const file = (await tenantExports(deps.database, row.tenant_id).files([row.id])).find(
      (f) => f.id === fileId,
    );
    if (!file) throw new FerryError('gone', `the file of this link no longer exists in export ${row.id}`);
    return { row, file };
  }

  const schema = {
    tags: ['exports'],
    summary: 'Download an export file (signed link)',
    description:
      'The URL from `GET /api/v1/exports/{id}/download`. Send `Range: bytes=N-` to resume a broken download.',
    params: Params,
    querystring: Query,
    headers: RangeHeaders,
    response: {
      200: { description: 'The whole file', headers: responseHeaders(...FILE_HEADERS), content: File },
      206: {
        description: 'The requested byte range of the file',
        headers: responseHeaders(...FILE_HEADERS, 'Content-Range'),
        content: File,
      },
      416: {
        ...problemResponse(416),
        headers: responseHeaders('Accept-Ranges', 'Content-Range'),
      },
      ...problemResponses(400, 403, 410, 503),
    },
  };

  app.get(
    `${DOWNLOAD_PATH}/:exportId/:fileId`,
    { schema, exposeHeadRoute: false },
    async (request, reply) => {
      const { row, file } = await resolve(request);
      const store = requireStore(deps);
      const size = Number(file.bytes);
      const etag = `"${file.sha256}"`;
      const ifRange = request.headers['if-range'];
      const range = parseRange(request.headers.range, size, {
        ifRange: typeof ifRange === 'string' ? ifRange : undefined,
        etag,
      });
      if (range.kind === 'unsatisfiable') {
        reply.header('accept-ranges', 'bytes').header('content-range', `bytes */${size}`);
        throw new FerryError(
          'range_not_satisfiable',
          `the range ${request.headers.range} lies outside the file, which has ${size} bytes`,
        );
      }
      fileHeaders(reply, file, etag);
      const partial = range.kind === 'partial';
      const body = await store.get(
        file.storage_key,
        partial ? { start: range.start, end: range.end } : undefined,
      );
      if (!partial || range.start === 0) await countDownload(deps, request, row, file, now());
      if (partial) {
        reply
          .code(206)
          .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
          .header('content-length', String(range.end - range.start + 1));
      } else {
        reply.code(200).header('content-length', String(size));
      }
      return reply.send(body);
    },
  );

  app.head(
    `${DOWNLOAD_PATH}/:exportId/:fileId`,
    {
      config: { swagger: { exposeHeadRoute: true } },
      schema: {
        tags: schema.tags,
        summary: 'Size, checksum and name of an export file (signed link)',
        description: 'The headers of the download without the file; not counted as a download.',
        params: Params,
        querystring: Query,
        response: {
          200: { description: 'The whole file', headers: responseHeaders(...FILE_HEADERS), content: File },
          ...problemResponses(400, 403, 410),
        },
      },
    },
    async (request, reply) => {
      const { file } = await resolve(request);
      fileHeaders(reply, file, `"${file.sha256}"`);
      return reply
        .code(200)
        .header('content-length', String(Number(file.bytes)))
        .send();
    },
  );
};

function fileHeaders(reply: FastifyReply, file: ExportFileRow, etag: string): void {
  reply
    .header('accept-ranges', 'bytes')
    .header('etag', etag)
    .header('content-type', file.content_type)
    .header('content-disposition', contentDisposition(file.name))
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', 'private, no-store')
    .header('repr-digest', `sha-256=:${Buffer.from(file.sha256, 'hex').toString('base64')}:`);
}

function requireSigner(deps: RouteDeps) {
  if (!deps.signer)
    throw new FerryError(
      'service_unavailable',
      'this server has no link signer; downloads are not served here',
    );
  return deps.signer;
}

function requireStore(deps: RouteDeps) {
  if (!deps.store)
    throw new FerryError(
      'service_unavailable',
      'this server has no file storage; downloads are not served here',
    );
  return deps.store;
}

async function countDownload(
  deps: RouteDeps,
  request: FastifyRequest,
  row: ExportRow,
  file: ExportFileRow,
  at: Date,
): Promise<void> {
  const count = await tenantExports(deps.database, row.tenant_id).countDownload(row.id);
  const userAgent = request.headers['user-agent'];
  await recordAudit(deps.database, {
    tenantId: row.tenant_id,
    actor: 'download_link',
    action: AUDIT_ACTIONS.exportDownloaded,
    dataType: row.datasets.join(','),
    fileBytes: Number(file.bytes),
    downloadCount: count,
    ip: request.ip ?? null,
    userAgent: typeof userAgent === 'string' ? userAgent : null,
    success: true,
    targetId: row.id,
    occurredAt: at,
  });
}
