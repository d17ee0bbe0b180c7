//! Tickets, entries and their checks: opening a ticket (or linking a repeat caller's),
//! due times, the keyed entries of the shopping-dollars line and their read-backs.

use super::*;

impl Run<'_, '_> {
    /// Opens a ticket at `node` (due as the category's service level says), or, for a
    /// caller who already has an open ticket from the same node, links the call to it
    /// instead of opening a second one. Returns the step's result.
    pub(super) fn open_ticket(
        &mut self,
        node: &NodeRef,
        category: &str,
        reason: Said,
        recording_url: Option<String>,
    ) -> Result<String, EngineError> {
        let path = node.to_string();
        if is_callable(self.env.caller) {
            let found = match self.env.caller_tickets.and_then(|m| m.get(&path)) {
                Some(found) => found.clone(),
                None => return Err(EngineError::NeedsCallerTicket { node: path }),
            };
            if let Some(open) = found {
                self.out.records.push(Record::LinkTicket {
                    ticket_id: open.id,
                    relation: "repeat".into(),
                });
                self.state.has_ticket = Some(true);
                self.set_due(open.due_at);
                return Ok(format!(
                    "repeat caller: linked to open ticket {}",
                    TicketNumber(open.id)
                ));
            }
        }
        let c = self.env.config;
        let due = c.sla.due_at(category, self.env.now, &c.schedule);
        self.out.records.push(Record::Ticket {
            category: category.to_string(),
            reason,
            external_ref: None,
            due_at: due,
            recording_url,
            node: Some(path),
        });
        self.state.has_ticket = Some(true);
        self.set_due(due);
        Ok(format!("ticket {category}"))
    }

    /// Keeps the call's ticket's due time for `{callback_by}` in later steps.
    pub(super) fn set_due(&mut self, due: Option<DateTime<Utc>>) {
        match due {
            Some(d) => self.state.vars.insert(
                TICKET_DUE_VAR.to_string(),
                d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            None => self.state.vars.remove(TICKET_DUE_VAR),
        };
    }

    /// `{callback_by}`: "by 10:00 AM on Monday, …" from the call's ticket, or "as soon as
    /// we can" when the call has no due time.
    pub(super) fn callback_by(&self) -> String {
        match self
            .state
            .vars
            .get(TICKET_DUE_VAR)
            .and_then(|due| DateTime::parse_from_rfc3339(due).ok())
        {
            Some(due) => {
                let local = due.with_timezone(&self.env.config.schedule.tz);
                format!(
                    "by {} on {}, {}",
                    local.format("%-I:%M %p"),
                    local.format("%A"),
                    say_date(local.date_naive())
                )
            }
            None => "as soon as we can".into(),
        }
    }

    /// The caller hung up while waiting in a queue: recorded as abandoned, and the
    /// transfer's `abandoned` route taken (a ticket to call them back).
    pub(super) fn abandoned(&mut self, node: NodeRef) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        self.record_step(
            &node,
            "transfer",
            &Said::default(),
            None,
            "caller hung up in the queue".into(),
        );
        self.outcome("abandoned_in_queue".into(), true);
        match &t.abandoned {
            Some(next) => self.walk(next.clone()),
            None => {
                self.out.actions.push(Action::Hangup);
                Ok(())
            }
        }
    }

    pub(super) fn set_ticket_vars(
        &mut self,
        number: Option<&str>,
        logged: Option<DateTime<Utc>>,
        due: Option<DateTime<Utc>>,
    ) {
        let values = [
            number.map(str::to_owned),
            logged.map(|t| self.env.config.schedule.local_date(t).to_string()),
            due.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ];
        for ((name, _), value) in EXTERNAL_TICKET_VARS.iter().zip(values) {
            match value {
                Some(v) => self.state.vars.insert((*name).to_string(), v),
                None => self.state.vars.remove(*name),
            };
        }
    }

    pub(super) fn answer_entry(
        &mut self,
        node: NodeRef,
        e: &Entry,
        attempt: u32,
        phase: Phase,
        digits: Option<String>,
        pending: Option<String>,
    ) -> Result<(), EngineError> {
        let attempt = attempt.clamp(1, e.attempts);
        let keys = digits
            .map(|d| d.trim_end_matches('#').to_string())
            .filter(|d| !d.is_empty());
        match (phase, pending) {
            // The value comes back in the webhook URL: signed, but checked again as if
            // the caller had keyed it, so a crafted URL cannot store what no caller could.
            (Phase::Confirm, Some(value)) if !self.stored_entry_ok(e, &value) => {
                let said = self.ask_entry(&node, e, 1, None);
                self.record_step(
                    &node,
                    "entry",
                    &said,
                    keys.as_deref(),
                    "read-back value not valid: asked again".into(),
                );
                Ok(())
            }
            (Phase::Confirm, Some(value)) => match keys.as_deref() {
                Some("1") => {
                    self.state.vars.insert(e.var.clone(), value.clone());
                    let data = BTreeMap::from([(e.var.clone(), value.clone())]);
                    self.record_data(
                        &node,
                        "entry",
                        &Said::default(),
                        Some("1"),
                        "confirmed".into(),
                        data,
                    );
                    self.walk(e.next.clone())
                }
                Some("2") => {
                    let said = self.ask_entry(&node, e, 1, None);
                    self.record_step(&node, "entry", &said, Some("2"), "enter again".into());
                    Ok(())
                }
                Some("*") => {
                    let said = self.ask_confirm(&node, e, attempt, &value, None);
                    self.record_step(&node, "entry", &said, Some("*"), "repeat".into());
                    Ok(())
                }
                other => {
                    let (lead, what) = match other {
                        None => (&e.no_input, "no input"),
                        Some(_) => (&e.invalid, "invalid input"),
                    };
                    let result = format!(
                        "{what} at the read-back (attempt {attempt} of {})",
                        e.attempts
                    );
                    if attempt >= e.attempts {
                        self.record_step(
                            &node,
                            "entry",
                            &Said::default(),
                            other,
                            format!("{result}: fallback"),
                        );
                        return self.walk(e.fallback.clone());
                    }
                    let said = self.ask_confirm(&node, e, attempt + 1, &value, Some(lead));
                    self.record_step(&node, "entry", &said, other, result);
                    Ok(())
                }
            },
            _ => {
                let Some(keys) = keys else {
                    return self.entry_failed(node, e, attempt, None, &e.no_input, "no input");
                };
                let today = self.env.config.schedule.local_date(self.env.now);
                match validate_entry(e, &keys, today) {
                    Ok(value) => {
                        let said = self.ask_confirm(&node, e, 1, &value, None);
                        let data = BTreeMap::from([(e.var.clone(), value)]);
                        self.record_data(
                            &node,
                            "entry",
                            &said,
                            Some(&keys),
                            "entered".into(),
                            data,
                        );
                        Ok(())
                    }
                    Err(reason) => {
                        let lead = e.errors.get(reason).cloned().unwrap_or_default();
                        self.entry_failed(node, e, attempt, Some(&keys), &lead, reason)
                    }
                }
            }
        }
    }

    pub(super) fn entry_failed(
        &mut self,
        node: NodeRef,
        e: &Entry,
        attempt: u32,
        keys: Option<&str>,
        lead: &Prompt,
        what: &str,
    ) -> Result<(), EngineError> {
        let result = format!("refused: {what} (attempt {attempt} of {})", e.attempts);
        if attempt >= e.attempts {
            self.record_step(
                &node,
                "entry",
                &Said::default(),
                keys,
                format!("{result}: fallback"),
            );
            return self.walk(e.fallback.clone());
        }
        let said = self.ask_entry(&node, e, attempt + 1, Some(lead));
        self.record_step(&node, "entry", &said, keys, result);
        Ok(())
    }
}

/// Whether a caller number is a real number a ticket can be kept for (seven digits or
/// more, not anonymous or masked): only such callers are recognised when they call again.
pub(super) fn is_callable(number: &str) -> bool {
    !number.contains('*') && number.chars().filter(char::is_ascii_digit).count() >= 7
}

/// Checks keys against an entry's format; the stored value, or the reason it is refused
/// (`length`, `not_a_date`, `future`, `too_old`).
pub fn validate_entry(e: &Entry, keys: &str, today: NaiveDate) -> Result<String, &'static str> {
    let len = keys.len() as u32;
    if !keys.bytes().all(|b| b.is_ascii_digit()) || len < e.min_digits || len > e.max_digits {
        return Err("length");
    }
    match e.format {
        EntryFormat::Digits => Ok(keys.to_string()),
        EntryFormat::Phone => {
            if keys.starts_with(['0', '1']) {
                Err("length")
            } else {
                Ok(format!("+1{keys}"))
            }
        }
        EntryFormat::Date => {
            let num = |r: std::ops::Range<usize>| keys.get(r).and_then(|s| s.parse::<u32>().ok());
            let (Some(m), Some(d), Some(y)) = (num(0..2), num(2..4), num(4..8)) else {
                return Err("length");
            };
            let date = i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
                .ok_or("not_a_date")?;
            if date > today {
                return Err("future");
            }
            let oldest = today
                .checked_sub_months(Months::new(12 * e.max_age_years))
                .unwrap_or(NaiveDate::MIN);
            if date < oldest {
                return Err("too_old");
            }
            Ok(date.format("%Y-%m-%d").to_string())
        }
    }
}

impl Run<'_, '_> {
    /// Whether `value`, an entry's stored form carried to the read-back, is one the entry
    /// accepts: the caller's own number (where offered), or keys that validate to it.
    pub(super) fn stored_entry_ok(&self, e: &Entry, value: &str) -> bool {
        if e.format == EntryFormat::Phone
            && e.confirm_caller.is_some()
            && value == self.env.caller
            && is_nanp(value)
        {
            return true;
        }
        let keys = match e.format {
            EntryFormat::Digits => Some(value.to_string()),
            EntryFormat::Phone => value.strip_prefix("+1").map(str::to_owned),
            EntryFormat::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .map(|d| d.format("%m%d%Y").to_string()),
        };
        let today = self.env.config.schedule.local_date(self.env.now);
        keys.is_some_and(|k| validate_entry(e, &k, today).as_deref() == Ok(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::NodeRef;
    use std::collections::BTreeMap;

    fn date_entry() -> Entry {
        let r = NodeRef {
            flow: "f".into(),
            node: "n".into(),
        };
        Entry {
            prompt: Default::default(),
            format: EntryFormat::Date,
            var: "d".into(),
            min_digits: 8,
            max_digits: 8,
            confirm: Default::default(),
            confirm_caller: None,
            errors: BTreeMap::new(),
            no_input: Default::default(),
            invalid: Default::default(),
            fallback: r.clone(),
            attempts: 3,
            timeout: 10,
            max_age_years: 5,
            next: r,
        }
    }

    #[test]
    fn dates_are_checked_for_length_reality_future_and_age() {
        let e = date_entry();
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let check = |k: &str| validate_entry(&e, k, today);
        assert_eq!(check("03052026"), Ok("2026-03-05".into()));
        assert_eq!(check("02292024"), Ok("2024-02-29".into()));
        assert_eq!(check("11232026"), Ok("2026-11-23".into()), "today");
        assert_eq!(
            check("11232021"),
            Ok("2021-11-23".into()),
            "exactly 5 years"
        );
        assert_eq!(check("02292025"), Err("not_a_date"));
        assert_eq!(check("02302026"), Err("not_a_date"));
        assert_eq!(check("13012026"), Err("not_a_date"));
        assert_eq!(check("00000000"), Err("not_a_date"));
        assert_eq!(check("0305202"), Err("length"));
        assert_eq!(check("030520261"), Err("length"));
        assert_eq!(check("11242026"), Err("future"));
        assert_eq!(check("11222021"), Err("too_old"));
    }
}
