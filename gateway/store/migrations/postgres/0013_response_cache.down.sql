ALTER TABLE model_cost_logs DROP COLUMN saved_usd;
ALTER TABLE model_cost_logs DROP COLUMN cache_source_id;
ALTER TABLE model_cost_logs DROP COLUMN cache;
