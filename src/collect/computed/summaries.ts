import { REFERENCE_DATASETS } from '../../datamap/reference-datasets.ts';
import { literal } from '../../db/database.ts';
import { invalid } from '../../domain/ferry-error.ts';
import {
  checkChoice,
  checkDate,
  checkTenantId,
  checkTimezone,
  localRange,
  rangeConditions,
} from './options.ts';

/**
 * The aggregation datasets (docs/aggregations.md): `rollups` (one row per period and site),
 * `site_summary` (one row per site over the range) and `topic_summary` (one row per topic over
 * the range). Each has the same metrics over the conversations it groups, and for each metric
 * two trend columns against the previous period: `<metric>_change` (this value minus the
 * previous one) and `<metric>_change_pct` (that change in percent of the previous value). The
 * previous period of the first row is read from the database, before the range. Each query is
 * a FROM clause for CopyQuery, so the export engine streams it like a table.
 */

export const ROLLUP_GRANULARITIES = ['daily', 'weekly', 'monthly'] as const;
export type RollupGranularity = (typeof ROLLUP_GRANULARITIES)[number];

interface Metric {
  readonly name: string;
  /** Aggregate over the conversations `c` of one group. */
  readonly expr: string;
  /** A count: zero (not empty) when the group had no conversation. */
  readonly count: boolean;
}

/** The metrics every aggregation has; the dataset fields are checked against them at load. */
export const SUMMARY_METRICS: readonly Metric[] = [
  { name: 'conversations', expr: 'count(c.id)', count: true },
  { name: 'messages', expr: 'coalesce(sum(c.message_count), 0)', count: true },
  { name: 'visitors', expr: 'count(DISTINCT c.session_id)', count: true },
  {
    name: 'resolution_rate',
    expr: "round((count(*) FILTER (WHERE c.status = 'resolved'))::numeric / nullif(count(c.id), 0), 4)",
    count: false,
  },
  {
    name: 'escalation_rate',
    expr: 'round((count(*) FILTER (WHERE c.escalated))::numeric / nullif(count(c.id), 0), 4)',
    count: false,
  },
  { name: 'satisfaction_avg', expr: 'round(avg(c.satisfaction_score), 2)', count: false },
];

/** Every metric with its two trend columns, in the declared order. */
export function metricColumns(): string[] {
  return SUMMARY_METRICS.flatMap((m) => [m.name, `${m.name}_change`, `${m.name}_change_pct`]);
}

const BASE: Record<'rollups' | 'site_summary' | 'topic_summary', readonly string[]> = {
  rollups: ['date', 'site_url'],
  site_summary: ['site_url', 'site_name', 'first_conversation_at', 'last_conversation_at'],
  topic_summary: ['topic', 'share_of_conversations'],
};

// The data map declares the fields; the SQL here yields exactly those, in that order.
for (const [name, base] of Object.entries(BASE)) {
  const declared = (REFERENCE_DATASETS[name]?.fields.map((f) => f.name) ?? []).join(', ');
  const built = [...base, ...metricColumns()].join(', ');
  if (declared !== built)
    throw new Error(`${name}: the fields (${declared}) are not the SQL's columns (${built})`);
}

const aggregates = () => SUMMARY_METRICS.map((m) => `${m.expr} AS ${m.name}`).join(',\n    ');

/**
 * The metric and trend columns of a group `a` against its previous period `p` (a LEFT JOIN:
 * no row there means no conversation). `hasPrevious` false: there is no previous period to
 * compare with, and the trend columns are empty.
 */
function metricOutput(hasPrevious: boolean): string {
  return SUMMARY_METRICS.map((m) => {
    const current = m.count ? `coalesce(a.${m.name}, 0)` : `a.${m.name}`;
    const previous = !hasPrevious ? 'NULL::numeric' : m.count ? `coalesce(p.${m.name}, 0)` : `p.${m.name}`;
    return [
      `${current} AS ${m.name}`,
      `${current} - ${previous} AS ${m.name}_change`,
      `round(100 * (${current} - ${previous})::numeric / nullif(${previous}, 0), 2) AS ${m.name}_change_pct`,
    ].join(',\n  ');
  }).join(',\n  ');
}

export interface SummaryOptions {
  tenantId: string;
  /** IANA time zone the days and periods are cut in. */
  timezone: string;
  /** First day (YYYY-MM-DD in the time zone), inclusive. */
  from?: string | undefined;
  /** Last day (YYYY-MM-DD in the time zone), inclusive. */
  to?: string | undefined;
  /** Only these sites (by URL); all sites when absent or empty. */
  siteUrls?: readonly string[] | undefined;
}

export interface RollupOptions extends SummaryOptions {
  granularity: RollupGranularity;
}

function checked(options: SummaryOptions) {
  const sites = options.siteUrls ?? [];
  if (!Array.isArray(sites) || sites.some((s) => typeof s !== 'string'))
    throw invalid('site_urls', 'must be a list of site URLs');
  return {
    tenant: literal(checkTenantId(options.tenantId)),
    tz: literal(checkTimezone(options.timezone)),
    range: localRange(options.timezone, options.from, options.to),
    from: checkDate('from', options.from),
    to: checkDate('to', options.to),
    sites: sites.length > 0 ? ` AND s.url IN (${sites.map((u) => literal(u)).join(', ')})` : '',
  };
}

const UNIT: Record<RollupGranularity, string> = { daily: 'day', weekly: 'week', monthly: 'month' };

/**
 * The bounds of a rollup: its periods are whole (a week or month the range touches counts in
 * full), and the period before the first is read too, for its trend columns.
 */
function rollupBounds(options: RollupOptions) {
  const c = checked(options);
  const unit = UNIT[checkChoice('granularity', options.granularity, ROLLUP_GRANULARITIES)];
  if (c.from && c.to && c.from > c.to) throw invalid('to', `must not be before from (${c.from})`);
  const firstPeriod = c.from ? `date_trunc('${unit}', ${literal(c.from)}::timestamp)` : null;
  const conditions = [
    ...(firstPeriod
      ? [`c.start_timestamp >= ((${firstPeriod} - interval '1 ${unit}') AT TIME ZONE ${c.tz})`]
      : []),
    ...(c.to
      ? [
          `c.start_timestamp < ((date_trunc('${unit}', ${literal(c.to)}::timestamp) + interval '1 ${unit}') AT TIME ZONE ${c.tz})`,
        ]
      : []),
  ];
  return { ...c, unit, firstPeriod, conditions: conditions.map((x) => ` AND ${x}`).join('') };
}

/** `FROM (<select>) t WHERE true{{KEY_RANGE}}`: one row per period and site with conversations. Key: date, site_url. */
export function rollupsSource(options: RollupOptions): { from: string; key: string[] } {
  const b = rollupBounds(options);
  const query = `WITH conv AS (
  SELECT c.id, c.session_id, c.message_count, c.status, c.escalated, c.satisfaction_score, s.url AS site_url,
    date_trunc('${b.unit}', c.start_timestamp AT TIME ZONE ${b.tz}) AS period
  FROM conversations c
  JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  WHERE c.tenant_id = ${b.tenant}${b.conditions}${b.sites}
),
agg AS (
  SELECT c.period, c.site_url,
    ${aggregates()}
  FROM conv c
  GROUP BY c.period, c.site_url
)
SELECT to_char(a.period, 'YYYY-MM-DD') AS date, a.site_url,
  ${metricOutput(true)}
FROM agg a
LEFT JOIN agg p ON p.site_url = a.site_url AND p.period = a.period - interval '1 ${b.unit}'${
    b.firstPeriod ? `\nWHERE a.period >= ${b.firstPeriod}` : ''
  }`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.date', 't.site_url'] };
}

export function rollupsEstimate(options: RollupOptions): string {
  const b = rollupBounds(options);
  return `SELECT count(*)::int AS n FROM (
  SELECT DISTINCT date_trunc('${b.unit}', c.start_timestamp AT TIME ZONE ${b.tz}), c.site_id
  FROM conversations c JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  WHERE c.tenant_id = ${b.tenant}${b.conditions}${b.sites}
) x`;
}

/**
 * The range and the range of as many days just before it, the previous period of a summary;
 * none without both ends of the range.
 */
function summaryBounds(options: SummaryOptions) {
  const c = checked(options);
  const previous =
    c.range.lower && c.from && c.to
      ? rangeConditions('c.start_timestamp', {
          lower: `((${literal(c.from)}::date - (${literal(c.to)}::date - ${literal(c.from)}::date + 1))::timestamp AT TIME ZONE ${c.tz})`,
          upper: c.range.lower,
        })
      : null;
  return { ...c, current: rangeConditions('c.start_timestamp', c.range), previous };
}

/** `FROM (<select>) t WHERE true{{KEY_RANGE}}`: one row per site of the tenant. Key: site_url, the site's id. */
export function siteSummarySource(options: SummaryOptions): { from: string; key: string[] } {
  const b = summaryBounds(options);
  const group = (conditions: string) => `SELECT c.site_id,
    ${aggregates()},
    min(c.start_timestamp) AS first_conversation_at,
    max(c.start_timestamp) AS last_conversation_at
  FROM conversations c
  WHERE c.tenant_id = ${b.tenant}${conditions}
  GROUP BY c.site_id`;
  const query = `WITH cur AS (
  ${group(b.current)}
)${b.previous ? `,\nprev AS (\n  ${group(b.previous)}\n)` : ''}
SELECT s.url AS site_url, s.name AS site_name, a.first_conversation_at, a.last_conversation_at,
  ${metricOutput(b.previous !== null)},
  s.id AS _site_id
FROM sites s
LEFT JOIN cur a ON a.site_id = s.id${b.previous ? '\nLEFT JOIN prev p ON p.site_id = s.id' : ''}
WHERE s.tenant_id = ${b.tenant}${b.sites}`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.site_url', 't._site_id'] };
}

export function siteSummaryEstimate(options: SummaryOptions): string {
  const b = summaryBounds(options);
  return `SELECT count(*)::int AS n FROM sites s WHERE s.tenant_id = ${b.tenant}${b.sites}`;
}

/**
 * `FROM (<select>) t WHERE true{{KEY_RANGE}}`: one row per topic detected in a conversation of
 * the range (a conversation counts once per distinct topic). Key: topic.
 */
export function topicSummarySource(options: SummaryOptions): { from: string; key: string[] } {
  const b = summaryBounds(options);
  const conversations = (
    conditions: string,
  ) => `SELECT c.id, c.session_id, c.message_count, c.status, c.escalated,
    c.satisfaction_score, c.topics_detected
  FROM conversations c
  JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  WHERE c.tenant_id = ${b.tenant}${conditions}${b.sites}`;
  const byTopic = (source: string) => `SELECT tp.topic,
    ${aggregates()}
  FROM ${source} c
  CROSS JOIN LATERAL (SELECT DISTINCT x.topic FROM unnest(c.topics_detected) AS x(topic) WHERE x.topic IS NOT NULL) tp
  GROUP BY tp.topic`;
  const query = `WITH cur_conv AS (
  ${conversations(b.current)}
),
cur AS (
  ${byTopic('cur_conv')}
),
total AS (SELECT count(*) AS n FROM cur_conv)${
    b.previous ? `,\nprev AS (\n  ${byTopic(`(${conversations(b.previous)})`)}\n)` : ''
  }
SELECT a.topic,
  round(a.conversations::numeric / nullif(total.n, 0), 4) AS share_of_conversations,
  ${metricOutput(b.previous !== null)}
FROM cur a
CROSS JOIN total${b.previous ? '\nLEFT JOIN prev p ON p.topic = a.topic' : ''}`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.topic'] };
}

export function topicSummaryEstimate(options: SummaryOptions): string {
  const b = summaryBounds(options);
  return `SELECT count(DISTINCT x.topic)::int AS n
  FROM conversations c
  JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  CROSS JOIN LATERAL unnest(c.topics_detected) AS x(topic)
  WHERE c.tenant_id = ${b.tenant}${b.current}${b.sites}`;
}
