-- Fewer index entries written with each ticket (README, Performance): every ticket went into
-- seven indexes, and a step that opens one writes each index's page to the WAL in full.
-- - Most tickets have no partner ticket number and no due time: the indexes that find
--   tickets by those now hold only the tickets that have them. Their queries compare those
--   columns with a value, which only such tickets can match, so SQLite still uses them.
-- - The tickets of a call are found through the key every ticket already has,
--   (call_sid, request_key, idx), which leads with the CallSid: tickets_by_call repeated it
--   and cost a write at a random page of its own for each ticket.
DROP INDEX tickets_by_external_ref;
CREATE INDEX tickets_by_external_ref ON tickets (external_ref, category, id DESC)
    WHERE external_ref IS NOT NULL;
DROP INDEX tickets_by_due;
CREATE INDEX tickets_by_due ON tickets (status, due_at) WHERE due_at IS NOT NULL;
DROP INDEX tickets_by_call;
