-- When the call's outcome was last set by a flow (the `at` of that webhook). With several
-- instances, a webhook's records may reach the database after a later webhook's (the first
-- waited in one instance's journal while another instance committed the next step at
-- once): an outcome is replaced only by one of a webhook at least as late. NULL for the
-- fallback a final status sets ('abandoned') and for calls before this migration.
ALTER TABLE calls ADD COLUMN outcome_at INTEGER;
