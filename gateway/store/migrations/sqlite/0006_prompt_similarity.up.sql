-- One row per request whose prompt was compared with the project's recent prompts (gateway/similarity/worker.py).
CREATE TABLE prompt_similarity_logs (
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    prompt_hash TEXT NOT NULL,
    nearest_id TEXT,
    score REAL NOT NULL DEFAULT 0,
    matches TEXT NOT NULL DEFAULT '[]',
    near_duplicate INTEGER NOT NULL DEFAULT 0,
    exact_duplicate INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX prompt_similarity_logs_project_ts ON prompt_similarity_logs (project, ts);
CREATE INDEX prompt_similarity_logs_ts ON prompt_similarity_logs (ts);
CREATE INDEX prompt_similarity_logs_id ON prompt_similarity_logs (id);
