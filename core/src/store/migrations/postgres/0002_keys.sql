-- Keys with ids, so that they can be rotated. The first keys are the
-- secrets Sesame created before rotation existed.
CREATE TABLE keys (
    kid TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    secret BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO keys (kid, purpose, secret, created_at)
    SELECT 'cookie-1', 'cookie', value, created_at FROM secrets WHERE name = 'cookie.v1';
INSERT INTO keys (kid, purpose, secret, created_at)
    SELECT 'link-1', 'link', value, created_at FROM secrets WHERE name = 'magic_link.v1';
