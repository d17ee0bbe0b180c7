-- When the call's outcome was last set by a flow (see SQLite's migration 0012): an outcome
-- replayed late from an instance's journal does not replace a later one.
ALTER TABLE calls ADD COLUMN outcome_at BIGINT;
