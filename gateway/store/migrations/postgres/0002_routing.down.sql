DROP TABLE event_logs;
ALTER TABLE model_cost_logs DROP COLUMN attempts;
ALTER TABLE model_cost_logs DROP COLUMN route_reason;
