CREATE INDEX responses_ts ON responses (ts);
