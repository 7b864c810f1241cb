-- The browsers each account has signed in from (the SHA-256 of a random
-- browser cookie), so that a sign-in from a new one can be announced by
-- email. At most 50 kept per account, the newest.
CREATE TABLE known_browsers (
    user_id TEXT NOT NULL,
    browser TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (user_id, browser)
);
