-- Sign-in requests approved from a signed-in device: a browser showing a QR
-- code ('qr'), or a program given a user code by the device grant
-- ('device', RFC 8628). The user code is kept only as its MAC; the asking
-- side holds the id (a sealed cookie, or the device code, whose hash the id
-- is). Decided once (outcome IS NULL races), collected once.
CREATE TABLE device_requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_code TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    client_id TEXT,
    scope TEXT NOT NULL DEFAULT '',
    return_to TEXT NOT NULL DEFAULT '',
    asked_agent TEXT NOT NULL,
    asked_net TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    outcome TEXT,
    user_id TEXT,
    auth_method TEXT,
    collected_at INTEGER
);
CREATE INDEX device_requests_expires ON device_requests (expires_at);
