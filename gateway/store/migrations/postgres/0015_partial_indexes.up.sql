-- Most records hold no client trace (trace_id is their own id) and no X-Request-ID (''): the two indexes now hold
-- only the rows that do, so most rows are written into three indexes, not five. A lookup by trace reads this index
-- and the id index (the record whose id is the trace id), one by request id says client_request_id <> ''
-- (gateway/store/trace_sql.py). The old index is dropped first: on PostgreSQL the partitions' indexes keep their names.
DROP INDEX model_cost_logs_trace;
CREATE INDEX model_cost_logs_trace ON model_cost_logs (trace_id) WHERE trace_id <> id;
DROP INDEX model_cost_logs_client_request_id;
CREATE INDEX model_cost_logs_client_request_id ON model_cost_logs (client_request_id) WHERE client_request_id <> '';
