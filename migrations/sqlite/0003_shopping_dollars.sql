-- What steps learned (purchase date, days, payment answer), partner ticket numbers, due and
-- escalation times, and the calls that concern an existing ticket.
ALTER TABLE steps ADD COLUMN data TEXT;             -- JSON object, NULL when empty

ALTER TABLE tickets ADD COLUMN external_ref TEXT;   -- e.g. the Home Service Perks ticket number
ALTER TABLE tickets ADD COLUMN due_at INTEGER;
ALTER TABLE tickets ADD COLUMN escalated_at INTEGER;
CREATE INDEX tickets_by_external_ref ON tickets (external_ref, category, id DESC);
CREATE INDEX tickets_by_due ON tickets (status, due_at);

-- A later call about an existing ticket: linked, or the call that escalated it.
CREATE TABLE call_tickets (
    call_sid  TEXT NOT NULL REFERENCES calls (call_sid),
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    relation  TEXT NOT NULL,                        -- 'linked' or 'escalated'
    at        INTEGER NOT NULL,
    PRIMARY KEY (call_sid, ticket_id, relation)
);
CREATE INDEX call_tickets_by_ticket ON call_tickets (ticket_id);
