CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT 'default',
    team TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT 'developer',
    allowed_models TEXT NOT NULL DEFAULT '[]',
    rpm INTEGER NOT NULL DEFAULT 0,
    tpm INTEGER NOT NULL DEFAULT 0,
    budget_usd REAL NOT NULL DEFAULT 0,
    budget_period TEXT NOT NULL DEFAULT 'month',
    expires_at REAL,
    revoked_at REAL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    rotated_from TEXT
);
CREATE INDEX virtual_keys_project ON virtual_keys (project, created_at)
