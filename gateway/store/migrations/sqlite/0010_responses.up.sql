-- The Responses API's stored responses (gateway/conversations.py): each response as GET /v1/responses/{id} returns it
-- and its turn's input items, so that previous_response_id finds the earlier turns on any replica and after a
-- restart. ts is the response's created_at: retention (responses.retention_days) removes rows by it.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    ts REAL NOT NULL,
    previous_response_id TEXT,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL
);
CREATE INDEX responses_ts ON responses (ts);
