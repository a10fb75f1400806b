import { REFERENCE_DATASETS } from '../../datamap/reference-datasets.ts';
import { literal } from '../../db/database.ts';
import { invalid } from '../../domain/ferry-error.ts';
import { checkChoice, checkTenantId, checkTimezone, localRange, rangeConditions } from './options.ts';

/**
 * The `analytics` dataset: one row per period and site with conversation, message,
 * visitor and conversion metrics, computed in the report time zone. The query is a
 * FROM clause for CopyQuery, so the export engine streams it with COPY like a table.
 * Definitions: docs/metrics.md (and the field descriptions in the data map).
 */

export const ANALYTICS_GRANULARITIES = ['hourly', 'daily', 'weekly', 'monthly'] as const;
export type AnalyticsGranularity = (typeof ANALYTICS_GRANULARITIES)[number];

export const ANALYTICS_METRIC_GROUPS = ['performance', 'attribution', 'revenue', 'all'] as const;
export type MetricGroup = (typeof ANALYTICS_METRIC_GROUPS)[number];

export interface AnalyticsOptions {
  tenantId: string;
  /** IANA time zone the periods are cut in. */
  timezone: string;
  granularity: AnalyticsGranularity;
  metrics: readonly MetricGroup[];
  /** First day (YYYY-MM-DD in the time zone), inclusive. */
  from?: string | undefined;
  /** Last day (YYYY-MM-DD in the time zone), inclusive. */
  to?: string | undefined;
  /** Only these sites (by URL); all sites when absent or empty. */
  siteUrls?: readonly string[] | undefined;
}

/** Where a metric is computed: a CTE of the query, joined to the per-period rows. */
type Source = 'conv' | 'msg' | 'topics' | 'returning';

interface Metric {
  readonly groups: readonly Exclude<MetricGroup, 'all'>[];
  readonly source: Source;
  /** Aggregate over the source CTE's rows for one period and site. */
  readonly expr: string;
  /** Value when the source has no row for the period and site. */
  readonly fill?: string;
}

const AI = "m.sender_type = 'ai'";
const rate = (condition: string) => `round((count(*) FILTER (WHERE ${condition}))::numeric / count(*), 4)`;
const percentage = (condition: string) =>
  `round(100 * (count(*) FILTER (WHERE ${condition}))::numeric / count(*), 2)`;
const aiRate = (condition: string) =>
  `round((count(*) FILTER (WHERE ${AI} AND ${condition}))::numeric / nullif(count(m.confidence_score) FILTER (WHERE ${AI}), 0), 4)`;

/** Every metric column of the dataset; the keys must match the declared fields. */
const METRICS: Record<string, Metric> = {
  total_conversations: {
    groups: ['performance', 'attribution', 'revenue'],
    source: 'conv',
    expr: 'count(*)',
  },
  total_messages: { groups: ['performance'], source: 'conv', expr: 'sum(c.message_count)' },
  ai_messages: { groups: ['performance'], source: 'conv', expr: 'sum(c.ai_message_count)' },
  human_messages: { groups: ['performance'], source: 'conv', expr: 'sum(c.human_message_count)' },
  avg_response_time_seconds: {
    groups: ['performance'],
    source: 'msg',
    expr: "round(avg(extract(epoch FROM m.next_reply_at - m.created_at)) FILTER (WHERE m.sender_type = 'customer'), 2)",
  },
  avg_resolution_time_minutes: {
    groups: ['performance'],
    source: 'conv',
    expr: "round(avg(c.resolution_time_minutes) FILTER (WHERE c.status = 'resolved'), 2)",
  },
  escalation_rate: { groups: ['performance'], source: 'conv', expr: rate('c.escalated') },
  resolution_rate: { groups: ['performance'], source: 'conv', expr: rate("c.status = 'resolved'") },
  satisfaction_avg: { groups: ['performance'], source: 'conv', expr: 'round(avg(c.satisfaction_score), 2)' },
  satisfaction_responses: { groups: ['performance'], source: 'conv', expr: 'count(c.satisfaction_score)' },
  ai_confidence_avg: {
    groups: ['performance'],
    source: 'msg',
    expr: `round((avg(m.confidence_score) FILTER (WHERE ${AI}))::numeric, 4)`,
  },
  high_confidence_rate: { groups: ['performance'], source: 'msg', expr: aiRate('m.confidence_score > 0.8') },
  low_confidence_rate: { groups: ['performance'], source: 'msg', expr: aiRate('m.confidence_score < 0.5') },
  unique_visitors: { groups: ['attribution'], source: 'conv', expr: 'count(DISTINCT c.session_id)' },
  returning_visitors: { groups: ['attribution'], source: 'returning', expr: 'count(*)', fill: '0' },
  conversion_rate: { groups: ['revenue'], source: 'conv', expr: rate('v.id IS NOT NULL') },
  bounce_rate: {
    groups: ['attribution'],
    source: 'conv',
    expr: rate('c.customer_message_count = 1 AND c.ai_message_count = 0 AND c.human_message_count = 0'),
  },
  avg_session_duration: {
    groups: ['attribution'],
    source: 'conv',
    expr: 'round(avg(extract(epoch FROM c.end_timestamp - c.start_timestamp)), 2)',
  },
  mobile_percentage: {
    groups: ['attribution'],
    source: 'conv',
    expr: percentage("c.user_agent ~* '(mobile|android|iphone|ipad)'"),
  },
  international_percentage: {
    groups: ['attribution'],
    source: 'conv',
    expr: percentage('upper(c.country) <> upper(c.home_country)'),
  },
  after_hours_percentage: {
    groups: ['attribution'],
    source: 'conv',
    expr: percentage(
      "extract(isodow FROM c.local_start) > 5 OR c.local_start::time < '09:00' OR c.local_start::time >= '17:00'",
    ),
  },
  top_topics: {
    groups: ['performance'],
    source: 'topics',
    expr: '(array_agg(x.topic ORDER BY x.n DESC, x.topic COLLATE "C"))[1:5]',
    fill: "'{}'::text[]",
  },
  content_gap_topics: {
    groups: ['performance'],
    source: 'topics',
    expr: `coalesce((array_agg(x.topic ORDER BY x.gap_n DESC, x.topic COLLATE "C") FILTER (WHERE x.gap_n > 0))[1:5], '{}'::text[])`,
    fill: "'{}'::text[]",
  },
  custom_kpis: {
    groups: ['performance'],
    source: 'msg',
    expr: `jsonb_build_object('tokens_used', coalesce(sum(m.tokens_used), 0), 'avg_processing_time_ms', round(avg(m.processing_time_ms) FILTER (WHERE ${AI}), 2))`,
    fill: `jsonb_build_object('tokens_used', 0, 'avg_processing_time_ms', NULL)`,
  },
};

const BASE_COLUMNS = ['date', 'tenant_id', 'site_url'];

const FIELD_NAMES: readonly string[] = (() => {
  const names = REFERENCE_DATASETS['analytics']!.fields.map((f) => f.name);
  const declared = new Set(names);
  for (const name of [...BASE_COLUMNS, ...Object.keys(METRICS)]) {
    if (!declared.has(name)) throw new Error(`analytics: ${name} is not a field of the analytics dataset`);
  }
  for (const name of names) {
    if (!BASE_COLUMNS.includes(name) && !METRICS[name])
      throw new Error(`analytics: no SQL for field ${name}`);
  }
  return names;
})();

function checkMetrics(metrics: readonly MetricGroup[]): readonly MetricGroup[] {
  if (!Array.isArray(metrics) || metrics.length === 0) {
    throw invalid('metrics', 'choose at least one metric group', ANALYTICS_METRIC_GROUPS);
  }
  for (const group of metrics) checkChoice('metrics', group, ANALYTICS_METRIC_GROUPS);
  return metrics;
}

/** Columns (dataset field names) for the chosen metric groups, in the dataset's declared order. */
export function analyticsColumns(metrics: readonly MetricGroup[]): string[] {
  const groups = checkMetrics(metrics);
  const all = groups.includes('all');
  return FIELD_NAMES.filter((name) => {
    if (BASE_COLUMNS.includes(name)) return true;
    const metric = METRICS[name]!;
    return all || metric.groups.some((g) => groups.includes(g));
  });
}

const PERIOD: Record<AnalyticsGranularity, { unit: string; format: string }> = {
  hourly: { unit: 'hour', format: 'YYYY-MM-DD"T"HH24:00' },
  daily: { unit: 'day', format: 'YYYY-MM-DD' },
  weekly: { unit: 'week', format: 'YYYY-MM-DD' },
  monthly: { unit: 'month', format: 'YYYY-MM-DD' },
};

/**
 * The rows the analytics report will have, counted cheaply: the distinct (period, site)
 * pairs of the conversations in the range, without computing any metric. A SELECT that
 * yields `n`.
 */
export function analyticsEstimate(options: AnalyticsOptions): string {
  const tenant = literal(checkTenantId(options.tenantId));
  const tz = literal(checkTimezone(options.timezone));
  const granularity = checkChoice('granularity', options.granularity, ANALYTICS_GRANULARITIES);
  const range = localRange(options.timezone, options.from, options.to);
  const sites = options.siteUrls ?? [];
  const { unit } = PERIOD[granularity];
  return `SELECT count(*)::int AS n FROM (
  SELECT DISTINCT date_trunc('${unit}', c.start_timestamp AT TIME ZONE ${tz}), c.site_id
  FROM conversations c JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  WHERE c.tenant_id = ${tenant}${rangeConditions('c.start_timestamp', range)}${
    sites.length > 0 ? ` AND s.url IN (${sites.map((u) => literal(u)).join(', ')})` : ''
  }
) x`;
}

/**
 * The analytics query as a CopyQuery FROM clause: `FROM (<select>) t WHERE true{{KEY_RANGE}}`,
 * one row per period and site that had at least one conversation, with columns named
 * as the dataset fields (only those of the chosen metric groups). Key: date, site_url.
 */
export function analyticsSource(options: AnalyticsOptions): { from: string; key: string[] } {
  const tenant = literal(checkTenantId(options.tenantId));
  const tz = literal(checkTimezone(options.timezone));
  const granularity = checkChoice('granularity', options.granularity, ANALYTICS_GRANULARITIES);
  const columns = analyticsColumns(options.metrics);
  const range = localRange(options.timezone, options.from, options.to);
  const sites = options.siteUrls ?? [];
  if (!Array.isArray(sites) || sites.some((s) => typeof s !== 'string')) {
    throw invalid('site_urls', 'must be a list of site URLs');
  }
  const { unit, format } = PERIOD[granularity];

  const metrics = columns.filter((c) => METRICS[c]).map((name) => ({ name, ...METRICS[name]! }));
  const wants = (name: string) => columns.includes(name);
  const uses = (source: Source) => metrics.some((m) => m.source === source);
  const needsMessages = uses('msg') || wants('content_gap_topics');

  const ctes: string[] = [];
  // Conversations started in the range, with their period (local time, truncated).
  ctes.push(`conv AS (
  SELECT c.id, c.site_id, s.url AS site_url, c.customer_id, c.session_id, c.start_timestamp, c.end_timestamp,
    c.country, tn.home_country, c.user_agent, c.status, c.escalated, c.resolution_time_minutes,
    c.satisfaction_score, c.message_count, c.customer_message_count, c.ai_message_count,
    c.human_message_count, c.topics_detected,
    c.start_timestamp AT TIME ZONE ${tz} AS local_start,
    date_trunc('${unit}', c.start_timestamp AT TIME ZONE ${tz}) AS period
  FROM conversations c
  JOIN sites s ON s.id = c.site_id AND s.tenant_id = c.tenant_id
  JOIN tenants tn ON tn.id = c.tenant_id
  WHERE c.tenant_id = ${tenant}${rangeConditions('c.start_timestamp', range)}${
    sites.length > 0 ? ` AND s.url IN (${sites.map((u) => literal(u)).join(', ')})` : ''
  }
)`);

  if (wants('conversion_rate')) {
    // Conversations named by a revenue event within 30 x 24 hours after they started.
    const lower = range.lower ? ` AND r.occurred_at >= ${range.lower}` : '';
    const upper = range.upper ? ` AND r.occurred_at < ${range.upper} + interval '720 hours'` : '';
    ctes.push(`converted AS (
  SELECT DISTINCT c.id
  FROM revenue_events r
  CROSS JOIN LATERAL unnest(r.conversation_ids) AS u(conversation_id)
  JOIN conv c ON c.id = u.conversation_id
  WHERE r.tenant_id = ${tenant}${lower}${upper}
    AND r.occurred_at >= c.start_timestamp AND r.occurred_at < c.start_timestamp + interval '720 hours'
)`);
  }

  if (needsMessages) {
    // The next AI or human message after each message: a running min over the
    // conversation read backwards, so each partition is scanned once.
    const nextReply = wants('avg_response_time_seconds')
      ? `,
    min(CASE WHEN m.sender_type <> 'customer' THEN m.created_at END) OVER (
      PARTITION BY m.conversation_id ORDER BY m.created_at DESC, m.id DESC
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS next_reply_at`
      : '';
    ctes.push(`msg AS (
  SELECT c.period, c.site_url, m.conversation_id, m.created_at, m.sender_type, m.confidence_score,
    m.tokens_used, m.processing_time_ms${nextReply}
  FROM messages m
  JOIN conv c ON c.id = m.conversation_id
  WHERE m.tenant_id = ${tenant}
)`);
  }

  const msgMetrics = metrics.filter((m) => m.source === 'msg');
  if (msgMetrics.length > 0) {
    ctes.push(`msg_agg AS (
  SELECT m.period, m.site_url, ${msgMetrics.map((x) => `${x.expr} AS ${x.name}`).join(',\n    ')}
  FROM msg m
  GROUP BY m.period, m.site_url
)`);
  }

  if (uses('topics')) {
    const gap = wants('content_gap_topics');
    if (gap) {
      ctes.push(`conv_confidence AS (
  SELECT m.conversation_id, avg(m.confidence_score) AS confidence
  FROM msg m
  WHERE m.sender_type = 'ai'
  GROUP BY m.conversation_id
)`);
    }
    // Conversations per topic (a topic listed twice in one conversation counts once).
    ctes.push(`topic_counts AS (
  SELECT c.period, c.site_url, tp.topic, count(DISTINCT c.id) AS n${
    gap ? ',\n    count(DISTINCT c.id) FILTER (WHERE cc.confidence < 0.5) AS gap_n' : ''
  }
  FROM conv c
  CROSS JOIN LATERAL unnest(c.topics_detected) AS tp(topic)${
    gap ? '\n  LEFT JOIN conv_confidence cc ON cc.conversation_id = c.id' : ''
  }
  GROUP BY c.period, c.site_url, tp.topic
)`);
    const topicMetrics = metrics.filter((m) => m.source === 'topics');
    ctes.push(`topics AS (
  SELECT x.period, x.site_url, ${topicMetrics.map((m) => `${m.expr} AS ${m.name}`).join(', ')}
  FROM topic_counts x
  GROUP BY x.period, x.site_url
)`);
  }

  if (uses('returning')) {
    // A visitor is the customer when known, else the session of an anonymous visitor.
    // Two semi-joins so the customer side can use the conversations_customer index.
    ctes.push(`visitors AS (
  SELECT DISTINCT c.period, c.site_url, c.site_id, c.customer_id,
    CASE WHEN c.customer_id IS NULL THEN c.session_id END AS session_id,
    c.period AT TIME ZONE ${tz} AS period_start
  FROM conv c
)`);
    ctes.push(`returners AS (
  SELECT v.period, v.site_url, count(*) AS returning_visitors
  FROM (
    SELECT v.period, v.site_url FROM visitors v
    WHERE v.customer_id IS NOT NULL AND EXISTS (
      SELECT 1 FROM conversations p
      WHERE p.customer_id = v.customer_id AND p.tenant_id = ${tenant} AND p.site_id = v.site_id
        AND p.start_timestamp < v.period_start)
    UNION ALL
    SELECT v.period, v.site_url FROM visitors v
    WHERE v.customer_id IS NULL AND EXISTS (
      SELECT 1 FROM conversations p
      WHERE p.customer_id IS NULL AND p.session_id = v.session_id AND p.tenant_id = ${tenant}
        AND p.site_id = v.site_id AND p.start_timestamp < v.period_start)
  ) v
  GROUP BY v.period, v.site_url
)`);
  }

  const convMetrics = metrics.filter((m) => m.source === 'conv');
  ctes.push(`agg AS (
  SELECT c.period, c.site_url, ${convMetrics.map((m) => `${m.expr} AS ${m.name}`).join(',\n    ')}
  FROM conv c${wants('conversion_rate') ? '\n  LEFT JOIN converted v ON v.id = c.id' : ''}
  GROUP BY c.period, c.site_url
)`);

  const alias: Record<Source, string> = { conv: 'a', msg: 'm', topics: 'tp', returning: 'rv' };
  const cteName: Record<Source, string> = {
    conv: 'agg',
    msg: 'msg_agg',
    topics: 'topics',
    returning: 'returners',
  };
  const select = [
    `to_char(a.period, '${format}') AS date`,
    `${tenant}::uuid AS tenant_id`,
    'a.site_url',
    ...metrics.map((m) => {
      const value = `${alias[m.source]}.${m.name}`;
      return `${m.fill ? `coalesce(${value}, ${m.fill})` : value} AS ${m.name}`;
    }),
  ];
  const joins = (['msg', 'topics', 'returning'] as const)
    .filter((s) => metrics.some((m) => m.source === s))
    .map(
      (s) =>
        `LEFT JOIN ${cteName[s]} ${alias[s]} ON ${alias[s]}.period = a.period AND ${alias[s]}.site_url = a.site_url`,
    );

  const query = `WITH ${ctes.join(',\n')}
SELECT ${select.join(',\n  ')}
FROM agg a${joins.map((j) => `\n${j}`).join('')}`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.date', 't.site_url'] };
}
