-- The portal: a site's session made from a portal session (a handoff) names
-- it as its parent and is revoked with it; handoff codes are single use.
ALTER TABLE sessions ADD COLUMN parent TEXT;
CREATE INDEX sessions_parent ON sessions (parent);

CREATE TABLE handoffs (
    code_hash TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    state_hash TEXT NOT NULL,
    session TEXT NOT NULL,
    return_to TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX handoffs_expires ON handoffs (expires_at);
