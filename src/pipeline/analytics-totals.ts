import { PassThrough } from 'node:stream';
import { createInterface } from 'node:readline';
import type { ExportRequest } from '../collect/request.ts';
import type { Database } from '../db/database.ts';
import { writeDataset } from './export-dataset.ts';

/**
 * The analytics report summed over several tenants (an organisation's export): one row per
 * period with the same columns as `analytics`. Counts are added up; means and rates are
 * weighted by the count each is taken over (docs/organisations.md#analytics-totals lists the
 * weight of every column), as far as the report's own columns carry that count. `tenant_id` and
 * `site_url` are empty: a row spans every site of every tenant. The tenants' rows are read
 * period by period as they stream; only one running total per period is kept.
 */

type Row = Record<string, unknown>;

/** How a column of the report adds up over rows. */
type Rule =
  | { kind: 'key' }
  | { kind: 'blank' }
  | { kind: 'sum' }
  /** A mean or rate, weighted by what `weight` says of each row, written with `decimals`. */
  | { kind: 'mean'; decimals: number; weight: (row: Row) => number }
  /** The topics most rows list (up to five), ties by name. */
  | { kind: 'topics' }
  | { kind: 'kpis' };

const num = (v: unknown): number | null => {
  if (v === null || v === undefined || v === '') return null;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
};
const field = (name: string) => (row: Row) => num(row[name]) ?? 0;
const conversations = field('total_conversations');
const aiMessages = field('ai_messages');

/** The rule of every column of the analytics dataset (src/collect/computed/analytics.ts). */
export const TOTAL_RULES: Readonly<Record<string, Rule>> = {
  date: { kind: 'key' },
  tenant_id: { kind: 'blank' },
  site_url: { kind: 'blank' },
  total_conversations: { kind: 'sum' },
  total_messages: { kind: 'sum' },
  ai_messages: { kind: 'sum' },
  human_messages: { kind: 'sum' },
  // Customer messages: those not sent by the AI or a human agent.
  avg_response_time_seconds: {
    kind: 'mean',
    decimals: 2,
    weight: (r) => field('total_messages')(r) - aiMessages(r) - field('human_messages')(r),
  },
  // Resolved conversations.
  avg_resolution_time_minutes: {
    kind: 'mean',
    decimals: 2,
    weight: (r) => Math.round(field('resolution_rate')(r) * conversations(r)),
  },
  escalation_rate: { kind: 'mean', decimals: 4, weight: conversations },
  resolution_rate: { kind: 'mean', decimals: 4, weight: conversations },
  satisfaction_avg: { kind: 'mean', decimals: 2, weight: field('satisfaction_responses') },
  satisfaction_responses: { kind: 'sum' },
  ai_confidence_avg: { kind: 'mean', decimals: 4, weight: aiMessages },
  high_confidence_rate: { kind: 'mean', decimals: 4, weight: aiMessages },
  low_confidence_rate: { kind: 'mean', decimals: 4, weight: aiMessages },
  unique_visitors: { kind: 'sum' },
  returning_visitors: { kind: 'sum' },
  conversion_rate: { kind: 'mean', decimals: 4, weight: conversations },
  bounce_rate: { kind: 'mean', decimals: 4, weight: conversations },
  avg_session_duration: { kind: 'mean', decimals: 2, weight: conversations },
  mobile_percentage: { kind: 'mean', decimals: 2, weight: conversations },
  international_percentage: { kind: 'mean', decimals: 2, weight: conversations },
  after_hours_percentage: { kind: 'mean', decimals: 2, weight: conversations },
  top_topics: { kind: 'topics' },
  content_gap_topics: { kind: 'topics' },
  custom_kpis: { kind: 'kpis' },
};

interface Running {
  sums: Map<string, number>;
  /** Per mean column: the weighted sum and the weight. */
  means: Map<string, { total: number; weight: number }>;
  topics: Map<string, Map<string, number>>;
  tokens: number;
  processing: { total: number; weight: number };
}

const fresh = (): Running => ({
  sums: new Map(),
  means: new Map(),
  topics: new Map(),
  tokens: 0,
  processing: { total: 0, weight: 0 },
});

function add(running: Running, columns: readonly string[], row: Row): void {
  for (const column of columns) {
    const rule = TOTAL_RULES[column];
    if (!rule) continue;
    const value = row[column];
    if (rule.kind === 'sum') running.sums.set(column, (running.sums.get(column) ?? 0) + (num(value) ?? 0));
    else if (rule.kind === 'mean') {
      const n = num(value);
      const weight = rule.weight(row);
      if (n === null || weight <= 0) continue;
      const m = running.means.get(column) ?? { total: 0, weight: 0 };
      running.means.set(column, { total: m.total + n * weight, weight: m.weight + weight });
    } else if (rule.kind === 'topics') {
      const counts = running.topics.get(column) ?? new Map<string, number>();
      for (const topic of Array.isArray(value) ? value : []) {
        if (typeof topic === 'string') counts.set(topic, (counts.get(topic) ?? 0) + 1);
      }
      running.topics.set(column, counts);
    } else if (rule.kind === 'kpis' && value && typeof value === 'object') {
      const kpis = value as Record<string, unknown>;
      running.tokens += num(kpis.tokens_used) ?? 0;
      const avg = num(kpis.avg_processing_time_ms);
      const weight = aiMessages(row);
      if (avg !== null && weight > 0)
        running.processing = {
          total: running.processing.total + avg * weight,
          weight: running.processing.weight + weight,
        };
    }
  }
}

/** A CSV cell (RFC 4180): quoted when it holds a quote, the delimiter or a line break. */
function cell(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function rowText(period: string, columns: readonly string[], running: Running): string {
  const cells = columns.map((column): string => {
    const rule = TOTAL_RULES[column];
    if (!rule || rule.kind === 'blank') return '';
    if (rule.kind === 'key') return period;
    if (rule.kind === 'sum') return String(running.sums.get(column) ?? 0);
    if (rule.kind === 'mean') {
      const m = running.means.get(column);
      return m && m.weight > 0 ? (m.total / m.weight).toFixed(rule.decimals) : '';
    }
    if (rule.kind === 'topics') {
      const ranked = [...(running.topics.get(column) ?? new Map<string, number>())]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
        .slice(0, 5)
        .map(([topic]) => topic);
      return JSON.stringify(ranked);
    }
    const avg =
      running.processing.weight > 0
        ? (running.processing.total / running.processing.weight).toFixed(2)
        : 'null';
    return `{"tokens_used": ${running.tokens}, "avg_processing_time_ms": ${avg}}`;
  });
  return `${cells.map(cell).join(',')}\n`;
}

/** Reads the analytics rows of one tenant's request (NDJSON), in period order. */
async function* analyticsRows(database: Database, request: ExportRequest, signal?: AbortSignal) {
  const out = new PassThrough();
  const written = writeDataset(database, { ...request, format: 'ndjson', compression: 'none' }, out, {
    ...(signal ? { signal } : {}),
  });
  written.catch((err: Error) => out.destroy(err));
  for await (const line of createInterface({ input: out, crlfDelay: Number.POSITIVE_INFINITY }))
    if (line.trim()) yield JSON.parse(line) as Row;
  await written;
}

/**
 * The totals as CSV text (header first), one line per period in date order, from each
 * tenant's analytics request (`columns` in the report's order).
 */
export async function* analyticsTotals(
  database: Database,
  requests: readonly ExportRequest[],
  columns: readonly string[],
  signal?: AbortSignal,
): AsyncGenerator<string> {
  const periods = new Map<string, Running>();
  for (const request of requests) {
    for await (const row of analyticsRows(database, request, signal)) {
      const period = String(row.date);
      const running = periods.get(period) ?? fresh();
      add(running, columns, row);
      periods.set(period, running);
    }
  }
  yield `${columns.map(cell).join(',')}\n`;
  for (const period of [...periods.keys()].sort()) yield rowText(period, columns, periods.get(period)!);
}
