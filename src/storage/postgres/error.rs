//! PostgreSQL's errors, classified: what means the database cannot take writes now (the
//! webhook's records go to the journal) and what refuses this request alone.

/// Whether an SQLSTATE means "not now": a connection lost or refused (class 08), out of
/// resources (53: disk full, too many connections), the server stopping or a statement
/// cancelled by its timeout (57), a system error (58), a read-only server (a standby
/// after a failover, 25006), or a serialization failure or deadlock (40001, 40P01) that a
/// later replay does not meet.
pub(in crate::storage) fn unavailable_state(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
        || matches!(code, "25006" | "40001" | "40P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_timeouts_are_unavailable_and_constraints_are_refused() {
        for code in ["08006", "57P01", "57014", "53100", "25006", "40P01"] {
            assert!(unavailable_state(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22P02"] {
            assert!(!unavailable_state(code), "{code}");
        }
    }
}
