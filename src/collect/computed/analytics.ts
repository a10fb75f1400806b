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

/**
 * Where a metric is computed: `conv` aggregates the period's conversations (`c`, with `v`
 * their conversion), `msg` the messages of those conversations (`m`, with `next_reply_at`);
 * `sessions`, `topics` and `returning` have queries of their own. Each part of the query
 * yields one row per period and site.
 */
type Source = 'conv' | 'msg' | 'sessions' | 'topics' | 'returning';

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
  unique_visitors: { groups: ['attribution'], source: 'sessions', expr: 'count(*)' },
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
 * The longest date range, in days, whose messages the report looks up by conversation
 * (see the `msg` part of `analyticsSource`); a longer range scans the tenant's messages.
 * Measured on a tenant with a year of history: looked up, a week takes half the time of the
 * scan, a month about the same, three months a fifth more, the whole year twice the time.
 */
export const LOOKUP_DAYS = 31;

/**
 * Whether the report looks its messages up by conversation: a range from a first day on, of
 * at most LOOKUP_DAYS or open at its end (its length is not known here).
 */
function lookUpMessages(options: Pick<AnalyticsOptions, 'from' | 'to'>): boolean {
  if (options.from === undefined) return false;
  if (options.to === undefined) return true;
  return (Date.parse(options.to) - Date.parse(options.from)) / 86_400_000 + 1 <= LOOKUP_DAYS;
}

/**
 * The analytics query as a CopyQuery FROM clause: `FROM (<select>) t WHERE true{{KEY_RANGE}}`,
 * one row per period and site that had at least one conversation, with columns named
 * as the dataset fields (only those of the chosen metric groups). Key: date, site_url.
 *
 * Set-based: each part of the query reads its rows once and groups them by period and site,
 * and the parts are joined to the conversation metrics on that key. The conversations of the
 * range (`conv`) are not materialized: each part reads them from the table with the columns it
 * needs, so the planner estimates them from the table's statistics. The messages are read
 * once, for the message metrics and the content gaps together. A report over a date range is
 * one statement too: it reads the range's conversations and messages, and its one look back,
 * whether a visitor was on the site before the range, reads the earlier conversations of the
 * range's visitors once.
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
  const ofSource = (source: Source) => metrics.filter((m) => m.source === source);
  const select = (list: readonly { name: string; expr: string }[]) =>
    list.map((m) => `${m.expr} AS ${m.name}`).join(',\n    ');

  const ctes: string[] = [];
  // Conversations started in the range, with their period (local time, truncated).
  ctes.push(`conv AS NOT MATERIALIZED (
  SELECT c.id, c.site_id, s.url AS site_url, c.customer_id, c.session_id, c.start_timestamp,
    c.end_timestamp, c.country, tn.home_country, c.user_agent, c.status, c.escalated,
    c.resolution_time_minutes, c.satisfaction_score, c.message_count, c.customer_message_count,
    c.ai_message_count, c.human_message_count, c.topics_detected,
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
    // Conversations named by a revenue event within 30 x 24 hours after they started; agg
    // keeps those of conv. Materialized, so it is computed once and not by every worker of a
    // parallel plan.
    const lower = range.lower ? ` AND r.occurred_at >= ${range.lower}` : '';
    const upper = range.upper ? ` AND r.occurred_at < ${range.upper} + interval '720 hours'` : '';
    ctes.push(`converted AS MATERIALIZED (
  SELECT DISTINCT c.id
  FROM revenue_events r
  CROSS JOIN LATERAL unnest(r.conversation_ids) AS u(conversation_id)
  JOIN conversations c ON c.id = u.conversation_id
  WHERE r.tenant_id = ${tenant}${lower}${upper}
    AND c.tenant_id = ${tenant}${rangeConditions('c.start_timestamp', range)}
    AND r.occurred_at >= c.start_timestamp AND r.occurred_at < c.start_timestamp + interval '720 hours'
)`);
  }

  const msgMetrics = ofSource('msg');
  const gap = wants('content_gap_topics');
  if (msgMetrics.length > 0 || gap) {
    // The messages of conv's conversations, each with the next AI or human message after it
    // (a running min over the conversation read backwards), in the order (period, site,
    // conversation, created_at descending, id descending): the sums of the float confidence
    // scores depend on the order they are added in. They are aggregated as they stream, per
    // period and site (the message metrics) and per conversation (its mean AI confidence,
    // for the content gaps).
    //
    // A report over the tenant's whole history, up to a last day, or over more than
    // LOOKUP_DAYS, scans the messages once (a hash join on conv). A range from a first day on,
    // of at most LOOKUP_DAYS or without a last day, looks its conversations' messages up in the
    // messages_conversation index, all in one index scan: it holds a small part of the
    // tenant's messages. Joined conversation by
    // conversation instead, the planner prices each look-up as scattered reads and scans all
    // the messages. The look-up is only for short ranges: the planner cannot count the
    // array's conversations, and over a long range it joins each of the many messages it
    // finds to its conversation one by one (twice the time of the scan over a year).
    const nextReply = wants('avg_response_time_seconds')
      ? `,
      min(CASE WHEN m.sender_type <> 'customer' THEN m.created_at END) OVER (
        PARTITION BY c.period, c.site_id, m.conversation_id ORDER BY m.created_at DESC, m.id DESC
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS next_reply_at`
      : '';
    const stream = `(
    SELECT c.period, c.site_id, m.conversation_id, m.created_at, m.sender_type, m.confidence_score,
      m.tokens_used, m.processing_time_ms${nextReply}
    FROM messages m
    JOIN conv c ON c.id = m.conversation_id
    WHERE m.tenant_id = ${tenant}${lookUpMessages(options) ? '\n      AND m.conversation_id = ANY (ARRAY(SELECT c.id FROM conv c))' : ''}
    ORDER BY c.period, c.site_id, m.conversation_id, m.created_at DESC, m.id DESC
  ) m`;
    const sets = [
      ...(msgMetrics.length > 0 ? ['(m.period, m.site_id)'] : []),
      ...(gap ? ['(m.period, m.site_id, m.conversation_id)'] : []),
    ];
    // With both levels, each value is built only on the rows of the level that reads it.
    const level = (expr: string, period: boolean) =>
      sets.length > 1 ? `CASE WHEN GROUPING(m.conversation_id) = ${period ? 1 : 0} THEN ${expr} END` : expr;
    const aggregates = [
      ...msgMetrics.map((m) => ({ name: m.name, expr: level(m.expr, true) })),
      ...(gap
        ? [
            {
              name: 'confidence',
              expr: level("avg(m.confidence_score) FILTER (WHERE m.sender_type = 'ai')", false),
            },
          ]
        : []),
    ];
    // A period's row has no conversation_id (a message always has one).
    ctes.push(`msg AS (
  SELECT m.period, m.site_id, ${gap ? 'm.conversation_id' : 'NULL::uuid AS conversation_id'},
    ${select(aggregates)}
  FROM ${stream}
  GROUP BY ${sets.length > 1 ? `GROUPING SETS (${sets.join(', ')})` : sets[0]!.slice(1, -1)}
)`);
    if (msgMetrics.length > 0) {
      // DISTINCT ON tells the planner there is one row per key, so a query that reads none of
      // these columns drops the join (see below).
      ctes.push(`msg_agg AS (
  SELECT DISTINCT ON (x.period, x.site_id) x.period, x.site_id, ${msgMetrics.map((m) => `x.${m.name}`).join(', ')}
  FROM msg x
  WHERE x.conversation_id IS NULL
)`);
    }
  }

  if (uses('sessions')) {
    // Distinct sessions, counted apart from agg so that agg has no DISTINCT aggregate.
    ctes.push(`sessions AS (
  SELECT x.period, x.site_id, ${select(ofSource('sessions'))}
  FROM (SELECT DISTINCT c.period, c.site_id, c.session_id FROM conv c) x
  GROUP BY x.period, x.site_id
)`);
  }

  if (uses('topics')) {
    // Conversations per topic (a topic listed twice in one conversation counts once): counted
    // per distinct list of topics first, so each list is split into topics once. A content
    // gap is a conversation whose AI messages have a mean confidence below 0.5.
    ctes.push(`topic_counts AS (
  SELECT x.period, x.site_id, tp.topic, sum(x.n) AS n${gap ? ', sum(x.gap_n) AS gap_n' : ''}
  FROM (
    SELECT c.period, c.site_id, c.topics_detected, count(*) AS n${
      gap ? ',\n      count(*) FILTER (WHERE g.confidence < 0.5) AS gap_n' : ''
    }
    FROM conv c${gap ? '\n    LEFT JOIN msg g ON g.conversation_id = c.id' : ''}
    GROUP BY c.period, c.site_id, c.topics_detected
  ) x
  CROSS JOIN LATERAL (SELECT DISTINCT t.topic FROM unnest(x.topics_detected) AS t(topic)) tp
  GROUP BY x.period, x.site_id, tp.topic
)`);
    ctes.push(`topics AS (
  SELECT x.period, x.site_id, ${select(ofSource('topics'))}
  FROM topic_counts x
  GROUP BY x.period, x.site_id
)`);
  }

  if (uses('returning')) {
    // A visitor is the customer when known, else the session of an anonymous visitor. A
    // visitor of a period returns when their first conversation on the site started before
    // the period: their first in the range or, when the range has a first day, their first
    // before it.
    const visitor =
      "CASE WHEN c.customer_id IS NULL THEN 'session:' || c.session_id ELSE c.customer_id::text END";
    const firsts = [
      `SELECT c.site_id, ${visitor} AS visitor, min(c.start_timestamp) AS first_start FROM conv c GROUP BY 1, 2`,
    ];
    if (range.lower) {
      // Customers are looked up in the conversations_customer index, all in one index scan;
      // anonymous sessions, which no index holds, by one hash join over the anonymous
      // conversations before the range.
      firsts.push(`SELECT p.site_id, p.customer_id::text, min(p.start_timestamp)
    FROM conversations p
    JOIN (SELECT DISTINCT c.site_id, c.customer_id FROM conv c WHERE c.customer_id IS NOT NULL) v
      ON v.customer_id = p.customer_id AND v.site_id = p.site_id
    WHERE p.customer_id = ANY (ARRAY(SELECT c.customer_id FROM conv c WHERE c.customer_id IS NOT NULL))
      AND p.tenant_id = ${tenant} AND p.start_timestamp < ${range.lower}
    GROUP BY p.site_id, p.customer_id`);
      firsts.push(`SELECT v.site_id, 'session:' || v.session_id, min(p.start_timestamp)
    FROM (SELECT DISTINCT c.site_id, c.session_id FROM conv c WHERE c.customer_id IS NULL) v
    JOIN conversations p
      ON p.customer_id IS NULL AND p.session_id = v.session_id AND p.tenant_id = ${tenant}
        AND p.site_id = v.site_id AND p.start_timestamp < ${range.lower}
    GROUP BY v.site_id, v.session_id`);
    }
    ctes.push(`returners AS (
  SELECT v.period, v.site_id, ${select(ofSource('returning'))}
  FROM (SELECT DISTINCT c.period, c.site_id, ${visitor} AS visitor FROM conv c) v
  JOIN (
    SELECT f.site_id, f.visitor, min(f.first_start) AS first_start
    FROM (
    ${firsts.join('\n    UNION ALL\n    ')}
    ) f
    GROUP BY f.site_id, f.visitor
  ) f ON f.site_id = v.site_id AND f.visitor = v.visitor
  WHERE f.first_start < v.period AT TIME ZONE ${tz}
  GROUP BY v.period, v.site_id
)`);
  }

  ctes.push(`agg AS (
  SELECT c.period, c.site_id, min(c.site_url) AS site_url,
    ${select(ofSource('conv'))}
  FROM conv c${wants('conversion_rate') ? '\n  LEFT JOIN converted v ON v.id = c.id' : ''}
  GROUP BY c.period, c.site_id
)`);

  const parts: { source: Exclude<Source, 'conv'>; cte: string; alias: string }[] = [
    { source: 'msg', cte: 'msg_agg', alias: 'm' },
    { source: 'sessions', cte: 'sessions', alias: 'se' },
    { source: 'topics', cte: 'topics', alias: 'tp' },
    { source: 'returning', cte: 'returners', alias: 'rv' },
  ];
  const alias = (source: Source) => (source === 'conv' ? 'a' : parts.find((p) => p.source === source)!.alias);
  const output = [
    `to_char(a.period, '${format}') AS date`,
    `${tenant}::uuid AS tenant_id`,
    'a.site_url',
    ...metrics.map((m) => {
      const value = `${alias(m.source)}.${m.name}`;
      return `${m.fill ? `coalesce(${value}, ${m.fill})` : value} AS ${m.name}`;
    }),
  ];
  // Each part has one row per period and site, so a query that reads none of its columns
  // (PGlite's page bounds read only the key) drops its join and never computes it. The
  // joins start from agg, whose row count the planner estimates from the table's statistics.
  const joins = parts
    .filter((p) => uses(p.source))
    .map(
      (p) =>
        `LEFT JOIN ${p.cte} ${p.alias} ON ${p.alias}.period = a.period AND ${p.alias}.site_id = a.site_id`,
    );

  const query = `WITH ${ctes.join(',\n')}
SELECT ${output.join(',\n  ')}
FROM agg a${joins.map((j) => `\n${j}`).join('')}`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.date', 't.site_url'] };
}
