ALTER TABLE model_cost_logs DROP COLUMN guardrails;
