-- The OpenID Connect provider: authorization codes (kept after use until
-- they expire, so that a second use is recognised), grants (what a client
-- was given for a sign-in) and their tokens, all by hash.
CREATE TABLE oidc_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    session TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    auth_time BIGINT NOT NULL,
    auth_method TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    grant_id TEXT
);
CREATE INDEX oidc_codes_expires ON oidc_codes (expires_at);

CREATE TABLE oidc_grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    auth_method TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    -- When the end of its sign-in was handled (back-channel logout sent
    -- to the client, or nothing to send): once, by one instance.
    logout_sent_at BIGINT
);
CREATE INDEX oidc_grants_logout ON oidc_grants (logout_sent_at);
CREATE INDEX oidc_grants_session ON oidc_grants (session);
CREATE INDEX oidc_grants_user ON oidc_grants (user_id);

CREATE TABLE oidc_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    -- An access token's own scope, when a refresh asked for less.
    scope TEXT
);
CREATE INDEX oidc_tokens_grant ON oidc_tokens (grant_id);
CREATE INDEX oidc_tokens_expires ON oidc_tokens (expires_at);
