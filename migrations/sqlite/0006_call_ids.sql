-- Steps and answered webhooks are keyed by the call's row number, `calls.id`, instead of its
-- CallSid. CallSids are random, so every webhook wrote its entries into pages spread over the
-- whole of two indexes, and each of those pages went to the WAL in full; the calls in
-- progress are the newest rows, so their entries now go to the last pages of the indexes,
-- which one commit shares between many webhooks. The CallSid stays each call's unique name.
--
-- `calls` is rebuilt under the tables that still name it by CallSid (tickets, notifications,
-- call_tickets): their foreign keys are checked when this migration commits, once every call
-- is back. Existing rows keep their order, step ids and answers.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE calls_0005 AS SELECT rowid AS old_rowid, * FROM calls;
CREATE TABLE webhooks_0005 AS SELECT rowid AS old_rowid, * FROM webhooks;
CREATE TABLE steps_0005 AS SELECT * FROM steps;
DROP TABLE steps;
DROP TABLE webhooks;
DROP TABLE calls;

CREATE TABLE calls (
    id               INTEGER PRIMARY KEY,        -- the order in which calls were first seen
    call_sid         TEXT NOT NULL UNIQUE,
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
    last_error       TEXT,
    anonymised_at    INTEGER
);
INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version,
                   started_at, ended_at, status, status_seq, duration_seconds, outcome,
                   recording_url, error_count, last_error, anonymised_at)
SELECT call_sid, line, store_name, from_number, to_number, flow, flow_version,
       started_at, ended_at, status, status_seq, duration_seconds, outcome,
       recording_url, error_count, last_error, anonymised_at
FROM calls_0005 ORDER BY old_rowid;
CREATE INDEX calls_by_start ON calls (started_at DESC, call_sid DESC);
CREATE INDEX calls_by_line ON calls (line, started_at DESC, call_sid DESC);
CREATE INDEX calls_by_outcome ON calls (outcome, started_at DESC);
CREATE INDEX calls_to_anonymise ON calls (started_at) WHERE anonymised_at IS NULL;

-- One row per answered webhook; a retry (same call, same request key) is answered from here.
CREATE TABLE webhooks (
    call_id     INTEGER NOT NULL REFERENCES calls (id),
    request_key TEXT NOT NULL,
    at          INTEGER NOT NULL,
    ticket_id   INTEGER REFERENCES tickets (id),  -- the call's latest ticket when answered
    answer      TEXT NOT NULL,                    -- TwiML, `{ticket_number}` not yet filled
    PRIMARY KEY (call_id, request_key)
);
INSERT INTO webhooks (call_id, request_key, at, ticket_id, answer)
SELECT c.id, w.request_key, w.at, w.ticket_id, w.answer
FROM webhooks_0005 w JOIN calls c ON c.call_sid = w.call_sid ORDER BY w.old_rowid;

CREATE TABLE steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     INTEGER NOT NULL REFERENCES calls (id),
    request_key TEXT NOT NULL,                   -- the webhook that wrote it; retries share it
    idx         INTEGER NOT NULL,                -- position within that webhook's records
    at          INTEGER NOT NULL,
    node        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    said        TEXT NOT NULL DEFAULT '',
    digits      TEXT,
    result      TEXT NOT NULL,
    data        TEXT,                            -- JSON object, NULL when empty
    UNIQUE (call_id, request_key, idx)
);
INSERT INTO steps (id, call_id, request_key, idx, at, node, kind, said, digits, result, data)
SELECT s.id, c.id, s.request_key, s.idx, s.at, s.node, s.kind, s.said, s.digits, s.result, s.data
FROM steps_0005 s JOIN calls c ON c.call_sid = s.call_sid ORDER BY s.id;

DROP TABLE steps_0005;
DROP TABLE webhooks_0005;
DROP TABLE calls_0005;
