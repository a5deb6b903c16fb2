CREATE TABLE event_logs (
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    attrs TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX event_logs_ts ON event_logs (ts);
CREATE INDEX event_logs_type_ts ON event_logs (type, ts);
ALTER TABLE model_cost_logs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE model_cost_logs ADD COLUMN route_reason TEXT NOT NULL DEFAULT '';
