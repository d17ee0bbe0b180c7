//! The SQL of the lookups a call step makes, public so that `tests/query_plans.rs` can
//! check that each one uses its index.

/// The newest open or escalated ticket of a category for a partner's ticket number: on the
/// partial index `tickets_by_external_ref` (`tests/query_plans.rs`).
pub const EXTERNAL_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE external_ref = ?1 AND category = ?2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// A call's newest ticket, opened by it or linked to it: on the tickets' key and the call
/// links' key, which both lead with the CallSid.
pub const CALL_LATEST_TICKET: &str =
    "SELECT max(id) FROM (SELECT id FROM tickets WHERE call_sid = ?1 \
     UNION ALL SELECT ticket_id AS id FROM call_tickets WHERE call_sid = ?1)";

/// The caller's newest open ticket opened by a flow node: on `tickets_open_by_caller`.
pub const CALLER_OPEN_TICKET: &str = "SELECT id, status, created_at, due_at FROM tickets \
     WHERE caller_number = ?1 AND node = ?2 AND status IN ('open', 'escalated') \
     ORDER BY id DESC LIMIT 1";

/// A call's steps in order (`GET /api/calls/{sid}`), found by the call's row number: by
/// time, then as written. (Not by id alone: a step that waited in an instance's journal is
/// written after later steps that another instance committed at once.)
pub const CALL_STEPS: &str = "SELECT at, node, kind, said, digits, result, data FROM steps \
     WHERE call_id = (SELECT id FROM calls WHERE call_sid = ?) ORDER BY at, id";
