CREATE TABLE policy_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (name, version)
)
