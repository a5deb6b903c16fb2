ALTER TABLE model_cost_logs ADD COLUMN guardrails jsonb NOT NULL DEFAULT '[]';
