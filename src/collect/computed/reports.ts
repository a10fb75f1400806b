import type { ComputedReport } from '../../datamap/types.ts';
import { FerryError } from '../../domain/ferry-error.ts';
import type { ExportRequest, FilterValue } from '../request.ts';
import {
  channelPerformanceSource,
  dailyTotalsSource,
  marketingCampaignsEstimate,
  marketingCampaignsSource,
  totalsEstimate,
} from './conversation-totals.ts';
import { analyticsColumns, analyticsEstimate, analyticsSource, type MetricGroup } from './analytics.ts';
import {
  type RollupGranularity,
  rollupsEstimate,
  rollupsSource,
  siteSummaryEstimate,
  siteSummarySource,
  topicSummaryEstimate,
  topicSummarySource,
} from './summaries.ts';
import {
  type AttributionModel,
  revenueAttributionEstimate,
  revenueAttributionSource,
} from './revenue-attribution.ts';

/**
 * The rows of a table dataset that filters choose (tenant and scope of the request applied),
 * as a subquery of their ids: `SELECT t.id FROM conversations t … WHERE …`.
 */
export type SelectRows = (dataset: string, filters: Readonly<Record<string, FilterValue>>) => string;

/** The code behind a computed dataset, named by its declaration's `report`. */
export interface ReportBuilder {
  /** The report's rows for a request, as `FROM (...) t WHERE true{{KEY_RANGE}}`, and its ordering key. */
  source(request: ExportRequest, dayZone: string, select: SelectRows): { from: string; key: string[] };
  /** The names of the fields the request yields, when it narrows them. */
  fields?(request: ExportRequest): readonly string[];
  /**
   * A cheap count of the rows the report will have (a SELECT yielding `n`), for progress:
   * counting the report itself would compute it twice.
   */
  estimate(request: ExportRequest, dayZone: string, select: SelectRows): string;
}

/** The report's first and last day, from the request's `from`/`to` filters. */
function days(request: ExportRequest): { from?: string; to?: string } {
  const { from, to } = request.filters;
  return {
    ...(typeof from === 'string' ? { from: from.slice(0, 10) } : {}),
    ...(typeof to === 'string' ? { to: to.slice(0, 10) } : {}),
  };
}

const metrics = (request: ExportRequest) => (request.options.metrics ?? 'all').split(',') as MetricGroup[];

function analyticsOptions(request: ExportRequest, dayZone: string) {
  const siteUrls =
    request.scope?.kind === 'site' ? [request.scope.site_url] : request.options.site_urls?.split(',');
  return {
    tenantId: request.tenantId,
    timezone: dayZone,
    granularity: (request.options.granularity ?? 'daily') as 'daily',
    metrics: metrics(request),
    ...days(request),
    ...(siteUrls ? { siteUrls } : {}),
  };
}

function summaryOptions(request: ExportRequest, dayZone: string) {
  // The aggregations group a tenant's or a site's conversations; one person's would not be an aggregate.
  if (request.scope && request.scope.kind !== 'tenant' && request.scope.kind !== 'site')
    throw new FerryError(
      'invalid_parameter',
      `scope: dataset ${request.dataset} cannot be narrowed to one ${request.scope.kind.replace('_', ' ')}`,
    );
  const siteUrls =
    request.scope?.kind === 'site' ? [request.scope.site_url] : request.options.site_urls?.split(',');
  return {
    tenantId: request.tenantId,
    timezone: dayZone,
    ...days(request),
    ...(siteUrls ? { siteUrls } : {}),
  };
}

const rollupOptions = (request: ExportRequest, dayZone: string) => ({
  ...summaryOptions(request, dayZone),
  granularity: (request.options.granularity ?? 'daily') as RollupGranularity,
});

function attributionOptions(request: ExportRequest, dayZone: string) {
  return {
    tenantId: request.tenantId,
    timezone: dayZone,
    model: (request.options.attribution_model ?? 'last_touch') as AttributionModel,
    ...days(request),
    ...(request.options.customer_segment ? { customerSegment: request.options.customer_segment } : {}),
  };
}

/** A report over the conversations its filters choose (daily_totals, channel_performance). */
const totals = (request: ExportRequest, dayZone: string, select: SelectRows) => ({
  tenantId: request.tenantId,
  timezone: dayZone,
  selected: select('conversations', request.filters),
});

/** marketing_campaigns: its days, and the conversations of a related selection. */
function campaignOptions(request: ExportRequest, dayZone: string, select: SelectRows) {
  return {
    tenantId: request.tenantId,
    timezone: dayZone,
    ...days(request),
    ...(request.related ? { selected: select(request.related.dataset, request.related.filters) } : {}),
  };
}

/** Every computed report; a new one is a compile error until it is listed here. */
export const REPORTS = {
  analytics: {
    source(request, dayZone) {
      return analyticsSource(analyticsOptions(request, dayZone));
    },
    estimate: (request, dayZone) => analyticsEstimate(analyticsOptions(request, dayZone)),
    fields: (request) => analyticsColumns(metrics(request)),
  },
  revenue_attribution: {
    source: (request, dayZone) => revenueAttributionSource(attributionOptions(request, dayZone)),
    estimate: (request, dayZone) => revenueAttributionEstimate(attributionOptions(request, dayZone)),
  },
  rollups: {
    source: (request, dayZone) => rollupsSource(rollupOptions(request, dayZone)),
    estimate: (request, dayZone) => rollupsEstimate(rollupOptions(request, dayZone)),
  },
  site_summary: {
    source: (request, dayZone) => siteSummarySource(summaryOptions(request, dayZone)),
    estimate: (request, dayZone) => siteSummaryEstimate(summaryOptions(request, dayZone)),
  },
  topic_summary: {
    source: (request, dayZone) => topicSummarySource(summaryOptions(request, dayZone)),
    estimate: (request, dayZone) => topicSummaryEstimate(summaryOptions(request, dayZone)),
  },
  daily_totals: {
    source: (request, dayZone, select) => dailyTotalsSource(totals(request, dayZone, select)),
    estimate: (request, dayZone, select) => totalsEstimate(totals(request, dayZone, select)),
  },
  channel_performance: {
    source: (request, dayZone, select) => channelPerformanceSource(totals(request, dayZone, select)),
    estimate: (request, dayZone, select) => totalsEstimate(totals(request, dayZone, select)),
  },
  marketing_campaigns: {
    source: (request, dayZone, select) => marketingCampaignsSource(campaignOptions(request, dayZone, select)),
    estimate: (request, dayZone, select) =>
      marketingCampaignsEstimate(campaignOptions(request, dayZone, select)),
  },
} satisfies Record<ComputedReport, ReportBuilder>;
