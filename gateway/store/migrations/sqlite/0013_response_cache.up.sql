-- The response cache's truth in records: hit, semantic-hit, miss or bypass, the record whose answer a hit served,
-- what a hit saved (its cost_usd is 0).
ALTER TABLE model_cost_logs ADD COLUMN cache TEXT NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN cache_source_id TEXT NOT NULL DEFAULT '';
ALTER TABLE model_cost_logs ADD COLUMN saved_usd REAL;
