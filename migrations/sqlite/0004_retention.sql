-- When a call's caller number and recordings were removed under the retention setting.
ALTER TABLE calls ADD COLUMN anonymised_at INTEGER;
CREATE INDEX calls_to_anonymise ON calls (started_at) WHERE anonymised_at IS NULL;
