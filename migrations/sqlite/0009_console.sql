-- The manager console (issue 22): accounts, sessions, failed sign-ins, the audit log.

-- People who sign in to the console. `role`: 'manager' (everything) or 'agent' (works
-- tickets, no user admin). Passwords are argon2id PHC strings; a disabled account cannot
-- sign in and its sessions are closed.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('manager', 'agent')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Signed-in sessions. The cookie holds a random token; only its SHA-256 is stored, so the
-- database alone does not let anyone in. `csrf` is the session's form token.
CREATE TABLE console_sessions (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_by_user ON console_sessions (user_id);

-- Failed sign-ins by account name, for the rate limit (kept in the database so that every
-- instance counts the same).
CREATE TABLE login_failures (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX login_failures_by_name ON login_failures (name, at);

-- Every change made through the console or `ivr users`: who, when, what.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
