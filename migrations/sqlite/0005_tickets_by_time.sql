-- Calls with a ticket of one category within a date range are found from those tickets:
-- a ticket is opened during its call, so its time bounds the call's start (see
-- `calls_query`), and a week's tickets of a category are few next to a week's calls.
CREATE INDEX tickets_by_category_time ON tickets (category, created_at);
