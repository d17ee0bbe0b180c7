-- The console's "mine" tab: a person's tickets, newest first. Only assigned tickets are
-- indexed (a ticket is opened unassigned, so the call path writes no entry here).
CREATE INDEX tickets_by_assignee ON tickets (assignee, id DESC) WHERE assignee IS NOT NULL;
