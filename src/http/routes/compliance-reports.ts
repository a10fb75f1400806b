import { Type } from 'typebox';
import { authorize } from '../../auth/policy.ts';
import {
  complianceReport,
  complianceReportCsv,
  complianceReportHtml,
} from '../../privacy/compliance-report.ts';
import { selfAudit, selfAuditHtml, selfAuditMarkdown } from '../../privacy/self-audit.ts';
import { problemResponses } from '../problem.ts';
import { responseHeaders } from '../responses.ts';
import type { RoutePlugin } from '../types.ts';

const Counts = Type.Record(Type.String(), Type.Integer({ minimum: 0 }));
const NullableNumber = Type.Union([Type.Number(), Type.Null()]);

const Report = Type.Object(
  {
    tenant_id: Type.String({ format: 'uuid' }),
    period: Type.String({ examples: ['2026-11'] }),
    time_zone: Type.String(),
    from: Type.String({ format: 'date-time' }),
    to: Type.String({ format: 'date-time' }),
    exports: Counts,
    dsar: Type.Object(
      {
        received: Counts,
        completed: Counts,
        median_hours_to_complete: NullableNumber,
        worst_hours_to_complete: NullableNumber,
        overdue: Type.Integer({ minimum: 0 }),
      },
      { additionalProperties: false },
    ),
    erasures: Counts,
    retention: Counts,
    legal_holds: Counts,
  },
  { additionalProperties: false },
);

const Score = Type.Object(
  { score: Type.Integer({ minimum: 1, maximum: 10 }), rule: Type.String(), inputs: Counts },
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
          deletable: Type.Boolean(),
          erasure: Type.String(),
          cascade: Type.Boolean(),
          backup_purge: Type.Boolean(),
          third_party: Type.String(),
          retention: Type.String(),
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
    capabilities: Type.Record(Type.String(), Type.Union([Type.Boolean(), Type.Integer()])),
  },
  { additionalProperties: false },
);

const tags = ['compliance'];
const security = [{ bearer: [] }];

/** The monthly compliance report and the portability self-audit (docs/compliance.md). */
export const complianceReportRoutes: RoutePlugin = async (app, { database, now }) => {
  const clock = now ?? (() => new Date());

  app.get(
    '/api/v1/compliance/report',
    {
      preHandler: app.authenticate,
      schema: {
        tags,
        summary: 'What Ferry recorded in one month (admin, manager)',
        description:
          'Exports and downloads, data subject requests received and completed by type with the median and worst ' +
          'time to complete, overdue requests, erasures, retention sweeps and legal holds, for a calendar month in ' +
          "the tenant's time zone. `format=csv` gives `metric,value` rows; `format=html` a printable page.",
        security,
        querystring: Type.Object(
          {
            period: Type.String({
              minLength: 1,
              maxLength: 20,
              description: 'YYYY-MM',
              examples: ['2026-11'],
            }),
            format: Type.Optional(Type.Enum(['json', 'csv', 'html'], { default: 'json' })),
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
      if (request.query.format === 'csv')
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="compliance-${report.period}.csv"`)
          .send(complianceReportCsv(report));
      if (request.query.format === 'html')
        return reply.type('text/html; charset=utf-8').send(complianceReportHtml(report));
      return report;
    },
  );

  app.get(
    '/api/v1/compliance/self-audit',
    {
      preHandler: app.authenticate,
      schema: {
        tags,
        summary: 'The data portability self-audit, computed from what Ferry has (admin, manager)',
        description:
          'In the output format of the portability audit checklist: three scores with the rule that produced ' +
          'them, the export and deletion coverage tables, and the gaps. `format=md` or `format=html` for a document.',
        security,
        querystring: Type.Object(
          { format: Type.Optional(Type.Enum(['json', 'md', 'html'], { default: 'json' })) },
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
      if (request.query.format === 'md')
        return reply.type('text/markdown; charset=utf-8').send(selfAuditMarkdown(audit));
      if (request.query.format === 'html')
        return reply.type('text/html; charset=utf-8').send(selfAuditHtml(audit));
      return audit;
    },
  );
};
