-- Cross-device sign-in: a pending sign-in keeps who asked for it (browser
-- family and OS, the network coarsely), when, and how it was decided: used
-- by its link or code ('used'), approved from another device ('approved',
-- then collected once by the asking browser), or cancelled there
-- ('wrong_number', 'denied'). Every decision races on consumed_at IS NULL.
ALTER TABLE pending_logins ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending_logins ADD COLUMN asked_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE pending_logins ADD COLUMN asked_net TEXT NOT NULL DEFAULT '';
ALTER TABLE pending_logins ADD COLUMN outcome TEXT;
ALTER TABLE pending_logins ADD COLUMN collected_at INTEGER;
