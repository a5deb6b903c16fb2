DROP INDEX model_cost_logs_trace;
ALTER TABLE model_cost_logs DROP COLUMN parent_span_id;
ALTER TABLE model_cost_logs DROP COLUMN trace_id;
