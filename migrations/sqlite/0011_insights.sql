-- The console's insights read counts rolled up by hour, not the calls and steps themselves:
-- a month of a busy line is a few thousand rows here. A background job rolls each hour up
-- once its calls have ended (three hours after), idempotently; the hours since are counted
-- live when a page is drawn. The call path writes nothing here.
CREATE TABLE call_hours (
    hour    INTEGER NOT NULL,            -- start of the hour, Unix ms (UTC)
    line    TEXT NOT NULL,
    outcome TEXT NOT NULL,               -- '' while a call has none
    calls   INTEGER NOT NULL,
    PRIMARY KEY (hour, line, outcome)
) WITHOUT ROWID;
CREATE TABLE node_hours (
    hour    INTEGER NOT NULL,            -- start of the hour the calls started in
    node    TEXT NOT NULL,               -- flow.node
    reached INTEGER NOT NULL,            -- calls with a step at the node
    chose   INTEGER NOT NULL,            -- calls that chose a menu option there
    PRIMARY KEY (hour, node)
) WITHOUT ROWID;
CREATE TABLE rollups (
    name    TEXT PRIMARY KEY NOT NULL,
    through INTEGER NOT NULL             -- every hour before this is rolled up
);
