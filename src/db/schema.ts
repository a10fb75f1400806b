import type { ColumnType, Generated } from 'kysely';

/** Kysely table types for the reference schema (migration 0001). */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T = unknown> = ColumnType<T, string | T, string | T>;
type Numeric = ColumnType<string, string | number, string | number>;

export interface TenantsTable {
  id: string;
  name: string;
  slug: string;
  plan: 'starter' | 'pro' | 'agency' | 'enterprise';
  timezone: string;
  home_country: string;
  created_at: Generated<Timestamp>;
  updated_at: Generated<Timestamp>;
  /** Migration 0016: `active`, `closing` (closed, in its grace period) or `purged`. */
  status: Generated<'active' | 'closing' | 'purged'>;
  closed_at: Timestamp | null;
  closed_by: string | null;
  purge_after: Timestamp | null;
  purged_at: Timestamp | null;
}

export interface SitesTable {
  id: string;
  tenant_id: string;
  url: string;
  name: string;
  created_at: Generated<Timestamp>;
}

export interface TeamMembersTable {
  id: string;
  tenant_id: string;
  name: string;
  email: string;
  role: 'admin' | 'manager' | 'analyst' | 'agent';
  password_hash: string;
  created_at: Generated<Timestamp>;
  last_login_at: Timestamp | null;
}

export interface CustomersTable {
  id: string;
  tenant_id: string;
  email: string | null;
  name: string | null;
  phone: string | null;
  country: string | null;
  segment: 'smb' | 'mid_market' | 'enterprise' | 'consumer';
  created_at: Generated<Timestamp>;
  updated_at: Generated<Timestamp>;
}

export interface ConsentRecordsTable {
  id: string;
  tenant_id: string;
  customer_id: string;
  purpose: 'chat_transcripts' | 'analytics' | 'marketing' | 'ai_training';
  granted: boolean;
  source: string;
  ip_address: string | null;
  recorded_at: Timestamp;
  /** Migration 0016. */
  legal_basis: Generated<string>;
  policy_version: string | null;
}

export interface ConversationsTable {
  id: string;
  tenant_id: string;
  site_id: string;
  customer_id: string | null;
  assigned_agent_id: string | null;
  session_id: string;
  start_timestamp: Timestamp;
  end_timestamp: Timestamp | null;
  page_url: string | null;
  referrer: string | null;
  customer_email: string | null;
  customer_name: string | null;
  ip_address: string | null;
  country: string | null;
  language: string;
  user_agent: string | null;
  status: 'resolved' | 'unresolved' | 'in_progress';
  escalated: Generated<boolean>;
  escalation_reason: string | null;
  resolution_time_minutes: number | null;
  satisfaction_score: number | null;
  satisfaction_feedback: string | null;
  ai_confidence_avg: number | null;
  message_count: Generated<number>;
  customer_message_count: Generated<number>;
  ai_message_count: Generated<number>;
  human_message_count: Generated<number>;
  topics_detected: Generated<string[]>;
  internal_notes: string | null;
  tags: Generated<string[]>;
  custom_fields: Generated<Json<Record<string, unknown>>>;
  created_at: Generated<Timestamp>;
  last_updated: Generated<Timestamp>;
}

export interface MessagesTable {
  id: string;
  tenant_id: string;
  conversation_id: string;
  created_at: Timestamp;
  sender_type: 'customer' | 'ai' | 'human';
  sender_id: string | null;
  content: string;
  confidence_score: number | null;
  processing_time_ms: number | null;
  tokens_used: number | null;
  content_sources: Generated<Json<string[]>>;
  source_relevance_scores: Generated<Json<number[]>>;
  message_length: number;
  language_detected: string | null;
  sentiment_score: number | null;
  intent_classification: string | null;
  entities_extracted: Generated<Json<unknown[]>>;
  custom_metadata: Generated<Json<Record<string, unknown>>>;
  edited: Generated<boolean>;
  updated_at: Generated<Timestamp>;
}

export interface DocumentsTable {
  id: string;
  tenant_id: string;
  title: string;
  url: string | null;
  content: string;
  content_type: 'article' | 'faq' | 'policy' | 'guide' | 'product';
  category: string;
  tags: Generated<string[]>;
  language: string;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface DocumentChunksTable {
  id: string;
  tenant_id: string;
  document_id: string;
  chunk_index: number;
  content: string;
  embedding: number[];
  retrieval_count: Generated<number>;
  relevance_avg: number | null;
  relevance_max: number | null;
  relevance_min: number | null;
}

export interface RevenueEventsTable {
  id: string;
  tenant_id: string;
  /** Null once the customer was erased (migration 0014). */
  customer_id: string | null;
  conversation_ids: Generated<string[]>;
  amount: Numeric;
  currency: string;
  transaction_type: 'purchase' | 'subscription' | 'upgrade' | 'renewal';
  product_category: string;
  customer_segment: string;
  referral_source: string | null;
  campaign: string | null;
  lead_score: number | null;
  occurred_at: Timestamp;
  created_at: Generated<Timestamp>;
}

export interface IntegrationsTable {
  id: string;
  tenant_id: string;
  type: string;
  name: string;
  config: Generated<Json<Record<string, unknown>>>;
  credentials_encrypted: string;
  credentials_hint: string;
  enabled: Generated<boolean>;
  created_at: Generated<Timestamp>;
  updated_at: Generated<Timestamp>;
}

export interface SettingsTable {
  tenant_id: string;
  key: string;
  value: Json;
  updated_at: Generated<Timestamp>;
}

export interface ActivityLogsTable {
  id: string;
  tenant_id: string;
  actor_type: 'team_member' | 'api_key' | 'system' | 'customer';
  actor_id: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  ip_address: string | null;
  user_agent: string | null;
  metadata: Generated<Json<Record<string, unknown>>>;
  occurred_at: Timestamp;
}

export interface SubscriptionsTable {
  id: string;
  tenant_id: string;
  plan: string;
  status: 'active' | 'past_due' | 'cancelled' | 'trialing';
  seats: number;
  amount: Numeric;
  currency: string;
  billing_interval: 'month' | 'year';
  current_period_start: Timestamp;
  current_period_end: Timestamp;
  created_at: Generated<Timestamp>;
}

export interface InvoicesTable {
  id: string;
  tenant_id: string;
  subscription_id: string;
  number: string;
  amount: Numeric;
  tax: Numeric;
  currency: string;
  status: 'draft' | 'open' | 'paid' | 'void';
  period_start: Timestamp;
  period_end: Timestamp;
  issued_at: Timestamp;
  due_at: Timestamp;
  paid_at: Timestamp | null;
}

export interface DB {
  tenants: TenantsTable;
  sites: SitesTable;
  team_members: TeamMembersTable;
  customers: CustomersTable;
  consent_records: ConsentRecordsTable;
  conversations: ConversationsTable;
  messages: MessagesTable;
  documents: DocumentsTable;
  document_chunks: DocumentChunksTable;
  revenue_events: RevenueEventsTable;
  integrations: IntegrationsTable;
  settings: SettingsTable;
  activity_logs: ActivityLogsTable;
  subscriptions: SubscriptionsTable;
  invoices: InvoicesTable;
}
