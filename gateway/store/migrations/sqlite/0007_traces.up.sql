ALTER TABLE model_cost_logs ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN parent_span_id TEXT NOT NULL DEFAULT '';
CREATE INDEX model_cost_logs_trace ON model_cost_logs (trace_id);
