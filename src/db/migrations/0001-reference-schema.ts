/**
 * The reference schema: the support platform's own data, as an AI customer-support
 * platform stores it. Ferry reads these tables; the data map (src/datamap) declares
 * every column here with its class.
 */
export const up = /* sql */ `
CREATE TABLE tenants (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  slug text NOT NULL UNIQUE,
  plan text NOT NULL CHECK (plan IN ('starter', 'pro', 'agency', 'enterprise')),
  timezone text NOT NULL,
  home_country char(2) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  url text NOT NULL,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, url)
);

CREATE TABLE team_members (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name text NOT NULL,
  email text NOT NULL,
  role text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'agent')),
  password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_login_at timestamptz,
  UNIQUE (tenant_id, email)
);

CREATE TABLE customers (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  email text,
  name text,
  phone text,
  country char(2),
  segment text NOT NULL CHECK (segment IN ('smb', 'mid_market', 'enterprise', 'consumer')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_tenant_email ON customers (tenant_id, email);

CREATE TABLE consent_records (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id uuid NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  purpose text NOT NULL CHECK (purpose IN ('chat_transcripts', 'analytics', 'marketing', 'ai_training')),
  granted boolean NOT NULL,
  source text NOT NULL,
  ip_address text,
  recorded_at timestamptz NOT NULL
);
CREATE INDEX consent_records_tenant ON consent_records (tenant_id, recorded_at);

CREATE TABLE conversations (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  site_id uuid NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
  customer_id uuid REFERENCES customers(id) ON DELETE SET NULL,
  assigned_agent_id uuid REFERENCES team_members(id) ON DELETE SET NULL,
  session_id text NOT NULL,
  start_timestamp timestamptz NOT NULL,
  end_timestamp timestamptz,
  page_url text,
  referrer text,
  customer_email text,
  customer_name text,
  ip_address text,
  country char(2),
  language text NOT NULL,
  user_agent text,
  status text NOT NULL CHECK (status IN ('resolved', 'unresolved', 'in_progress')),
  escalated boolean NOT NULL DEFAULT false,
  escalation_reason text,
  resolution_time_minutes integer,
  satisfaction_score smallint CHECK (satisfaction_score BETWEEN 1 AND 5),
  satisfaction_feedback text,
  ai_confidence_avg double precision,
  message_count integer NOT NULL DEFAULT 0,
  customer_message_count integer NOT NULL DEFAULT 0,
  ai_message_count integer NOT NULL DEFAULT 0,
  human_message_count integer NOT NULL DEFAULT 0,
  topics_detected text[] NOT NULL DEFAULT '{}',
  internal_notes text,
  tags text[] NOT NULL DEFAULT '{}',
  custom_fields jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  last_updated timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_start ON conversations (tenant_id, start_timestamp, id);
CREATE INDEX conversations_tenant_updated ON conversations (tenant_id, last_updated, id);
CREATE INDEX conversations_customer ON conversations (customer_id);

CREATE TABLE messages (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  sender_type text NOT NULL CHECK (sender_type IN ('customer', 'ai', 'human')),
  sender_id text,
  content text NOT NULL,
  confidence_score double precision,
  processing_time_ms integer,
  tokens_used integer,
  content_sources jsonb NOT NULL DEFAULT '[]',
  source_relevance_scores jsonb NOT NULL DEFAULT '[]',
  message_length integer NOT NULL,
  language_detected text,
  sentiment_score double precision CHECK (sentiment_score BETWEEN -1 AND 1),
  intent_classification text,
  entities_extracted jsonb NOT NULL DEFAULT '[]',
  custom_metadata jsonb NOT NULL DEFAULT '{}',
  edited boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at, id);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at);

CREATE TABLE documents (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  title text NOT NULL,
  url text,
  content text NOT NULL,
  content_type text NOT NULL CHECK (content_type IN ('article', 'faq', 'policy', 'guide', 'product')),
  category text NOT NULL,
  tags text[] NOT NULL DEFAULT '{}',
  language text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX documents_tenant ON documents (tenant_id, updated_at);

CREATE TABLE document_chunks (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  document_id uuid NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  chunk_index integer NOT NULL,
  content text NOT NULL,
  embedding real[] NOT NULL,
  retrieval_count integer NOT NULL DEFAULT 0,
  relevance_avg double precision,
  relevance_max double precision,
  relevance_min double precision,
  UNIQUE (document_id, chunk_index)
);
CREATE INDEX document_chunks_tenant ON document_chunks (tenant_id);

CREATE TABLE revenue_events (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id uuid NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  conversation_ids uuid[] NOT NULL DEFAULT '{}',
  amount numeric(12, 2) NOT NULL,
  currency char(3) NOT NULL,
  transaction_type text NOT NULL CHECK (transaction_type IN ('purchase', 'subscription', 'upgrade', 'renewal')),
  product_category text NOT NULL,
  customer_segment text NOT NULL,
  referral_source text,
  campaign text,
  lead_score integer CHECK (lead_score BETWEEN 0 AND 100),
  occurred_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revenue_events_tenant ON revenue_events (tenant_id, occurred_at);

CREATE TABLE integrations (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  type text NOT NULL,
  name text NOT NULL,
  config jsonb NOT NULL DEFAULT '{}',
  credentials_encrypted text NOT NULL,
  credentials_hint text NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settings (
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  key text NOT NULL,
  value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);

CREATE TABLE activity_logs (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  actor_type text NOT NULL CHECK (actor_type IN ('team_member', 'api_key', 'system', 'customer')),
  actor_id text,
  action text NOT NULL,
  target_type text,
  target_id text,
  ip_address text,
  user_agent text,
  metadata jsonb NOT NULL DEFAULT '{}',
  occurred_at timestamptz NOT NULL
);
CREATE INDEX activity_logs_tenant ON activity_logs (tenant_id, occurred_at);

CREATE TABLE subscriptions (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  plan text NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'past_due', 'cancelled', 'trialing')),
  seats integer NOT NULL,
  amount numeric(12, 2) NOT NULL,
  currency char(3) NOT NULL,
  billing_interval text NOT NULL CHECK (billing_interval IN ('month', 'year')),
  current_period_start timestamptz NOT NULL,
  current_period_end timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  subscription_id uuid NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  number text NOT NULL,
  amount numeric(12, 2) NOT NULL,
  tax numeric(12, 2) NOT NULL,
  currency char(3) NOT NULL,
  status text NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void')),
  period_start timestamptz NOT NULL,
  period_end timestamptz NOT NULL,
  issued_at timestamptz NOT NULL,
  due_at timestamptz NOT NULL,
  paid_at timestamptz
);
CREATE INDEX invoices_tenant ON invoices (tenant_id, issued_at);
`;
