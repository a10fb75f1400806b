import { literal } from '../../db/database.ts';
import { CONVERSATION_REVENUE_JOIN } from '../../datamap/reference-datasets.ts';
import { checkTenantId, checkTimezone, localRange, rangeConditions } from './options.ts';

/**
 * Totals over a selection of conversations (the rows the conversations dataset's filters
 * choose), grouped by a key: `daily_totals` per day of the conversation's start in the
 * report zone, `channel_performance` per channel (the referrer's host). The revenue columns
 * are the conversations' related columns (conversation_value, attributed_revenue) summed.
 * Definitions: docs/export-configs.md.
 */

export interface TotalsOptions {
  tenantId: string;
  timezone: string;
  /** `SELECT id FROM conversations …`: the conversations the request's filters choose. */
  selected: string;
}

/**
 * A conversation's channel: the host of its referrer without `www.`, lower-case;
 * `(direct)` without a referrer, `(other)` for a referrer that is not a URL.
 */
export const CHANNEL_SQL = `CASE WHEN coalesce(t.referrer, '') = '' THEN '(direct)'
  ELSE coalesce(nullif(regexp_replace(lower(substring(t.referrer FROM '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#:@]+)')), '^www\\.', ''), ''), '(other)') END`;

const MEASURES = `count(*)::int AS conversations,
    count(*) FILTER (WHERE t.escalated)::int AS escalated,
    count(*) FILTER (WHERE t.status = 'resolved')::int AS resolved,
    round(avg(t.satisfaction_score), 2) AS avg_satisfaction,
    coalesce(sum(t.message_count), 0)::bigint AS messages,
    count(rv.conversation_id)::int AS conversations_with_revenue,
    coalesce(sum(rv.conversation_value), 0) AS conversation_value,
    coalesce(sum(rv.attributed_revenue), 0) AS attributed_revenue`;

function grouped(options: TotalsOptions, key: { sql: string; name: string }, extra = ''): string {
  const tenant = literal(checkTenantId(options.tenantId));
  return `FROM (
  SELECT ${key.sql} AS ${key.name}, ${MEASURES}${extra}
  FROM conversations t
  ${CONVERSATION_REVENUE_JOIN.split('$tenant').join(tenant)}
  WHERE t.tenant_id = ${tenant} AND t.id IN (${options.selected})
  GROUP BY 1
) t WHERE true{{KEY_RANGE}}`;
}

export function dailyTotalsSource(options: TotalsOptions): { from: string; key: string[] } {
  const tz = literal(checkTimezone(options.timezone));
  return {
    from: grouped(options, {
      sql: `to_char(t.start_timestamp AT TIME ZONE ${tz}, 'YYYY-MM-DD')`,
      name: 'date',
    }),
    key: ['t.date'],
  };
}

export function channelPerformanceSource(options: TotalsOptions): { from: string; key: string[] } {
  return {
    from: grouped(
      options,
      { sql: CHANNEL_SQL, name: 'channel' },
      `,
    round(100.0 * count(rv.conversation_id) / count(*), 2) AS conversion_rate,
    round(coalesce(sum(rv.attributed_revenue), 0) / count(*), 2) AS revenue_per_conversation`,
    ),
    key: ['t.channel'],
  };
}

/** At most one row per selected conversation: counted without grouping. */
export function totalsEstimate(options: TotalsOptions): string {
  const tenant = literal(checkTenantId(options.tenantId));
  return `SELECT least(count(*), 100000)::int AS n FROM conversations t WHERE t.tenant_id = ${tenant} AND t.id IN (${options.selected})`;
}

export interface CampaignOptions {
  tenantId: string;
  timezone: string;
  from?: string | undefined;
  to?: string | undefined;
  /** `SELECT id FROM conversations …` when only the events these conversations preceded count. */
  selected?: string | undefined;
}

/**
 * `marketing_campaigns`: one row per campaign and currency, from the campaign attribution of
 * revenue events converted in the range (`(none)` for events without a campaign). An event is
 * attributed to chat when a conversation it lists started before it (as in
 * revenue_attribution). With a selection, only the events that list a selected conversation.
 */
export function marketingCampaignsSource(options: CampaignOptions): { from: string; key: string[] } {
  const tenant = literal(checkTenantId(options.tenantId));
  const tz = literal(checkTimezone(options.timezone));
  const range = localRange(options.timezone, options.from, options.to);
  // With a selection: the events one of its conversations preceded (a touchpoint, as in revenue_attribution).
  const narrowed = options.selected
    ? ` AND EXISTS (SELECT 1 FROM conversations sc WHERE sc.id = ANY (r.conversation_ids) AND sc.tenant_id = ${tenant} AND sc.start_timestamp < r.occurred_at AND sc.id IN (${options.selected}))`
    : '';
  const query = `WITH ev AS (
  SELECT r.id, coalesce(r.campaign, '(none)') AS campaign, r.currency, r.customer_id, r.amount, r.occurred_at,
    r.conversation_ids
  FROM revenue_events r
  WHERE r.tenant_id = ${tenant}${rangeConditions('r.occurred_at', range)}${narrowed}
),
tp AS (
  SELECT e.id AS event_id, e.campaign, e.currency, c.id AS conversation_id
  FROM ev e
  JOIN conversations c ON c.id = ANY (e.conversation_ids) AND c.tenant_id = ${tenant} AND c.start_timestamp < e.occurred_at
),
conv AS (
  SELECT campaign, currency, count(DISTINCT conversation_id)::int AS conversations,
    count(DISTINCT event_id)::int AS attributed_conversions
  FROM tp GROUP BY campaign, currency
),
agg AS (
  SELECT e.campaign, e.currency, count(*)::int AS conversions, count(DISTINCT e.customer_id)::int AS customers,
    sum(e.amount) AS revenue,
    coalesce(sum(e.amount) FILTER (WHERE e.id IN (SELECT event_id FROM tp)), 0) AS attributed_revenue,
    to_char(min(e.occurred_at) AT TIME ZONE ${tz}, 'YYYY-MM-DD') AS first_conversion,
    to_char(max(e.occurred_at) AT TIME ZONE ${tz}, 'YYYY-MM-DD') AS last_conversion
  FROM ev e GROUP BY e.campaign, e.currency
)
SELECT a.campaign, a.currency, a.conversions, coalesce(v.attributed_conversions, 0) AS attributed_conversions,
  a.customers, coalesce(v.conversations, 0) AS conversations, a.revenue, a.attributed_revenue,
  round(a.revenue / a.conversions, 2) AS average_order_value, a.first_conversion, a.last_conversion
FROM agg a LEFT JOIN conv v ON v.campaign = a.campaign AND v.currency = a.currency`;
  return { from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`, key: ['t.campaign', 't.currency'] };
}

export function marketingCampaignsEstimate(options: CampaignOptions): string {
  const tenant = literal(checkTenantId(options.tenantId));
  const range = localRange(options.timezone, options.from, options.to);
  return `SELECT count(DISTINCT (r.campaign, r.currency))::int AS n FROM revenue_events r WHERE r.tenant_id = ${tenant}${rangeConditions('r.occurred_at', range)}`;
}
