CREATE TABLE virtual_keys (
    id text PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    key_hash text NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    project text NOT NULL DEFAULT 'default',
    team text NOT NULL DEFAULT '',
    user_id text NOT NULL DEFAULT '',
    role text NOT NULL DEFAULT 'developer',
    allowed_models jsonb NOT NULL DEFAULT '[]',
    rpm bigint NOT NULL DEFAULT 0,
    tpm bigint NOT NULL DEFAULT 0,
    budget_usd double precision NOT NULL DEFAULT 0,
    budget_period text NOT NULL DEFAULT 'month',
    expires_at double precision,
    revoked_at double precision,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at double precision NOT NULL,
    rotated_from text
);
CREATE INDEX virtual_keys_project ON virtual_keys (project, created_at);
