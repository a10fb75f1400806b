import { literal } from '../../db/database.ts';
import { checkChoice, checkTenantId, checkTimezone, isoUtc, localRange, rangeConditions } from './options.ts';

/**
 * The `revenue_attribution` dataset: one row per revenue event, crediting its value to
 * the chat conversations that preceded it under an attribution model. The query is a
 * FROM clause for CopyQuery. Definitions: docs/metrics.md.
 */

export const ATTRIBUTION_MODELS = ['first_touch', 'last_touch', 'multi_touch'] as const;
export type AttributionModel = (typeof ATTRIBUTION_MODELS)[number];

/** The customer segments of the reference schema (customers.segment). */
export const CUSTOMER_SEGMENTS = ['smb', 'mid_market', 'enterprise', 'consumer'] as const;

export interface AttributionOptions {
  tenantId: string;
  model: AttributionModel;
  /** IANA time zone for the `date` column and the from/to days. */
  timezone: string;
  /** First day of conversion (YYYY-MM-DD in the time zone), inclusive. */
  from?: string | undefined;
  /** Last day of conversion, inclusive. */
  to?: string | undefined;
  /** Only events of this customer segment. */
  customerSegment?: string | undefined;
}

/** Hidden key column (not a dataset field): makes the key unique when events share an instant. */
export const ATTRIBUTION_KEY_COLUMN = '_revenue_event_id';

/** Which touchpoints get credit (`credited`) and the share each gets (`credit`, 0-1). */
const CREDIT: Record<AttributionModel, { credited: string; credit: string }> = {
  first_touch: {
    credited: 't.position = 1',
    credit: 'CASE WHEN t.position = 1 THEN 1 ELSE 0 END::numeric',
  },
  last_touch: {
    credited: 't.position = t.touches',
    credit: 'CASE WHEN t.position = t.touches THEN 1 ELSE 0 END::numeric',
  },
  multi_touch: {
    credited: 'true',
    credit: 'trim_scale(round(1::numeric / t.touches, 4))',
  },
};

/**
 * The attribution query as a CopyQuery FROM clause: `FROM (<select>) t WHERE true{{KEY_RANGE}}`,
 * one row per revenue event converted in the range, columns named as the dataset fields plus
 * the hidden `_revenue_event_id`. Key: conversion_timestamp, _revenue_event_id.
 */
/**
 * At most how many rows the attribution report will have, counted cheaply: the revenue
 * events in the range (and segment); events no conversation preceded drop out of the report.
 */
export function revenueAttributionEstimate(options: AttributionOptions): string {
  const tenant = literal(checkTenantId(options.tenantId));
  const range = localRange(options.timezone, options.from, options.to);
  const segment =
    options.customerSegment === undefined
      ? ''
      : ` AND r.customer_segment = ${literal(checkChoice('customer_segment', options.customerSegment, CUSTOMER_SEGMENTS))}`;
  return `SELECT count(*)::int AS n FROM revenue_events r WHERE r.tenant_id = ${tenant}${rangeConditions('r.occurred_at', range)}${segment} AND cardinality(r.conversation_ids) > 0`;
}

export function revenueAttributionSource(options: AttributionOptions): { from: string; key: string[] } {
  const tenant = literal(checkTenantId(options.tenantId));
  const tz = literal(checkTimezone(options.timezone));
  const model = checkChoice('model', options.model, ATTRIBUTION_MODELS);
  const range = localRange(options.timezone, options.from, options.to);
  const segment =
    options.customerSegment === undefined
      ? undefined
      : checkChoice('customer_segment', options.customerSegment, CUSTOMER_SEGMENTS);
  const { credited, credit } = CREDIT[model];

  // Lifetime value runs over all of the customer's earlier events, so the window is
  // computed before the lower bound and the segment filter apply. With a first day, only
  // the customers with an event in the range are read: the other customers' events cannot
  // reach the report.
  const customers = range.lower
    ? `
    AND r.customer_id IN (
      SELECT x.customer_id FROM revenue_events x
      WHERE x.tenant_id = ${tenant}${rangeConditions('x.occurred_at', range)})`
    : '';
  const query = `WITH ev AS (
  SELECT r.id, r.customer_id, r.conversation_ids, r.amount, r.transaction_type, r.product_category,
    r.customer_segment, r.referral_source, r.campaign, r.lead_score, r.occurred_at,
    sum(r.amount) OVER (
      PARTITION BY r.customer_id, r.currency ORDER BY r.occurred_at, r.id
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS lifetime_value
  FROM revenue_events r
  WHERE r.tenant_id = ${tenant}${range.upper ? ` AND r.occurred_at < ${range.upper}` : ''}${customers}
),
sel AS (
  SELECT e.* FROM ev e
  WHERE true${range.lower ? ` AND e.occurred_at >= ${range.lower}` : ''}${
    segment ? ` AND e.customer_segment = ${literal(segment)}` : ''
  }
),
touch AS (
  SELECT e.id AS event_id, c.id AS conversation_id, c.start_timestamp, c.customer_message_count,
    c.satisfaction_score,
    row_number() OVER (PARTITION BY e.id ORDER BY c.start_timestamp, c.id) AS position,
    count(*) OVER (PARTITION BY e.id) AS touches
  FROM sel e
  JOIN conversations c
    ON c.id = ANY (e.conversation_ids) AND c.tenant_id = ${tenant} AND c.start_timestamp < e.occurred_at
),
credited AS (
  SELECT t.*, ${credited} AS credited, ${credit} AS credit FROM touch t
),
agg AS (
  SELECT x.event_id,
    array_agg(x.conversation_id ORDER BY x.position) AS conversation_ids,
    jsonb_agg(jsonb_build_object(
      'conversation_id', x.conversation_id,
      'timestamp', ${isoUtc('x.start_timestamp')},
      'credit', x.credit) ORDER BY x.position) AS touchpoint_sequence,
    max(x.start_timestamp) FILTER (WHERE x.credited) AS conversation_timestamp,
    sum(x.customer_message_count) FILTER (WHERE x.credited) AS customer_messages,
    round(avg(x.satisfaction_score) FILTER (WHERE x.credited), 2) AS satisfaction_score
  FROM credited x
  GROUP BY x.event_id
)
SELECT to_char(e.occurred_at AT TIME ZONE ${tz}, 'YYYY-MM-DD') AS date,
  e.customer_id,
  coalesce(a.conversation_ids, '{}'::uuid[]) AS conversation_ids,
  ${literal(model)}::text AS attribution_model,
  e.amount AS total_revenue,
  CASE WHEN a.event_id IS NULL THEN 0.00 ELSE e.amount END AS attributed_revenue,
  CASE WHEN a.event_id IS NULL THEN 0.00 ELSE 100.00 END AS attribution_percentage,
  e.occurred_at AS conversion_timestamp,
  a.conversation_timestamp,
  round(extract(epoch FROM e.occurred_at - a.conversation_timestamp) / 3600, 2) AS time_to_conversion_hours,
  e.customer_segment,
  e.product_category,
  e.transaction_type,
  e.lead_score,
  least(100, 10 * coalesce(a.customer_messages, 0)) AS engagement_score,
  a.satisfaction_score,
  e.referral_source,
  e.campaign AS campaign_attribution,
  coalesce(a.touchpoint_sequence, '[]'::jsonb) AS touchpoint_sequence,
  e.lifetime_value,
  e.id AS ${ATTRIBUTION_KEY_COLUMN}
FROM sel e
LEFT JOIN agg a ON a.event_id = e.id`;
  return {
    from: `FROM (${query}) t WHERE true{{KEY_RANGE}}`,
    key: ['t.conversion_timestamp', `t.${ATTRIBUTION_KEY_COLUMN}`],
  };
}
