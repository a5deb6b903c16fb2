-- What a request's record keeps of its prompt and answer (telemetry.content, flag content_logging), the request's
-- own metadata (the body's `metadata`), and the feature flags set through the API.
ALTER TABLE model_cost_logs ADD COLUMN content_input TEXT NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN content_output TEXT NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
CREATE INDEX model_cost_logs_ts_id ON model_cost_logs (ts, id);
-- One row per (project, flag), project '' holding the global value. value NULL: the override was removed (a row kept so
-- that seq, the revision every worker polls, still grows).
CREATE TABLE feature_flags (
    project TEXT NOT NULL DEFAULT '',
    flag TEXT NOT NULL,
    value TEXT,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL,
    PRIMARY KEY (project, flag)
);
