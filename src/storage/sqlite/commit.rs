//! What one webhook or status callback writes, inside the writer's transaction: the call's
//! row, the webhook's key (a retry finds it and replays the stored answer), the steps,
//! tickets, notes and e-mails.

use super::queries::CALL_LATEST_TICKET;
use crate::domain::{is_final_status, status_rank};
use crate::records::StepRecord;
use crate::storage::*;
use rusqlite::{params, OptionalExtension, Transaction};

pub(super) struct OwnedStep {
    pub(super) call: CallInfo,
    pub(super) request_key: String,
    pub(super) at: i64,
    pub(super) records: Vec<Record>,
    pub(super) error: Option<String>,
    pub(super) answer: String,
    pub(super) answer_speaks_ticket: bool,
}

/// The call's row number (see migration 0006), its row first written if this is its first
/// webhook or callback.
pub(super) fn call_id(
    tx: &Transaction<'_>,
    call: &CallInfo,
    at: i64,
    status: &str,
) -> rusqlite::Result<i64> {
    let known = tx
        .prepare_cached("SELECT id FROM calls WHERE call_sid = ?1")?
        .query_row([&call.call_sid], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO calls (call_sid, line, store_name, from_number, to_number, flow, flow_version, started_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        call.call_sid,
        call.line,
        call.store_name,
        call.from,
        call.to,
        call.flow,
        call.flow_version,
        at,
        status
    ])?;
    Ok(tx.last_insert_rowid())
}

impl OwnedStep {
    pub(super) fn apply(&self, tx: &Transaction<'_>) -> rusqlite::Result<Committed> {
        let (sid, key, at) = (
            self.call.call_sid.as_str(),
            self.request_key.as_str(),
            self.at,
        );
        let call = call_id(tx, &self.call, at, "in-progress")?;
        let fresh = tx
            .prepare_cached(
                "INSERT INTO webhooks (call_id, request_key, at, answer) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![call, key, at, self.answer])?
            == 1;
        if !fresh {
            return tx
                .prepare_cached(
                    "SELECT ticket_id, answer FROM webhooks WHERE call_id = ?1 AND request_key = ?2",
                )?
                .query_row(params![call, key], |r| {
                    Ok(Committed {
                        ticket: r.get::<_, Option<i64>>(0)?.map(TicketNumber),
                        replay: Some(r.get(1)?),
                    })
                });
        }
        // The call's ticket so far is looked up only when this webhook uses it: most steps
        // neither speak its number nor attach anything to it.
        let speaks_ticket = self.answer_speaks_ticket;
        let mut ticket: Option<TicketNumber> =
            if speaks_ticket || records_use_call_ticket(&self.records) {
                tx.prepare_cached(CALL_LATEST_TICKET)?
                    .query_row([sid], |r| r.get::<_, Option<i64>>(0))?
                    .map(TicketNumber)
            } else {
                None
            };
        for (idx, record) in self.records.iter().enumerate() {
            let idx = idx as i64;
            match record {
                Record::Step(StepRecord {
                    node,
                    kind,
                    said,
                    digits,
                    result,
                    data,
                }) => {
                    let data = if data.is_empty() {
                        None
                    } else {
                        serde_json::to_string(data).ok()
                    };
                    tx.prepare_cached(
                        "INSERT INTO steps (call_id, request_key, idx, at, node, kind, said, digits, result, data) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        call,
                        key,
                        idx,
                        at,
                        node,
                        kind,
                        said.written(ticket.as_ref()),
                        digits,
                        result,
                        data
                    ])?;
                }
                // A ticket written after the call's voicemail (replayed late from a journal,
                // or opened after it) keeps that voicemail.
                Record::Ticket {
                    category,
                    reason,
                    external_ref,
                    due_at,
                    recording_url,
                    node,
                } => {
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO tickets (call_sid, request_key, idx, category, reason, caller_number, created_at, \
                             external_ref, due_at, recording_url, node) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                             COALESCE(?10, (SELECT recording_url FROM calls WHERE call_sid = ?1)), ?11) \
                             ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![
                            sid,
                            key,
                            idx,
                            category,
                            reason.written(ticket.as_ref()),
                            self.call.from,
                            at,
                            external_ref,
                            due_at.map(to_millis),
                            recording_url,
                            node
                        ])?;
                    let id = if inserted == 1 {
                        tx.last_insert_rowid()
                    } else {
                        tx.prepare_cached(
                            "SELECT id FROM tickets WHERE call_sid = ?1 AND request_key = ?2 AND idx = ?3",
                        )?
                        .query_row(params![sid, key, idx], |r| r.get(0))?
                    };
                    ticket = Some(TicketNumber(id));
                }
                Record::Notification {
                    contact,
                    address,
                    subject,
                    body,
                    recording_wait_until,
                } => {
                    // Due at once, or held for the call's voicemail (released by it, or due
                    // at once if the voicemail is in already: records replayed from a
                    // journal may arrive after the voicemail's).
                    tx.prepare_cached(
                        "INSERT INTO notifications (call_sid, ticket_id, request_key, idx, contact, address, subject, body, created_at, \
                         next_attempt_at, attach_recording) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                         CASE WHEN (SELECT recording_url FROM calls WHERE call_sid = ?1) IS NULL THEN ?10 ELSE ?9 END, ?11) \
                         ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        sid,
                        ticket.map(|t| t.0),
                        key,
                        idx,
                        contact,
                        address,
                        subject.written(ticket.as_ref()),
                        body.written(ticket.as_ref()),
                        at,
                        recording_wait_until.map_or(at, to_millis),
                        recording_wait_until.is_some()
                    ])?;
                }
                Record::LinkTicket {
                    ticket_id,
                    relation,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO call_tickets (call_sid, ticket_id, relation, at) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![sid, ticket_id, relation, at])?;
                    ticket = Some(TicketNumber(*ticket_id));
                }
                Record::Escalate { ticket_id } => {
                    tx.prepare_cached(
                        "UPDATE tickets SET status = 'escalated', escalated_at = ?1 \
                         WHERE id = ?2 AND status = 'open'",
                    )?
                    .execute(params![at, ticket_id])?;
                }
                Record::Recording { url, .. } => {
                    tx.prepare_cached("UPDATE calls SET recording_url = ?1 WHERE id = ?2")?
                        .execute(params![url, call])?;
                    // A ticket keeps the first voicemail left for it; a later call's own
                    // voicemail stays on that call, which the ticket lists.
                    if let Some(t) = ticket {
                        tx.prepare_cached(
                            "UPDATE tickets SET recording_url = COALESCE(recording_url, ?1) WHERE id = ?2",
                        )?
                        .execute(params![url, t.0])?;
                    }
                    release_held_notifications(tx, sid, at)?;
                }
                Record::Outcome { value, replace } => {
                    tx.prepare_cached(if *replace {
                        OUTCOME_REPLACE
                    } else {
                        OUTCOME_IF_NONE
                    })?
                    .execute(params![value, call, at])?;
                }
            }
        }
        if let Some(error) = &self.error {
            tx.prepare_cached(
                "UPDATE calls SET error_count = error_count + 1, last_error = ?1 WHERE id = ?2",
            )?
            .execute(params![error, call])?;
        }
        // The stored answer's ticket, for a retry's replay to fill in the same number.
        if let Some(t) = ticket.filter(|_| speaks_ticket) {
            tx.prepare_cached(
                "UPDATE webhooks SET ticket_id = ?1 WHERE call_id = ?2 AND request_key = ?3",
            )?
            .execute(params![t.0, call, key])?;
        }
        Ok(Committed {
            ticket,
            replay: None,
        })
    }
}

/// A flow's outcome replaces the call's unless a later webhook set that one (see migration
/// 0012: records replayed from a journal arrive late).
pub(crate) const OUTCOME_REPLACE: &str = "UPDATE calls SET outcome = ?1, outcome_at = ?3 \
     WHERE id = ?2 AND (outcome_at IS NULL OR outcome_at <= ?3)";
/// A flow's outcome kept only if the call has none yet.
pub(crate) const OUTCOME_IF_NONE: &str = "UPDATE calls SET outcome = ?1, outcome_at = ?3 \
     WHERE id = ?2 AND outcome IS NULL";

/// E-mails of the call held for its voicemail are due at `due` (or sooner).
pub(super) fn release_held_notifications(
    tx: &Transaction<'_>,
    sid: &str,
    due: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE notifications SET next_attempt_at = ?2 WHERE call_sid = ?1 AND status = 'queued' \
         AND attach_recording = 1 AND next_attempt_at > ?2",
    )?
    .execute(params![sid, due])?;
    Ok(())
}

pub(super) struct OwnedStatus {
    pub(super) call: CallInfo,
    pub(super) status: String,
    pub(super) sequence: Option<i64>,
    pub(super) duration_seconds: Option<i64>,
    pub(super) at: i64,
}

impl OwnedStatus {
    pub(super) fn apply(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let call = call_id(tx, &self.call, self.at, &self.status)?;
        let (old_status, old_seq): (String, Option<i64>) = tx
            .prepare_cached("SELECT status, status_seq FROM calls WHERE id = ?1")?
            .query_row([call], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let newer = match (self.sequence, old_seq) {
            (Some(new), Some(old)) => new >= old,
            _ => status_rank(&self.status) >= status_rank(&old_status),
        };
        let regresses = is_final_status(&old_status) && !is_final_status(&self.status);
        if newer && !regresses {
            let is_final = is_final_status(&self.status);
            tx.prepare_cached(
                "UPDATE calls SET status = ?1, status_seq = COALESCE(?2, status_seq), \
                 duration_seconds = COALESCE(?3, duration_seconds), \
                 ended_at = CASE WHEN ?4 THEN COALESCE(ended_at, ?5) ELSE ended_at END, \
                 outcome = CASE WHEN ?4 THEN COALESCE(outcome, 'abandoned') ELSE outcome END \
                 WHERE id = ?6",
            )?
            .execute(params![
                self.status,
                self.sequence,
                self.duration_seconds,
                is_final,
                self.at,
                call
            ])?;
            if is_final {
                release_held_notifications(
                    tx,
                    &self.call.call_sid,
                    self.at + RELEASE_AFTER_END_MS,
                )?;
            }
        } else if self.duration_seconds.is_some() {
            // A late callback may still carry the duration the final one lacked.
            tx.prepare_cached(
                "UPDATE calls SET duration_seconds = COALESCE(duration_seconds, ?1) WHERE id = ?2",
            )?
            .execute(params![self.duration_seconds, call])?;
        }
        Ok(())
    }
}
