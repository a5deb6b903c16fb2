-- One row per request whose prompt was compared with the project's recent prompts (gateway/similarity/worker.py).
CREATE TABLE prompt_similarity_logs (
    id text NOT NULL,
    ts double precision NOT NULL,
    project text NOT NULL DEFAULT '',
    model text NOT NULL DEFAULT '',
    prompt_hash text NOT NULL,
    nearest_id text,
    score double precision NOT NULL DEFAULT 0,
    matches jsonb NOT NULL DEFAULT '[]',
    near_duplicate boolean NOT NULL DEFAULT false,
    exact_duplicate boolean NOT NULL DEFAULT false
);
CREATE INDEX prompt_similarity_logs_project_ts ON prompt_similarity_logs (project, ts);
CREATE INDEX prompt_similarity_logs_ts ON prompt_similarity_logs (ts);
CREATE INDEX prompt_similarity_logs_id ON prompt_similarity_logs (id);
