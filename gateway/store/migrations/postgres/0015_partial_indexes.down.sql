DROP INDEX model_cost_logs_client_request_id;
CREATE INDEX model_cost_logs_client_request_id ON model_cost_logs (client_request_id);
DROP INDEX model_cost_logs_trace;
CREATE INDEX model_cost_logs_trace ON model_cost_logs (trace_id);
