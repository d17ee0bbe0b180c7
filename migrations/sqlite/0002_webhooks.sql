-- One row per answered webhook. A retry of the same webhook (same call, same request key)
-- writes nothing new and is answered with the TwiML stored here, so every retry hears the
-- same thing and no record, outcome or error count is applied twice.
CREATE TABLE webhooks (
    call_sid    TEXT NOT NULL REFERENCES calls (call_sid),
    request_key TEXT NOT NULL,
    at          INTEGER NOT NULL,
    ticket_id   INTEGER REFERENCES tickets (id),  -- the call's latest ticket when answered
    answer      TEXT NOT NULL,                    -- TwiML, `{ticket_number}` not yet filled
    PRIMARY KEY (call_sid, request_key)
);
