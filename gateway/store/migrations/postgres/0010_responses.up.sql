-- The Responses API's stored responses (gateway/conversations.py): each response as GET /v1/responses/{id} returns it
-- and its turn's input items, so that previous_response_id finds the earlier turns on any replica and after a
-- restart. ts is the response's created_at: retention (responses.retention_days) removes rows by it. json, not jsonb:
-- the objects come back with their keys in the order they were saved, as the API returned them.
CREATE TABLE responses (
    id text PRIMARY KEY,
    project text NOT NULL,
    ts double precision NOT NULL,
    previous_response_id text,
    response json NOT NULL,
    input_items json NOT NULL
);
CREATE INDEX responses_ts ON responses (ts);
