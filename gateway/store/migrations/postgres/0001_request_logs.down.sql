DROP TABLE model_cost_logs;
