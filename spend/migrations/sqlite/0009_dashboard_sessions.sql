-- The dashboard's login sessions, kept on the server so that logging out ends a session for good
-- (routes/ui_session.py). A row is found by the SHA-256 of the browser's random session token
-- (the token itself is never stored); `key_hash` is the master key's digest at login, so changing
-- the key ends every session.

CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    csrf_token TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
