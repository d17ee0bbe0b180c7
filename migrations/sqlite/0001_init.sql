-- Calls, their steps, tickets and queued notifications. Times are Unix milliseconds (UTC).
CREATE TABLE calls (
    call_sid         TEXT PRIMARY KEY NOT NULL,
    line             TEXT NOT NULL,              -- 'guest_care' or 'store'
    store_name       TEXT,
    from_number      TEXT NOT NULL,
    to_number        TEXT NOT NULL,
    flow             TEXT NOT NULL,
    flow_version     TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    status           TEXT NOT NULL,
    status_seq       INTEGER,
    duration_seconds INTEGER,
    outcome          TEXT,
    recording_url    TEXT,
    error_count      INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT
);
CREATE INDEX calls_by_start ON calls (started_at DESC, call_sid DESC);
CREATE INDEX calls_by_line ON calls (line, started_at DESC, call_sid DESC);
CREATE INDEX calls_by_outcome ON calls (outcome, started_at DESC);

CREATE TABLE steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid    TEXT NOT NULL REFERENCES calls (call_sid),
    request_key TEXT NOT NULL,                   -- the webhook that wrote it; retries share it
    idx         INTEGER NOT NULL,                -- position within that webhook's records
    at          INTEGER NOT NULL,
    node        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    said        TEXT NOT NULL DEFAULT '',
    digits      TEXT,
    result      TEXT NOT NULL,
    UNIQUE (call_sid, request_key, idx)
);

CREATE TABLE tickets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- shown as GC-000123
    call_sid      TEXT NOT NULL REFERENCES calls (call_sid),
    request_key   TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    category      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    caller_number TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'open',
    created_at    INTEGER NOT NULL,
    recording_url TEXT,
    UNIQUE (call_sid, request_key, idx)
);
CREATE INDEX tickets_by_call ON tickets (call_sid, id);
CREATE INDEX tickets_by_category ON tickets (category, status, id DESC);
CREATE INDEX tickets_by_status ON tickets (status, id DESC);

CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid    TEXT NOT NULL REFERENCES calls (call_sid),
    ticket_id   INTEGER REFERENCES tickets (id),
    request_key TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    contact     TEXT NOT NULL,
    address     TEXT NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',
    created_at  INTEGER NOT NULL,
    UNIQUE (call_sid, request_key, idx)
);
CREATE INDEX notifications_by_status ON notifications (status, id);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT,
    updated_at INTEGER NOT NULL
);
