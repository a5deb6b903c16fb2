DROP INDEX model_cost_logs_client_request_id;
ALTER TABLE model_cost_logs DROP COLUMN client_request_id;
