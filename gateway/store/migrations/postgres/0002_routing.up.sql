CREATE TABLE event_logs (
    id text NOT NULL,
    ts double precision NOT NULL,
    type text NOT NULL,
    attrs jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX event_logs_ts ON event_logs (ts);
CREATE INDEX event_logs_type_ts ON event_logs (type, ts);
ALTER TABLE model_cost_logs ADD COLUMN attempts integer NOT NULL DEFAULT 1;
ALTER TABLE model_cost_logs ADD COLUMN route_reason text NOT NULL DEFAULT '';
