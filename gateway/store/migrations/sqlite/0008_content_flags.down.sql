DROP TABLE feature_flags;
DROP INDEX model_cost_logs_ts_id;
ALTER TABLE model_cost_logs DROP COLUMN metadata;
ALTER TABLE model_cost_logs DROP COLUMN content_output;
ALTER TABLE model_cost_logs DROP COLUMN content_input;
