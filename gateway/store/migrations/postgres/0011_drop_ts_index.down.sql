CREATE INDEX model_cost_logs_ts ON model_cost_logs (ts);
