-- The client's X-Request-ID, kept beside the record (whose id is the gateway's own), and filterable.
ALTER TABLE model_cost_logs ADD COLUMN client_request_id text NOT NULL DEFAULT '';
CREATE INDEX model_cost_logs_client_request_id ON model_cost_logs (client_request_id);
