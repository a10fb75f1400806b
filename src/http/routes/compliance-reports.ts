import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import {
  COMPLIANCE_REPORT_CSP,
  complianceReport,
  complianceReportCsv,
  complianceReportHtml,
} from '../../privacy/compliance-report.ts';
import { SELF_AUDIT_CSP, selfAudit, selfAuditHtml, selfAuditMarkdown } from '../../privacy/self-audit.ts';
import { problemResponses } from '../problem.ts';
import { responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Count = Type.Integer({ minimum: 0 });
const Counts = Type.Record(Type.String(), Count);
const NullableHours = Type.Union([Type.Number({ minimum: 0 }), Type.Null()]);

const Report = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    tenant_name: Type.String(),
    period: Type.String({ examples: ['2026-11'] }),
    time_zone: Type.String({ examples: ['Europe/Berlin'] }),
    from: Type.String({ format: 'date-time', description: "The month's first instant" }),
    to: Type.String({ format: 'date-time', description: 'The first instant after the month (exclusive)' }),
    exports: Type.Object(
      { requested: Count, completed: Count, failed: Count, downloads: Count },
      { additionalProperties: false },
    ),
    dsar: Type.Object(
      {
        received: { ...Counts, description: 'Requests received in the month, by type' },
        completed: { ...Counts, description: 'Requests completed in the month, by type' },
        median_hours_to_complete: NullableHours,
        worst_hours_to_complete: NullableHours,
        overdue: {
          ...Count,
          description: "Completed after their deadline, or open past it at the month's end",
        },
      },
      { additionalProperties: false },
    ),
    erasures: Type.Object(
      { requests_completed: Count, ledger_entries: Count },
      { additionalProperties: false },
    ),
    retention: {
      ...Counts,
      description:
        'Sweeps started in the month, failed sweeps, and the sum of each count their progress recorded ' +
        '(deleted, anonymized, archived, cascaded, …)',
    },
    legal_holds: Type.Object(
      { placed: Count, released: Count, active_at_end: Count },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

const Score = Type.Object(
  {
    score: Type.Integer({ minimum: 1, maximum: 10 }),
    rule: Type.String(),
    inputs: Type.Record(Type.String(), Type.Number()),
  },
  { additionalProperties: false },
);

const SelfAudit = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    generated_at: Type.String({ format: 'date-time' }),
    data_portability_score: Score,
    gdpr_article_20_compliance: Score,
    export_completeness: Score,
    export_coverage: Type.Array(
      Type.Object(
        {
          category: Type.String(),
          tables: Type.Array(Type.String()),
          personal: Type.Boolean(),
          exportable: Type.Boolean(),
          formats: Type.Array(Type.String()),
          self_service: Type.Boolean(),
          api: Type.Boolean(),
          datasets: Type.Array(Type.String()),
        },
        { additionalProperties: false },
      ),
    ),
    deletion_coverage: Type.Array(
      Type.Object(
        {
          category: Type.String(),
          personal: Type.Boolean(),
          deletable: Type.Boolean(),
          erasure: Type.String({ description: 'delete, anonymize, `retain: <basis>`, or none' }),
          cascade: Type.Boolean(),
          backup_purge: Type.String({ examples: ['erasure ledger replayed on every restore'] }),
          third_party: Type.String({ examples: ['automatic', 'manual: Print shop', 'none registered'] }),
          retention: Type.String(),
        },
        { additionalProperties: false },
      ),
    ),
    datasets: Type.Array(
      Type.Object(
        {
          name: Type.String(),
          kind: Type.Enum(['table', 'computed', 'document']),
          source: Type.String(),
          formats: Type.Array(Type.String()),
          in_package: Type.Boolean(),
        },
        { additionalProperties: false },
      ),
    ),
    critical_gaps: Type.Array(
      Type.Object(
        {
          gap: Type.String(),
          regulation: Type.String(),
          risk: Type.String(),
          remediation: Type.String(),
          priority: Type.Enum(['Critical', 'High', 'Medium', 'Low']),
        },
        { additionalProperties: false },
      ),
    ),
    capabilities: Type.Object(
      {
        privacy_center: Type.Boolean(),
        dsar_intake: Type.Boolean(),
        signed_receipts: Type.Boolean(),
        tamper_evident_audit_trail: Type.Boolean(),
        backups: Type.Boolean(),
        schedules: Count,
        webhooks: Count,
        processors: Count,
        legal_holds: Count,
        overdue_requests: Count,
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

const tags = ['compliance'];
const security = [{ bearer: [] }];

/**
 * The representation a request asks for: `format` when given, else the first of `offered`
 * (by media type) that the Accept header ranks highest; JSON for `*` and for no Accept.
 */
function negotiated<F extends string>(
  format: F | undefined,
  accept: string | undefined,
  offered: readonly (readonly [F, string])[],
): F {
  if (format) return format;
  let best: { format: F; q: number } | undefined;
  for (const part of (accept ?? '').split(',')) {
    const [range = '', ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    const qParam = params.find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (!range || !(q > 0)) continue;
    for (const [name, type] of offered) {
      const matches = range === type || range === '*/*' || range === `${type.split('/')[0]}/*`;
      if (matches && (!best || q > best.q)) best = { format: name, q };
      if (matches) break;
    }
  }
  return best?.format ?? offered[0]![0];
}

/** The monthly compliance report and the portability self-audit (docs/compliance.md). */
export const complianceReportRoutes: RoutePlugin = async (app, { database, now }) => {
  const clock = now ?? (() => new Date());

  app.get(
    '/api/v1/compliance/report',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'What Ferry recorded in one month (admin, manager)',
        description:
          'Exports and downloads, data subject requests received and completed by type with the median and worst ' +
          'time to complete, overdue requests, erasures, retention sweeps and legal holds, for a calendar month in ' +
          "the tenant's time zone. `format=csv` gives `metric,value` rows; `format=html` a printable page. " +
          'Without `format`, the Accept header chooses (application/json, text/csv, text/html). A period that is ' +
          'not YYYY-MM, or has not begun, is a 400.',
        security,
        querystring: Type.Object(
          {
            period: Type.String({
              minLength: 1,
              maxLength: 20,
              description: "YYYY-MM, a calendar month in the tenant's time zone",
              examples: ['2026-11'],
            }),
            format: Type.Optional(
              Type.Enum(['json', 'csv', 'html'], {
                description: 'json by default, or as the Accept header asks',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The report',
            headers: responseHeaders('Content-Disposition'),
            content: {
              'application/json': { schema: Report },
              'text/csv': { schema: Type.String() },
              'text/html': { schema: Type.String() },
            },
          },
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      const report = await complianceReport(database, auth.tenantId, request.query.period, clock());
      const format = negotiated(request.query.format, request.headers.accept, [
        ['json', 'application/json'],
        ['csv', 'text/csv'],
        ['html', 'text/html'],
      ] as const);
      if (format === 'csv')
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="compliance-report-${report.period}.csv"`)
          .send(complianceReportCsv(report));
      if (format === 'html')
        return reply
          .header('content-security-policy', COMPLIANCE_REPORT_CSP)
          .type('text/html; charset=utf-8')
          .send(complianceReportHtml(report));
      return report;
    },
  );

  app.get(
    '/api/v1/compliance/self-audit',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'The data portability self-audit, computed from what Ferry has (admin, manager)',
        description:
          'In the output format of the portability audit checklist: three scores with the rule and inputs that ' +
          'produced them, the export and deletion coverage tables, the datasets and their formats, the gaps with ' +
          'regulation, risk and remediation, and the configured capabilities. `format=md` or `format=html` for a ' +
          'document; without `format`, the Accept header chooses (application/json, text/markdown, text/html).',
        security,
        querystring: Type.Object(
          {
            format: Type.Optional(
              Type.Enum(['json', 'md', 'html'], {
                description: 'json by default, or as the Accept header asks',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'The self-audit',
            content: {
              'application/json': { schema: SelfAudit },
              'text/markdown': { schema: Type.String() },
              'text/html': { schema: Type.String() },
            },
          },
          ...problemResponses(400, 401, 403, 429),
        },
      },
    },
    async (request, reply) => {
      const auth = request.auth!;
      authorize(auth, 'compliance:read');
      const audit = await selfAudit({ database, tenantId: auth.tenantId, now: clock });
      const format = negotiated(request.query.format, request.headers.accept, [
        ['json', 'application/json'],
        ['md', 'text/markdown'],
        ['html', 'text/html'],
      ] as const);
      if (format === 'md') return reply.type('text/markdown; charset=utf-8').send(selfAuditMarkdown(audit));
      if (format === 'html')
        return reply
          .header('content-security-policy', SELF_AUDIT_CSP)
          .type('text/html; charset=utf-8')
          .send(selfAuditHtml(audit));
      return audit;
    },
  );
};
