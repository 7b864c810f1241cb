-- The browser or program each session was signed in with ("Firefox on
-- Linux") and its address then, shown on the account page. NULL for the
-- sessions made before, and for those a portal handed off.
ALTER TABLE sessions ADD COLUMN agent TEXT;
ALTER TABLE sessions ADD COLUMN client TEXT;
