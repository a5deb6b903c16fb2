ALTER TABLE model_cost_logs ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]';
