-- Policies created through the API, one row per version; a deletion is a version too. seq orders every change
-- across all names: max(seq) is the revision the registry polls.
CREATE TABLE policy_versions (
    seq bigserial PRIMARY KEY,
    name text NOT NULL,
    version integer NOT NULL,
    source text NOT NULL,
    author text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    UNIQUE (name, version)
);
