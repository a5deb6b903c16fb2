-- One row per request. Range-partitioned by UTC day on ts (epoch seconds): PostgresStore.ensure_partitions()
-- creates the days ahead, retention drops whole days, and the DEFAULT partition takes any row no day holds yet.
CREATE TABLE model_cost_logs (
    id text NOT NULL,
    ts double precision NOT NULL,
    endpoint text NOT NULL,
    key_name text NOT NULL DEFAULT '',
    key_id text NOT NULL DEFAULT '',
    project text NOT NULL DEFAULT '',
    team text NOT NULL DEFAULT '',
    user_id text NOT NULL DEFAULT '',
    model_requested text NOT NULL DEFAULT '',
    model_served text NOT NULL DEFAULT '',
    provider text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    status integer NOT NULL,
    error_type text NOT NULL DEFAULT '',
    error_domain text NOT NULL DEFAULT '',
    stream integer NOT NULL DEFAULT 0,
    latency_ms double precision NOT NULL,
    upstream_ms double precision NOT NULL DEFAULT 0,
    ttfb_ms double precision,
    ttft_ms double precision,
    overhead_ms double precision NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cached_tokens bigint NOT NULL DEFAULT 0,
    reasoning_tokens bigint NOT NULL DEFAULT 0,
    total_tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision,
    usage_source text NOT NULL DEFAULT '',
    spans jsonb NOT NULL DEFAULT '[]',
    tags jsonb NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (ts);
CREATE TABLE model_cost_logs_default PARTITION OF model_cost_logs DEFAULT;
CREATE INDEX model_cost_logs_ts ON model_cost_logs (ts);
CREATE INDEX model_cost_logs_project_ts ON model_cost_logs (project, ts);
CREATE INDEX model_cost_logs_id ON model_cost_logs (id);
