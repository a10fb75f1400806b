import { REFERENCE_TABLES } from './reference-tables.ts';
import type {
  ComputedDataset,
  ComputedReport,
  DatasetDeclaration,
  DatasetField,
  DatasetFilter,
  DatasetParameter,
  DocumentDataset,
  DocumentWriter,
  PackageFile,
  PackagePlacement,
  TableColumn,
  TableDataset,
} from './types.ts';

/** The parts of a knowledge-base document the `include` option chooses from (all by default). */
export const KB_PARTS = ['content', 'metadata', 'usage_stats'] as const;
/** The sections of the account document the `sections` option chooses from (all by default). */
export const ACCOUNT_SECTIONS = ['settings', 'users', 'integrations'] as const;

type Tables = typeof REFERENCE_TABLES;

function column(ref: string): TableColumn {
  const [table, name] = ref.split('.') as [string, string];
  const declared = (REFERENCE_TABLES as Record<string, { columns: Record<string, TableColumn> }>)[table]
    ?.columns[name];
  if (!declared) throw new Error(`data map: dataset field reads unknown column ${ref}`);
  return declared;
}

/** A field copied from one table column; type, class and description come from the table. */
function from<T extends keyof Tables>(
  table: T,
  col: keyof Tables[T]['columns'] & string,
  name: string = col,
  alias = 't',
): DatasetField {
  const ref = `${table}.${col}`;
  const c = column(ref);
  return {
    name,
    type: c.type,
    class: c.class,
    description: c.description,
    ...(c.pii ? { pii: c.pii } : {}),
    sql: `${alias}.${col}`,
    reads: [ref],
  };
}

/** A derived field: its own SQL, type and description. */
function derived(
  name: string,
  sql: string,
  reads: string[],
  spec: Pick<DatasetField, 'type' | 'class' | 'description'> & { pii?: DatasetField['pii'] },
): DatasetField {
  return { name, sql, reads, ...spec };
}

const TEXT_FORMATS = ['csv', 'json', 'ndjson', 'xml', 'parquet'] as const;

const dateFilters = (col: string): DatasetFilter[] => [
  {
    name: 'from',
    type: 'string',
    sql: `${col} >= $value`,
    description: 'Start date (inclusive), YYYY-MM-DD or ISO 8601.',
  },
  {
    name: 'to',
    type: 'string',
    sql: `${col} < $value`,
    description: 'End date (inclusive for dates), YYYY-MM-DD or ISO 8601.',
  },
];

export const CONVERSATION_FIELDS: DatasetField[] = [
  from('conversations', 'id', 'conversation_id'),
  from('conversations', 'tenant_id'),
  from('conversations', 'session_id'),
  from('conversations', 'start_timestamp'),
  from('conversations', 'end_timestamp'),
  from('sites', 'url', 'site_url', 's'),
  from('conversations', 'page_url'),
  from('conversations', 'referrer'),
  from('conversations', 'customer_email'),
  from('conversations', 'customer_name'),
  from('conversations', 'ip_address'),
  from('conversations', 'country'),
  from('conversations', 'language'),
  from('conversations', 'user_agent'),
  from('conversations', 'status', 'conversation_status'),
  from('conversations', 'escalated'),
  from('conversations', 'escalation_reason'),
  from('conversations', 'resolution_time_minutes'),
  from('conversations', 'satisfaction_score'),
  from('conversations', 'satisfaction_feedback'),
  from('conversations', 'ai_confidence_avg'),
  from('conversations', 'message_count'),
  from('conversations', 'customer_message_count'),
  from('conversations', 'ai_message_count'),
  from('conversations', 'human_message_count'),
  from('conversations', 'topics_detected'),
  derived(
    'full_transcript',
    `(SELECT string_agg(to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ' ' || m.sender_type || ': ' || m.content, E'\\n' ORDER BY m.created_at, m.id) FROM messages m WHERE m.conversation_id = t.id)`,
    ['messages.created_at', 'messages.sender_type', 'messages.content'],
    {
      type: 'string',
      class: 'free_text',
      description:
        'Every message of the conversation in order, one per line: "<UTC time> <sender_type>: <text>".',
    },
  ),
  from('conversations', 'internal_notes'),
  from('conversations', 'tags'),
  from('conversations', 'custom_fields'),
  from('conversations', 'last_updated'),
  from('conversations', 'customer_id'),
  from('conversations', 'assigned_agent_id'),
  ...enrichedConversationFields(),
];

/**
 * Enriched fields (docs/enrichment.md): exported only when named in `columns`. The user-agent
 * classes come from `user_agent_classes`, which the export fills for its distinct user agents
 * before its query runs; the location from the IP ranges the operator enabled (FERRY_IP_LOCATION).
 */
function enrichedConversationFields(): DatasetField[] {
  const parsed = (column: string) =>
    `(SELECT u.${column} FROM user_agent_classes u WHERE u.user_agent_hash = md5(t.user_agent))`;
  const userAgent = { kind: 'user_agent', input: 't.user_agent' } as const;
  const ip = { kind: 'ip_location', input: 't.ip_address' } as const;
  return [
    {
      ...derived('device_class', parsed('device_class'), ['conversations.user_agent'], {
        type: 'string',
        class: 'network',
        pii: 'device',
        description:
          "Device class parsed from the visitor's user agent: mobile, tablet, desktop, tv or bot; empty when the parser cannot tell. On request.",
      }),
      enrichment: userAgent,
    },
    {
      ...derived('browser', parsed('browser'), ['conversations.user_agent'], {
        type: 'string',
        class: 'network',
        pii: 'device',
        description: "Browser parsed from the visitor's user agent, e.g. Chrome or Safari. On request.",
      }),
      enrichment: userAgent,
    },
    {
      ...derived('os', parsed('os'), ['conversations.user_agent'], {
        type: 'string',
        class: 'network',
        pii: 'device',
        description:
          "Operating system parsed from the visitor's user agent, e.g. Android or iOS. On request.",
      }),
      enrichment: userAgent,
    },
    {
      ...derived('ip_country', 'ferry_ip_country(t.ip_address)', ['conversations.ip_address'], {
        type: 'string',
        class: 'location',
        pii: 'country',
        description:
          "Country (ISO 3166-1 alpha-2) of the visitor's IP address, from the IP database the operator enabled. On request.",
      }),
      enrichment: ip,
    },
    {
      ...derived('ip_region', 'ferry_ip_region(t.ip_address)', ['conversations.ip_address'], {
        type: 'string',
        class: 'location',
        description: 'UN M49 region of ip_country, e.g. Western Europe or South-eastern Asia. On request.',
      }),
      enrichment: ip,
    },
  ];
}

export const MESSAGE_FIELDS: DatasetField[] = [
  from('messages', 'id', 'message_id'),
  from('messages', 'conversation_id'),
  from('messages', 'created_at', 'timestamp'),
  from('messages', 'sender_type'),
  from('messages', 'sender_id'),
  from('messages', 'content', 'message_content'),
  from('messages', 'confidence_score'),
  from('messages', 'processing_time_ms'),
  from('messages', 'tokens_used'),
  from('messages', 'content_sources'),
  from('messages', 'source_relevance_scores'),
  from('messages', 'message_length'),
  from('messages', 'language_detected'),
  from('messages', 'sentiment_score'),
  from('messages', 'intent_classification'),
  from('messages', 'entities_extracted'),
  from('messages', 'custom_metadata'),
  from('messages', 'edited'),
];

/**
 * Per conversation, the revenue events that list it as a touchpoint (it started before the
 * event): their summed value, the last-touch credit (the latest such conversation of each
 * event gets the event's whole value, as revenue_attribution's default model), their count
 * and the campaign of the latest. A LEFT JOIN to a grouped key, so a query that reads none of
 * it does not run it.
 */
export const CONVERSATION_REVENUE_JOIN = `LEFT JOIN (
  SELECT x.conversation_id, sum(x.amount) AS conversation_value,
    sum(CASE WHEN x.position = 1 THEN x.amount ELSE 0 END) AS attributed_revenue,
    count(*)::int AS revenue_events,
    (array_agg(x.campaign ORDER BY x.occurred_at DESC, x.event_id DESC) FILTER (WHERE x.campaign IS NOT NULL))[1] AS campaign
  FROM (
    SELECT r.id AS event_id, r.amount, r.campaign, r.occurred_at, c.id AS conversation_id,
      row_number() OVER (PARTITION BY r.id ORDER BY c.start_timestamp DESC, c.id DESC) AS position
    FROM revenue_events r
    JOIN conversations c ON c.id = ANY (r.conversation_ids) AND c.tenant_id = r.tenant_id AND c.start_timestamp < r.occurred_at
    WHERE r.tenant_id = $tenant
  ) x
  GROUP BY x.conversation_id
) rv ON rv.conversation_id = t.id`;

const conversationFilters: DatasetFilter[] = [
  ...dateFilters('t.start_timestamp'),
  {
    name: 'site_url',
    type: 'string',
    sql: 's.url = $value',
    description: 'Only conversations on this site.',
  },
  {
    name: 'status',
    type: 'enum',
    values: ['resolved', 'unresolved', 'in_progress'],
    sql: 't.status = $value',
    description: 'Conversation status.',
  },
  {
    name: 'escalated',
    type: 'boolean',
    sql: 't.escalated = $value',
    description: 'Escalated to a human or not.',
  },
  {
    name: 'satisfaction_min',
    type: 'integer',
    sql: 't.satisfaction_score >= $value',
    description: 'Lowest rating (1-5).',
  },
  {
    name: 'satisfaction_max',
    type: 'integer',
    sql: 't.satisfaction_score <= $value',
    description: 'Highest rating (1-5).',
  },
  {
    name: 'confidence_min',
    type: 'number',
    sql: 't.ai_confidence_avg >= $value',
    description: 'Lowest mean AI confidence (0-1).',
  },
  {
    name: 'confidence_max',
    type: 'number',
    sql: 't.ai_confidence_avg <= $value',
    description: 'Highest mean AI confidence (0-1).',
  },
  {
    name: 'topics',
    type: 'string[]',
    sql: 't.topics_detected && $value',
    description: 'Any of these topics (comma-separated).',
  },
  {
    name: 'tags',
    type: 'string[]',
    sql: 't.tags && $value',
    description: 'Any of these tags (comma-separated).',
  },
  {
    name: 'customer_segment',
    type: 'enum',
    values: ['smb', 'mid_market', 'enterprise', 'consumer'],
    sql: 't.customer_id IN (SELECT id FROM customers WHERE segment = $value)',
    description: "The customer's segment.",
  },
  {
    name: 'customer_segments',
    type: 'string[]',
    sql: 't.customer_id IN (SELECT id FROM customers WHERE segment = ANY ($value))',
    description:
      'Any of these customer segments (comma-separated; the reference segments are smb, mid_market, enterprise and consumer).',
  },
  {
    name: 'conversation_value_min',
    type: 'number',
    sql: 'rv.conversation_value >= $value',
    join: CONVERSATION_REVENUE_JOIN,
    description: 'Lowest conversation_value: revenue of the events the conversation preceded.',
  },
  {
    name: 'conversation_value_max',
    type: 'number',
    sql: 'coalesce(rv.conversation_value, 0) <= $value',
    join: CONVERSATION_REVENUE_JOIN,
    description: 'Highest conversation_value (conversations without revenue count as 0).',
  },
  {
    name: 'has_revenue_attribution',
    type: 'boolean',
    sql: '(rv.conversation_id IS NOT NULL) = $value',
    join: CONVERSATION_REVENUE_JOIN,
    description: 'Whether the conversation preceded a revenue event that lists it (a touchpoint).',
  },
  {
    name: 'referrer_contains',
    type: 'string[]',
    sql: 'EXISTS (SELECT 1 FROM unnest($value) AS needle(text) WHERE strpos(lower(t.referrer), lower(needle.text)) > 0)',
    description: 'The referrer URL contains any of these texts, case-insensitively (comma-separated).',
  },
];

/** Ranges a saved export configuration may give as `{"min": …, "max": …}`. */
const CONVERSATION_RANGES = {
  satisfaction_score: { min: 'satisfaction_min', max: 'satisfaction_max' },
  confidence_score: { min: 'confidence_min', max: 'confidence_max' },
  conversation_value: { min: 'conversation_value_min', max: 'conversation_value_max' },
};

/**
 * Related columns of a conversation, written when `columns` names them: its revenue along
 * `revenue_events.conversation_ids` (last-touch credit, as the revenue_attribution default),
 * its annotations, and its messages nested.
 */
const CONVERSATION_RELATED_FIELDS: DatasetField[] = [
  {
    ...derived(
      'conversation_value',
      'coalesce(rv.conversation_value, 0)',
      ['revenue_events.amount', 'revenue_events.conversation_ids'],
      {
        type: 'number',
        class: 'none',
        description:
          "Revenue of the events this conversation preceded (it is one of their touchpoints), summed in the events' currency; 0 without any.",
      },
    ),
    join: CONVERSATION_REVENUE_JOIN,
  },
  {
    ...derived(
      'attributed_revenue',
      'coalesce(rv.attributed_revenue, 0)',
      ['revenue_events.amount', 'revenue_events.conversation_ids'],
      {
        type: 'number',
        class: 'none',
        description:
          'Revenue credited to this conversation under last-touch attribution (the last conversation before each event gets its whole value), as in revenue_attribution.',
      },
    ),
    join: CONVERSATION_REVENUE_JOIN,
  },
  {
    ...derived('revenue_events', 'coalesce(rv.revenue_events, 0)', ['revenue_events.conversation_ids'], {
      type: 'integer',
      class: 'none',
      description: 'Number of revenue events this conversation preceded.',
    }),
    join: CONVERSATION_REVENUE_JOIN,
  },
  {
    ...derived('campaign', 'rv.campaign', ['revenue_events.campaign'], {
      type: 'string',
      class: 'none',
      description:
        'Marketing campaign of the latest revenue event this conversation preceded (marketing_campaigns).',
    }),
    join: CONVERSATION_REVENUE_JOIN,
  },
  derived('resolution_notes', 't.internal_notes', ['conversations.internal_notes'], {
    type: 'string',
    class: 'free_text',
    description: "Annotation: the team's internal notes on the conversation and its resolution.",
  }),
  derived('follow_up_required', "coalesce('follow-up' = ANY (t.tags), false)", ['conversations.tags'], {
    type: 'boolean',
    class: 'none',
    description: 'Annotation: the team tagged the conversation follow-up.',
  }),
  {
    ...derived('messages', 'NULL', ['messages.content'], {
      type: 'json',
      class: 'free_text',
      description:
        "The messages of the conversation nested as an array of objects with the messages dataset's fields, oldest first; each field anonymized as in that dataset.",
    }),
    nested: { dataset: 'messages', link: 't.conversation_id = $parent', omit: ['conversation_id'] },
  },
];

function table(
  name: string,
  description: string,
  source: keyof Tables,
  fields: DatasetField[],
  extra: Partial<
    Pick<
      TableDataset,
      | 'from'
      | 'timeColumn'
      | 'key'
      | 'filters'
      | 'package'
      | 'changeFeed'
      | 'scopes'
      | 'subject'
      | 'ranges'
      | 'related'
      | 'relatedFields'
    >
  > = {},
): TableDataset {
  const decl = REFERENCE_TABLES[source];
  const time =
    extra.timeColumn === undefined ? (decl.timeColumn ? `t.${decl.timeColumn}` : null) : extra.timeColumn;
  return {
    name,
    description,
    kind: 'table',
    source,
    from: extra.from ?? `FROM ${source} t`,
    timeColumn: time,
    key: extra.key ?? (time ? [time, 't.id'] : ['t.id']),
    fields,
    filters: extra.filters ?? (time ? dateFilters(time) : []),
    parameters: [],
    formats: TEXT_FORMATS,
    package: extra.package ?? null,
    // Migration 0005 tracks every reference table a table dataset reads.
    changeFeed: extra.changeFeed === undefined ? { idColumn: 'id' } : extra.changeFeed,
    scopes: extra.scopes ?? {},
    ...(extra.subject ? { subject: extra.subject } : {}),
    ...(extra.ranges ? { ranges: extra.ranges } : {}),
    ...(extra.related ? { related: extra.related } : {}),
    ...(extra.relatedFields ? { relatedFields: extra.relatedFields } : {}),
  };
}

/** A package entry of dataset-export files. */
const files = (order: number, dated: boolean, ...entries: PackageFile[]): PackagePlacement => ({
  order,
  dated,
  files: entries,
});

/** Days of a computed report (`from`/`to`, in the report zone); the report's own query applies them. */
const PERIOD_FILTERS: DatasetFilter[] = [
  {
    name: 'from',
    type: 'string',
    sql: 'true',
    description: 'First day (YYYY-MM-DD) in the report time zone.',
  },
  {
    name: 'to',
    type: 'string',
    sql: 'true',
    description: 'Last day (YYYY-MM-DD, inclusive) in the report time zone.',
  },
];

function computed(
  name: string,
  description: string,
  source: keyof Tables,
  fields: DatasetField[],
  spec: Pick<ComputedDataset, 'package'> &
    Partial<Pick<ComputedDataset, 'filters' | 'ranges' | 'related'>> & {
      report: ComputedReport;
      parameters: DatasetParameter[];
    },
): ComputedDataset {
  return {
    name,
    description,
    kind: 'computed',
    report: spec.report,
    source,
    from: '',
    timeColumn: null,
    key: [],
    fields,
    filters: spec.filters ?? PERIOD_FILTERS,
    parameters: spec.parameters,
    formats: TEXT_FORMATS,
    package: spec.package,
    ...(spec.ranges ? { ranges: spec.ranges } : {}),
    ...(spec.related ? { related: spec.related } : {}),
  };
}

function document(
  name: string,
  description: string,
  source: keyof Tables,
  fields: DatasetField[],
  spec: Pick<DocumentDataset, 'formats' | 'package' | 'parameters'> & { document: DocumentWriter },
): DocumentDataset {
  return {
    name,
    description,
    kind: 'document',
    document: spec.document,
    source,
    from: '',
    timeColumn: null,
    key: [],
    fields,
    filters: [],
    parameters: spec.parameters,
    formats: spec.formats,
    package: spec.package,
  };
}

const num = (name: string, description: string, reads: string[], type: 'number' | 'integer' = 'number') =>
  derived(name, name, reads, { type, class: 'none', description });

/** The measures of daily_totals and channel_performance, over the chosen conversations. */
const CONVERSATION_TOTALS: DatasetField[] = [
  num('conversations', 'Conversations.', ['conversations.id'], 'integer'),
  num('escalated', 'Of those, escalated to a human.', ['conversations.escalated'], 'integer'),
  num('resolved', 'Of those, with status resolved.', ['conversations.status'], 'integer'),
  num('avg_satisfaction', 'Mean rating (1-5) of the rated ones, rounded to 2 decimals.', [
    'conversations.satisfaction_score',
  ]),
  num('messages', 'Messages of those conversations.', ['conversations.message_count'], 'integer'),
  num(
    'conversations_with_revenue',
    'Of those, conversations that preceded a revenue event (has_revenue_attribution).',
    ['revenue_events.conversation_ids'],
    'integer',
  ),
  num('conversation_value', "Sum of the conversations' conversation_value.", ['revenue_events.amount']),
  num('attributed_revenue', "Sum of the conversations' attributed_revenue (last touch).", [
    'revenue_events.amount',
  ]),
];

/** The metrics of the aggregation datasets (src/collect/computed/summaries.ts computes them). */
const SUMMARY_METRICS: readonly {
  name: string;
  type: 'integer' | 'number';
  description: string;
  reads: string[];
}[] = [
  {
    name: 'conversations',
    type: 'integer',
    description: 'Conversations started.',
    reads: ['conversations.id', 'conversations.start_timestamp'],
  },
  {
    name: 'messages',
    type: 'integer',
    description: 'Messages of those conversations (message_count).',
    reads: ['conversations.message_count'],
  },
  {
    name: 'visitors',
    type: 'integer',
    description: 'Distinct browser sessions (session_id) of those conversations.',
    reads: ['conversations.session_id'],
  },
  {
    name: 'resolution_rate',
    type: 'number',
    description: 'Share of those conversations with status resolved (0-1); empty without conversations.',
    reads: ['conversations.status'],
  },
  {
    name: 'escalation_rate',
    type: 'number',
    description: 'Share of those conversations escalated to a human (0-1); empty without conversations.',
    reads: ['conversations.escalated'],
  },
  {
    name: 'satisfaction_avg',
    type: 'number',
    description: 'Mean satisfaction_score of the rated conversations (1-5); empty without ratings.',
    reads: ['conversations.satisfaction_score'],
  },
];

/**
 * Each metric and its trend columns against `previous` (the period compared with):
 * `<metric>_change`, the value minus the previous one (a count is 0 where nothing happened,
 * a rate or mean has no previous value then), and `<metric>_change_pct`, that change in
 * percent of the previous value (empty when it is 0 or empty).
 */
function metricsWithTrends(previous: string): DatasetField[] {
  return SUMMARY_METRICS.flatMap((m) => [
    num(m.name, m.description, m.reads, m.type),
    num(`${m.name}_change`, `${m.name} minus its value in ${previous}.`, m.reads, m.type),
    num(
      `${m.name}_change_pct`,
      `${m.name}_change in percent of the value in ${previous}, rounded to 2 decimals; empty when that value is 0 or empty.`,
      m.reads,
    ),
  ]);
}

const SUMMARY_RANGE = 'the range of as many days just before from (empty unless both from and to are given)';

const siteUrlsParameter: DatasetParameter = {
  name: 'site_urls',
  description: 'Only these sites (comma-separated URLs).',
};

/** Every dataset Ferry exports. The names are the public contract. */
export const REFERENCE_DATASETS: Record<string, DatasetDeclaration> = {
  conversations: table(
    'conversations',
    'One row per chat conversation, with its outcome and full transcript.',
    'conversations',
    CONVERSATION_FIELDS,
    {
      from: 'FROM conversations t LEFT JOIN sites s ON s.id = t.site_id',
      filters: conversationFilters,
      ranges: CONVERSATION_RANGES,
      relatedFields: CONVERSATION_RELATED_FIELDS,
      package: { order: 40, dated: true, builder: 'conversations' },
      scopes: {
        site: 's.url = $value',
        customer: 't.customer_id = $value::uuid',
        // A team member's conversations: assigned to them, or they wrote in them.
        team_member:
          '(t.assigned_agent_id = $value::uuid OR EXISTS (SELECT 1 FROM messages p WHERE p.conversation_id = t.id AND p.sender_id = $value))',
      },
      subject: { name: 't.customer_name', email: 't.customer_email' },
    },
  ),
  messages: table('messages', 'One row per message of every conversation.', 'messages', MESSAGE_FIELDS, {
    from: 'FROM messages t LEFT JOIN conversations c ON c.id = t.conversation_id LEFT JOIN sites s ON s.id = c.site_id',
    filters: [
      ...dateFilters('t.created_at'),
      {
        name: 'site_url',
        type: 'string',
        sql: 's.url = $value',
        description: 'Only messages of conversations on this site.',
      },
      {
        name: 'sender_type',
        type: 'enum',
        values: ['customer', 'ai', 'human'],
        sql: 't.sender_type = $value',
        description: 'Who sent the message.',
      },
      {
        name: 'confidence_min',
        type: 'number',
        sql: 't.confidence_score >= $value',
        description: 'Lowest AI confidence (0-1).',
      },
      {
        name: 'confidence_max',
        type: 'number',
        sql: 't.confidence_score <= $value',
        description: 'Highest AI confidence (0-1).',
      },
      {
        name: 'status',
        type: 'enum',
        values: ['resolved', 'unresolved', 'in_progress'],
        sql: 'c.status = $value',
        description: 'Status of the conversation.',
      },
    ],
    package: files(50, true, { path: 'messages', format: 'tabular' }),
    related: { conversations: 't.conversation_id IN ($rows)' },
    ranges: { confidence_score: { min: 'confidence_min', max: 'confidence_max' } },
    scopes: {
      site: 's.url = $value',
      customer: 'c.customer_id = $value::uuid',
      team_member:
        '(c.assigned_agent_id = $value::uuid OR EXISTS (SELECT 1 FROM messages p WHERE p.conversation_id = t.conversation_id AND p.sender_id = $value))',
    },
    subject: { name: 'c.customer_name', email: 'c.customer_email' },
  }),
  team_members: table(
    'team_members',
    'The team: names, emails, roles. Never password hashes.',
    'team_members',
    [
      from('team_members', 'id', 'team_member_id'),
      from('team_members', 'tenant_id'),
      from('team_members', 'name'),
      from('team_members', 'email'),
      from('team_members', 'role'),
      from('team_members', 'created_at'),
      from('team_members', 'last_login_at'),
    ],
    {
      package: files(20, false, { path: 'team_members', format: 'json' }),
      scopes: { team_member: 't.id = $value::uuid' },
    },
  ),
  customers: table(
    'customers',
    'Known website visitors (data subjects).',
    'customers',
    [
      from('customers', 'id', 'customer_id'),
      from('customers', 'tenant_id'),
      from('customers', 'email'),
      from('customers', 'name'),
      from('customers', 'phone'),
      from('customers', 'country'),
      from('customers', 'segment', 'customer_segment'),
      from('customers', 'created_at'),
    ],
    {
      package: files(30, false, { path: 'customers', format: 'tabular' }),
      scopes: { customer: 't.id = $value::uuid' },
    },
  ),
  consent_records: table(
    'consent_records',
    'Consent given or withdrawn, per customer and purpose.',
    'consent_records',
    [
      from('consent_records', 'id', 'consent_id'),
      from('consent_records', 'tenant_id'),
      from('consent_records', 'customer_id'),
      from('consent_records', 'purpose'),
      from('consent_records', 'granted'),
      from('consent_records', 'source'),
      from('consent_records', 'ip_address'),
      from('consent_records', 'recorded_at'),
      from('consent_records', 'legal_basis'),
      from('consent_records', 'policy_version'),
    ],
    {
      package: files(100, true, { path: 'consent_records', format: 'json' }),
      scopes: { customer: 't.customer_id = $value::uuid' },
    },
  ),
  activity_logs: table(
    'activity_logs',
    'The audit trail of the account.',
    'activity_logs',
    [
      from('activity_logs', 'id', 'log_id'),
      from('activity_logs', 'tenant_id'),
      from('activity_logs', 'occurred_at', 'timestamp'),
      from('activity_logs', 'actor_type'),
      from('activity_logs', 'actor_id'),
      from('activity_logs', 'action'),
      from('activity_logs', 'target_type'),
      from('activity_logs', 'target_id'),
      from('activity_logs', 'ip_address'),
      from('activity_logs', 'user_agent'),
      from('activity_logs', 'metadata'),
    ],
    {
      package: files(90, true, { path: 'activity_logs/activity_logs', format: 'tabular' }),
      scopes: { team_member: 't.actor_id = $value', customer: 't.actor_id = $value' },
    },
  ),
  billing: table(
    'billing',
    'Invoices with their subscription plan.',
    'invoices',
    [
      from('invoices', 'id', 'invoice_id'),
      from('invoices', 'tenant_id'),
      from('invoices', 'number', 'invoice_number'),
      from('subscriptions', 'plan', 'plan', 'b'),
      from('subscriptions', 'billing_interval', 'billing_interval', 'b'),
      from('invoices', 'amount'),
      from('invoices', 'tax'),
      derived('total', 't.amount + t.tax', ['invoices.amount', 'invoices.tax'], {
        type: 'number',
        class: 'none',
        description: 'Amount plus tax.',
      }),
      from('invoices', 'currency'),
      from('invoices', 'status'),
      from('invoices', 'period_start'),
      from('invoices', 'period_end'),
      from('invoices', 'issued_at'),
      from('invoices', 'due_at'),
      from('invoices', 'paid_at'),
    ],
    {
      from: 'FROM invoices t LEFT JOIN subscriptions b ON b.id = t.subscription_id',
      package: files(110, true, { path: 'billing/invoices', format: 'tabular' }),
    },
  ),
  sites: table(
    'sites',
    'Websites running the chat widget.',
    'sites',
    [
      from('sites', 'id', 'site_id'),
      from('sites', 'tenant_id'),
      from('sites', 'url', 'site_url'),
      from('sites', 'name'),
      from('sites', 'created_at'),
    ],
    { scopes: { site: 't.url = $value' } },
  ),
  settings: table(
    'settings',
    'Account settings as key/value pairs.',
    'settings',
    [from('settings', 'key'), from('settings', 'value'), from('settings', 'updated_at')],
    { key: ['t.key'], timeColumn: null, changeFeed: { idColumn: 'key' } },
  ),
  integrations: table(
    'integrations',
    'Connected tools, with credentials masked. The secret itself never leaves.',
    'integrations',
    [
      from('integrations', 'id', 'integration_id'),
      from('integrations', 'type'),
      from('integrations', 'name'),
      from('integrations', 'config'),
      from('integrations', 'credentials_hint', 'credentials'),
      from('integrations', 'enabled'),
      from('integrations', 'created_at'),
      from('integrations', 'updated_at'),
    ],
  ),
  audit_log: table(
    'audit_log',
    "Ferry's audit trail of exports, downloads, deletions and API key changes.",
    'audit_events',
    [
      from('audit_events', 'id', 'event_id'),
      from('audit_events', 'tenant_id'),
      from('audit_events', 'occurred_at', 'timestamp'),
      from('audit_events', 'actor'),
      from('audit_events', 'action'),
      from('audit_events', 'target_id'),
      from('audit_events', 'data_type'),
      from('audit_events', 'date_from'),
      from('audit_events', 'date_to'),
      from('audit_events', 'record_count'),
      from('audit_events', 'file_bytes'),
      from('audit_events', 'download_count'),
      from('audit_events', 'ip_address'),
      from('audit_events', 'user_agent'),
      from('audit_events', 'success'),
      from('audit_events', 'error'),
      from('audit_events', 'retention_until'),
    ],
    {
      filters: [
        ...dateFilters('t.occurred_at'),
        {
          name: 'action',
          type: 'string',
          sql: 't.action = $value',
          description: 'Only this action, e.g. export.downloaded.',
        },
      ],
      // Ferry's own table: no change tracking.
      changeFeed: null,
    },
  ),
  audit_trail: table(
    'audit_trail',
    "Ferry's audit trail in the compliance columns of the product documentation: what was done to whose data, why, on what legal basis.",
    'audit_events',
    [
      from('audit_events', 'occurred_at', 'timestamp'),
      derived(
        'action_type',
        `CASE WHEN t.action LIKE 'consent.%' THEN 'consent_change'
          WHEN t.action IN ('export.deleted', 'dsar.erased', 'retention.swept', 'data.deleted') THEN 'data_deletion'
          WHEN t.action LIKE 'export.%' THEN 'data_export'
          WHEN t.action LIKE 'dsar.%' THEN 'data_access'
          WHEN t.action LIKE 'legal_hold.%' THEN 'legal_hold'
          WHEN t.action LIKE 'account.%' THEN 'account_closure'
          WHEN t.action LIKE 'api_key.%' OR t.action LIKE 'session.%' OR t.action LIKE 'auth.%' THEN 'access_control'
          ELSE 'configuration' END`,
        ['audit_events.action'],
        {
          type: 'string',
          class: 'none',
          description:
            'data_access, data_export, data_deletion, consent_change, legal_hold, account_closure, access_control or configuration.',
        },
      ),
      derived('action', 't.action', ['audit_events.action'], {
        type: 'string',
        class: 'none',
        description: 'The precise action, e.g. export.downloaded or retention.swept.',
      }),
      from('audit_events', 'actor', 'user_id'),
      derived(
        'customer_id',
        `CASE WHEN t.action LIKE 'consent.%' THEN (SELECT c.customer_id FROM consent_records c WHERE c.tenant_id = t.tenant_id AND c.id::text = t.target_id) END`,
        ['audit_events.action', 'audit_events.target_id', 'consent_records.customer_id'],
        {
          type: 'uuid',
          class: 'identifier',
          pii: 'person_id',
          description:
            'The customer whose data the action concerned, where the event names one (consent changes); data subject requests name the person only by keyed hash.',
        },
      ),
      from('audit_events', 'data_type'),
      derived(
        'data_scope',
        `nullif(concat_ws('; ', CASE WHEN t.target_id IS NOT NULL THEN 'target ' || t.target_id END,
          CASE WHEN t.date_from IS NOT NULL OR t.date_to IS NOT NULL THEN coalesce(t.date_from, '…') || ' to ' || coalesce(t.date_to, '…') END,
          CASE WHEN t.record_count IS NOT NULL THEN t.record_count || ' records' END,
          CASE WHEN t.file_bytes IS NOT NULL THEN t.file_bytes || ' bytes' END), '')`,
        [
          'audit_events.target_id',
          'audit_events.date_from',
          'audit_events.date_to',
          'audit_events.record_count',
          'audit_events.file_bytes',
        ],
        {
          type: 'string',
          class: 'none',
          description: 'What the action touched: the object, the date range, records and bytes.',
        },
      ),
      from('audit_events', 'ip_address'),
      from('audit_events', 'user_agent'),
      from('audit_events', 'success'),
      derived('reason', 't.error', ['audit_events.error'], {
        type: 'string',
        class: 'free_text',
        description: 'Why the action was taken, or what went wrong when it failed.',
      }),
      derived(
        'legal_basis',
        `CASE WHEN t.action LIKE 'consent.%' THEN (SELECT c.legal_basis FROM consent_records c WHERE c.tenant_id = t.tenant_id AND c.id::text = t.target_id)
          WHEN t.action LIKE 'dsar.%' OR t.action LIKE 'legal_hold.%' OR t.action = 'retention.swept' THEN 'legal_obligation' END`,
        ['audit_events.action', 'audit_events.target_id', 'consent_records.legal_basis'],
        {
          type: 'string',
          class: 'none',
          description:
            "The GDPR legal basis where Ferry knows it: the consent record's basis, or legal_obligation for data subject requests, legal holds and retention.",
        },
      ),
      derived(
        'consent_status',
        `CASE WHEN t.action = 'consent.given' THEN 'given' WHEN t.action = 'consent.withdrawn' THEN 'withdrawn' END`,
        ['audit_events.action'],
        { type: 'string', class: 'none', description: 'given or withdrawn, for consent changes.' },
      ),
      from('audit_events', 'retention_until', 'retention_period'),
      derived(
        'anonymization_level',
        `CASE WHEN t.action LIKE 'export.%' THEN (SELECT e.config->>'pii' FROM export_requests e WHERE e.tenant_id = t.tenant_id AND e.id::text = t.target_id) END`,
        ['audit_events.action', 'audit_events.target_id'],
        {
          type: 'string',
          class: 'none',
          description:
            'For exports: the anonymization level of the file (full, basic, enhanced or complete).',
        },
      ),
      derived(
        'compliance_notes',
        `'audit chain event ' || t.seq || CASE WHEN t.redacted_by IS NOT NULL THEN '; reason scrubbed by erasure request ' || t.redacted_by ELSE '' END`,
        ['audit_events.seq', 'audit_events.redacted_by'],
        {
          type: 'string',
          class: 'none',
          description: "The event's place in the tamper-evident chain, and whether an erasure scrubbed it.",
        },
      ),
    ],
    {
      filters: [
        ...dateFilters('t.occurred_at'),
        {
          name: 'action',
          type: 'string',
          sql: 't.action = $value',
          description: 'Only this action, e.g. consent.withdrawn.',
        },
      ],
      changeFeed: null,
    },
  ),
  analytics: computed(
    'analytics',
    'Metrics per period and site, computed in the tenant time zone.',
    'conversations',
    [
      derived('date', 'date', ['conversations.start_timestamp'], {
        type: 'string',
        class: 'none',
        description:
          'Start of the period in the report time zone (YYYY-MM-DD, or YYYY-MM-DDTHH:00 for hourly).',
      }),
      derived('tenant_id', 'tenant_id', ['conversations.tenant_id'], {
        type: 'uuid',
        class: 'identifier',
        description: 'The tenant.',
      }),
      derived('site_url', 'site_url', ['sites.url'], {
        type: 'string',
        class: 'none',
        description: 'The site.',
      }),
      num('total_conversations', 'Conversations started in the period.', ['conversations.id'], 'integer'),
      num(
        'total_messages',
        'Messages sent in those conversations.',
        ['conversations.message_count'],
        'integer',
      ),
      num('ai_messages', 'Messages sent by the AI.', ['conversations.ai_message_count'], 'integer'),
      num(
        'human_messages',
        'Messages sent by human agents.',
        ['conversations.human_message_count'],
        'integer',
      ),
      num(
        'avg_response_time_seconds',
        'Mean time from a customer message to the next AI or human reply, in seconds.',
        ['messages.created_at', 'messages.sender_type'],
      ),
      num('avg_resolution_time_minutes', 'Mean resolution_time_minutes of resolved conversations.', [
        'conversations.resolution_time_minutes',
      ]),
      num('escalation_rate', 'Share of conversations escalated to a human (0-1).', [
        'conversations.escalated',
      ]),
      num('resolution_rate', 'Share of conversations with status resolved (0-1).', ['conversations.status']),
      num('satisfaction_avg', 'Mean satisfaction_score of rated conversations (1-5).', [
        'conversations.satisfaction_score',
      ]),
      num(
        'satisfaction_responses',
        'Conversations with a rating.',
        ['conversations.satisfaction_score'],
        'integer',
      ),
      num('ai_confidence_avg', 'Mean confidence_score of AI messages (0-1).', ['messages.confidence_score']),
      num('high_confidence_rate', 'Share of scored AI messages with confidence_score > 0.8 (0-1).', [
        'messages.confidence_score',
      ]),
      num('low_confidence_rate', 'Share of scored AI messages with confidence_score < 0.5 (0-1).', [
        'messages.confidence_score',
      ]),
      num('unique_visitors', 'Distinct session_id values.', ['conversations.session_id'], 'integer'),
      num(
        'returning_visitors',
        'Distinct visitors (customer_id, else session_id) in the period who had a conversation on the same site before the period.',
        ['conversations.customer_id', 'conversations.session_id'],
      ),
      num(
        'conversion_rate',
        'Share of conversations linked to a revenue event within 30 days after they started.',
        ['revenue_events.conversation_ids'],
      ),
      num(
        'bounce_rate',
        'Share of conversations with exactly one customer message and no reply from the AI or a human.',
        [
          'conversations.customer_message_count',
          'conversations.ai_message_count',
          'conversations.human_message_count',
        ],
      ),
      num(
        'avg_session_duration',
        'Mean seconds from start_timestamp to end_timestamp of ended conversations.',
        ['conversations.start_timestamp', 'conversations.end_timestamp'],
      ),
      num(
        'mobile_percentage',
        'Percentage (0-100) of conversations whose user agent is a phone or tablet (Mobile, Android, iPhone, iPad).',
        ['conversations.user_agent'],
      ),
      num(
        'international_percentage',
        "Percentage (0-100) of conversations from a country other than the tenant's home country.",
        ['conversations.country', 'tenants.home_country'],
      ),
      num(
        'after_hours_percentage',
        'Percentage (0-100) of conversations started outside 09:00-17:00 Monday to Friday in the report time zone.',
        ['conversations.start_timestamp'],
      ),
      derived('top_topics', 'top_topics', ['conversations.topics_detected'], {
        type: 'string[]',
        class: 'none',
        description: 'The five most frequent topics, most frequent first.',
      }),
      derived(
        'content_gap_topics',
        'content_gap_topics',
        ['conversations.topics_detected', 'messages.confidence_score'],
        {
          type: 'string[]',
          class: 'none',
          description:
            'Topics of conversations whose mean AI confidence was below 0.5, most frequent first (up to five).',
        },
      ),
      derived('custom_kpis', 'custom_kpis', ['messages.tokens_used', 'messages.processing_time_ms'], {
        type: 'json',
        class: 'none',
        description:
          'Tenant-defined KPIs: tokens_used (sum over messages) and avg_processing_time_ms (mean of AI messages).',
      }),
    ],
    {
      report: 'analytics',
      parameters: [
        {
          name: 'granularity',
          values: ['hourly', 'daily', 'weekly', 'monthly'],
          description: 'Period length (default daily).',
        },
        {
          name: 'metrics',
          description:
            'Metric groups, comma-separated: performance, attribution, revenue or all (default all).',
        },
        { name: 'site_urls', description: 'Only these sites (comma-separated URLs).' },
      ],
      package: files(
        70,
        true,
        { path: 'analytics/daily', format: 'tabular', parameters: { granularity: 'daily' } },
        { path: 'analytics/monthly', format: 'tabular', parameters: { granularity: 'monthly' } },
      ),
    },
  ),
  revenue_attribution: computed(
    'revenue_attribution',
    'Revenue events attributed to the conversations that preceded them.',
    'revenue_events',
    [
      derived('date', 'date', ['revenue_events.occurred_at'], {
        type: 'string',
        class: 'none',
        description: 'Day of the conversion (report time zone), YYYY-MM-DD.',
      }),
      derived('customer_id', 'customer_id', ['revenue_events.customer_id'], {
        type: 'uuid',
        class: 'identifier',
        description: 'The converting customer.',
        pii: 'person_id',
      }),
      derived('conversation_ids', 'conversation_ids', ['revenue_events.conversation_ids'], {
        type: 'uuid[]',
        class: 'identifier',
        description:
          'Conversations linked to the event that started before it (its touchpoints), oldest first.',
      }),
      derived('attribution_model', 'attribution_model', [], {
        type: 'string',
        class: 'none',
        description: 'first_touch, last_touch or multi_touch (linear).',
      }),
      { ...num('total_revenue', 'Transaction value.', ['revenue_events.amount']), money: true },
      {
        ...num(
          'attributed_revenue',
          'Value credited to chat conversations under the model (all of it when any touchpoint).',
          ['revenue_events.amount'],
        ),
        money: true,
      },
      num('attribution_percentage', 'attributed_revenue / total_revenue x 100.', ['revenue_events.amount']),
      derived('conversion_timestamp', 'conversion_timestamp', ['revenue_events.occurred_at'], {
        type: 'timestamp',
        class: 'none',
        description: 'When the transaction happened.',
      }),
      derived('conversation_timestamp', 'conversation_timestamp', ['conversations.start_timestamp'], {
        type: 'timestamp',
        class: 'none',
        description: 'Start of the credited conversation (first for first_touch, last otherwise).',
      }),
      num('time_to_conversion_hours', 'Hours from conversation_timestamp to conversion_timestamp.', [
        'revenue_events.occurred_at',
      ]),
      derived('customer_segment', 'customer_segment', ['revenue_events.customer_segment'], {
        type: 'string',
        class: 'none',
        description: 'Segment.',
      }),
      derived('product_category', 'product_category', ['revenue_events.product_category'], {
        type: 'string',
        class: 'none',
        description: 'Product category.',
      }),
      derived('transaction_type', 'transaction_type', ['revenue_events.transaction_type'], {
        type: 'string',
        class: 'none',
        description: 'purchase, subscription, upgrade or renewal.',
      }),
      num('lead_score', 'Lead score at conversion (0-100).', ['revenue_events.lead_score'], 'integer'),
      num(
        'engagement_score',
        'Engagement 0-100: messages the customer sent in credited conversations (credit > 0), 10 points each, capped at 100.',
        ['conversations.customer_message_count'],
      ),
      num('satisfaction_score', 'Mean rating of credited conversations (credit > 0) (1-5).', [
        'conversations.satisfaction_score',
      ]),
      derived('referral_source', 'referral_source', ['revenue_events.referral_source'], {
        type: 'string',
        class: 'none',
        description: 'Traffic source.',
      }),
      derived('campaign_attribution', 'campaign_attribution', ['revenue_events.campaign'], {
        type: 'string',
        class: 'none',
        description: 'Campaign credited.',
      }),
      derived('touchpoint_sequence', 'touchpoint_sequence', ['conversations.start_timestamp'], {
        type: 'json',
        class: 'none',
        description:
          'Touchpoints in order with the share each gets under the model (0-1): [{conversation_id, timestamp, credit}].',
      }),
      num(
        'lifetime_value',
        "Sum of all of the customer's transactions in this currency up to and including this one.",
        ['revenue_events.amount'],
      ),
    ],
    {
      report: 'revenue_attribution',
      related: { conversations: 't.conversation_ids && ARRAY($rows)' },
      parameters: [
        {
          name: 'attribution_model',
          values: ['first_touch', 'last_touch', 'multi_touch'],
          description: 'How revenue is credited to conversations (default last_touch).',
        },
        { name: 'customer_segment', description: 'Only revenue of customers in this segment.' },
      ],
      package: files(
        80,
        true,
        ...(['first_touch', 'last_touch', 'multi_touch'] as const).map(
          (model): PackageFile => ({
            path: `revenue/attribution_${model}`,
            format: 'tabular',
            parameters: { attribution_model: model },
          }),
        ),
      ),
    },
  ),
  daily_totals: computed(
    'daily_totals',
    "Totals per day over the conversations its filters choose (the conversations dataset's filters): counts, ratings and their revenue.",
    'conversations',
    [
      derived('date', 'date', ['conversations.start_timestamp'], {
        type: 'string',
        class: 'none',
        description: 'Day the conversations started (report time zone), YYYY-MM-DD.',
      }),
      ...CONVERSATION_TOTALS,
    ],
    {
      report: 'daily_totals',
      parameters: [],
      package: null,
      filters: conversationFilters,
      ranges: CONVERSATION_RANGES,
    },
  ),
  channel_performance: computed(
    'channel_performance',
    "Totals per channel (the referrer's host) over the conversations its filters choose: counts, conversion rate and revenue.",
    'conversations',
    [
      derived('channel', 'channel', ['conversations.referrer'], {
        type: 'string',
        class: 'none',
        description:
          "The referrer's host in lower case without www. (google.com); (direct) without a referrer, (other) when the referrer is not a URL.",
      }),
      ...CONVERSATION_TOTALS,
      num('conversion_rate', 'conversations_with_revenue / conversations x 100, rounded to 2 decimals.', [
        'revenue_events.conversation_ids',
      ]),
      num('revenue_per_conversation', 'attributed_revenue / conversations, rounded to 2 decimals.', [
        'revenue_events.amount',
      ]),
    ],
    {
      report: 'channel_performance',
      parameters: [],
      package: null,
      filters: conversationFilters,
      ranges: CONVERSATION_RANGES,
    },
  ),
  marketing_campaigns: computed(
    'marketing_campaigns',
    'One row per marketing campaign and currency, from the campaign attribution of revenue events converted in the range.',
    'revenue_events',
    [
      derived('campaign', 'campaign', ['revenue_events.campaign'], {
        type: 'string',
        class: 'none',
        description: 'The campaign of the revenue events; (none) for events without one.',
      }),
      derived('currency', 'currency', ['revenue_events.currency'], {
        type: 'string',
        class: 'none',
        description: 'ISO 4217 currency of the amounts.',
      }),
      num('conversions', 'Revenue events of the campaign.', ['revenue_events.id'], 'integer'),
      num(
        'attributed_conversions',
        'Of those, events a chat conversation preceded (one they list started before them).',
        ['revenue_events.conversation_ids', 'conversations.start_timestamp'],
        'integer',
      ),
      num('customers', 'Distinct converting customers.', ['revenue_events.customer_id'], 'integer'),
      num(
        'conversations',
        "Distinct conversations that preceded the campaign's events.",
        ['revenue_events.conversation_ids'],
        'integer',
      ),
      num('revenue', "Sum of the events' amounts.", ['revenue_events.amount']),
      num('attributed_revenue', 'Sum of the amounts of the attributed conversions.', [
        'revenue_events.amount',
      ]),
      num('average_order_value', 'revenue / conversions, rounded to 2 decimals.', ['revenue_events.amount']),
      derived('first_conversion', 'first_conversion', ['revenue_events.occurred_at'], {
        type: 'string',
        class: 'none',
        description: 'Day of the first event in the range (report time zone), YYYY-MM-DD.',
      }),
      derived('last_conversion', 'last_conversion', ['revenue_events.occurred_at'], {
        type: 'string',
        class: 'none',
        description: 'Day of the last event in the range (report time zone), YYYY-MM-DD.',
      }),
    ],
    {
      report: 'marketing_campaigns',
      parameters: [],
      package: null,
      // The report narrows its events to the selected conversations itself.
      related: { conversations: 'true' },
    },
  ),
  rollups: computed(
    'rollups',
    'Conversation metrics per day, week or month and site, with their change against the period before.',
    'conversations',
    [
      derived('date', 'date', ['conversations.start_timestamp'], {
        type: 'string',
        class: 'none',
        description:
          'First day of the period in the report time zone (YYYY-MM-DD; weeks start on Monday). Periods are whole: a week or month the range touches counts in full.',
      }),
      derived('site_url', 'site_url', ['sites.url'], {
        type: 'string',
        class: 'none',
        description: 'The site.',
      }),
      ...metricsWithTrends("the same site's previous period (read before the range for the first period)"),
    ],
    {
      report: 'rollups',
      parameters: [
        {
          name: 'granularity',
          values: ['daily', 'weekly', 'monthly'],
          description: 'Period length (default daily).',
        },
        siteUrlsParameter,
      ],
      package: null,
    },
  ),
  site_summary: computed(
    'site_summary',
    'One row per site over the date range, with the change against the range of as many days before it.',
    'sites',
    [
      derived('site_url', 'site_url', ['sites.url'], {
        type: 'string',
        class: 'none',
        description: 'The site.',
      }),
      derived('site_name', 'site_name', ['sites.name'], {
        type: 'string',
        class: 'none',
        description: 'Display name of the site.',
      }),
      derived('first_conversation_at', 'first_conversation_at', ['conversations.start_timestamp'], {
        type: 'timestamp',
        class: 'none',
        description: 'Start of the first conversation in the range; empty without conversations.',
      }),
      derived('last_conversation_at', 'last_conversation_at', ['conversations.start_timestamp'], {
        type: 'timestamp',
        class: 'none',
        description: 'Start of the last conversation in the range; empty without conversations.',
      }),
      ...metricsWithTrends(SUMMARY_RANGE),
    ],
    { report: 'site_summary', parameters: [siteUrlsParameter], package: null },
  ),
  topic_summary: computed(
    'topic_summary',
    'One row per topic detected in the conversations of the date range, with the change against the range of as many days before it.',
    'conversations',
    [
      derived('topic', 'topic', ['conversations.topics_detected'], {
        type: 'string',
        class: 'none',
        description: 'The topic; a conversation counts once for each distinct topic it has.',
      }),
      num(
        'share_of_conversations',
        'Conversations with the topic divided by all conversations of the range (0-1).',
        ['conversations.topics_detected'],
      ),
      ...metricsWithTrends(SUMMARY_RANGE),
    ],
    { report: 'topic_summary', parameters: [siteUrlsParameter], package: null },
  ),
  knowledge_base: document(
    'knowledge_base',
    'Knowledge-base documents with metadata, usage statistics and chunks.',
    'documents',
    [
      from('documents', 'id', 'document_id'),
      from('documents', 'title'),
      from('documents', 'url'),
      from('documents', 'content'),
      derived(
        'chunks',
        '(SELECT count(*) FROM document_chunks c WHERE c.document_id = t.id)',
        [
          'document_chunks.chunk_index',
          'document_chunks.content',
          'document_chunks.embedding',
          'document_chunks.retrieval_count',
          'document_chunks.relevance_avg',
        ],
        {
          type: 'json',
          class: 'none',
          description:
            "The document's retrieval chunks: their text, usage scores and, with include_embeddings, embedding vectors.",
        },
      ),
    ],
    {
      document: 'knowledge_base',
      formats: ['json', 'markdown', 'xml'],
      parameters: [
        {
          name: 'include_embeddings',
          values: ['true', 'false'],
          description: "Include each chunk's vector embedding (default false).",
        },
        {
          name: 'include',
          list: KB_PARTS,
          description:
            'Parts of each document, comma-separated: content, metadata, usage_stats (default all). Without content, chunks keep their ids, scores and embeddings.',
        },
      ],
      package: { order: 60, dated: false, builder: 'knowledge_base' },
    },
  ),
  account: document(
    'account',
    'Account data: settings, sites, team, integrations (masked), plan and usage.',
    'tenants',
    [
      from('tenants', 'id', 'tenant_id'),
      from('tenants', 'name'),
      from('tenants', 'plan'),
      from('tenants', 'timezone'),
    ],
    {
      document: 'account',
      formats: ['json'],
      parameters: [
        {
          name: 'sections',
          list: ACCOUNT_SECTIONS,
          description:
            'Sections, comma-separated: settings, users, integrations (default all). The profile, plan, usage and sites always come; credentials are always masked.',
        },
      ],
      package: { order: 10, dated: false, builder: 'account' },
    },
  ),
};
