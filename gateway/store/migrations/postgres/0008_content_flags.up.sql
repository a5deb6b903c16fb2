-- What a request's record keeps of its prompt and answer (telemetry.content, flag content_logging), the request's
-- own metadata (the body's `metadata`), and the feature flags set through the API.
ALTER TABLE model_cost_logs ADD COLUMN content_input text NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN content_output text NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
CREATE INDEX model_cost_logs_ts_id ON model_cost_logs (ts, id);
-- One row per (project, flag), project '' holding the global value. value NULL: the override was removed (a row kept so
-- that seq, the revision every worker polls, still grows).
CREATE SEQUENCE feature_flags_seq;
CREATE TABLE feature_flags (
    project text NOT NULL DEFAULT '',
    flag text NOT NULL,
    value jsonb,
    updated_at double precision NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    seq bigint NOT NULL DEFAULT nextval('feature_flags_seq'),
    PRIMARY KEY (project, flag)
);
