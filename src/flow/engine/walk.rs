//! Walking the flow: from a node until the call waits for the caller (a menu, an entry, a
//! transfer, a recording) or ends; and the answers to menus, transfers and recordings.

use super::*;

impl Run<'_, '_> {
    /// Follows nodes from `start` until one waits for the caller or ends the call.
    pub(super) fn walk(&mut self, start: NodeRef) -> Result<(), EngineError> {
        let mut current = start;
        for _ in 0..MAX_NODES_PER_STEP {
            let node = self.node(&current)?;
            let kind = node.kind();
            match node {
                Node::Menu(m) => {
                    let said = self.gather(&current, m, 1, None);
                    self.record_step(&current, kind, &said, None, "prompted".into());
                    return Ok(());
                }
                Node::Say { text, next } => {
                    let said = self.say(self.speak(text));
                    self.record_step(&current, kind, &said, None, "said".into());
                    current = next.clone();
                }
                Node::Ticket {
                    category,
                    reason,
                    recording_var,
                    next,
                } => {
                    let recording_url = recording_var
                        .as_ref()
                        .and_then(|v| self.state.vars.get(v))
                        .filter(|u| !u.is_empty())
                        .cloned();
                    let reason = self.for_staff(reason);
                    let result = self.open_ticket(&current, category, reason, recording_url)?;
                    self.record_step(&current, kind, &Said::default(), None, result);
                    current = next.clone();
                }
                Node::Notify {
                    contact,
                    subject,
                    body,
                    attach_recording,
                    next,
                } => {
                    let address = self
                        .env
                        .config
                        .contacts
                        .get(contact)
                        .cloned()
                        .unwrap_or_default();
                    self.out.records.push(Record::Notification {
                        contact: contact.clone(),
                        address,
                        subject: self.for_staff(subject),
                        body: self.for_staff(body),
                        recording_wait_until: attach_recording.then(|| {
                            self.env.now
                                + chrono::Duration::from_std(
                                    self.env.config.smtp.hold_for_recording,
                                )
                                .unwrap_or_default()
                        }),
                    });
                    self.record_step(
                        &current,
                        kind,
                        &Said::default(),
                        None,
                        format!("notified {contact}"),
                    );
                    current = next.clone();
                }
                Node::Hours { open, closed } => {
                    let is_open = self.open();
                    let result = if is_open { "open" } else { "closed" };
                    self.record_step(&current, kind, &Said::default(), None, result.into());
                    current = if is_open {
                        open.clone()
                    } else {
                        closed.clone()
                    };
                }
                Node::Goto { next } => {
                    self.record_step(&current, kind, &Said::default(), None, format!("to {next}"));
                    current = next.clone();
                }
                Node::Transfer(t) => {
                    if !self.open() {
                        self.record_step(
                            &current,
                            kind,
                            &Said::default(),
                            None,
                            format!("{} not reached: Guest Care closed", t.target),
                        );
                        current = t.closed.clone();
                        continue;
                    }
                    let Some(target) = self.env.config.targets.get(&t.target).cloned() else {
                        return Err(EngineError::UnknownNode(format!("target {}", t.target)));
                    };
                    match target {
                        Target::Queue { name } => self.out.actions.push(Action::Enqueue {
                            queue: name,
                            action: self.link(Endpoint::Queue, &current, 1, false),
                            wait: self.link(Endpoint::QueueWait, &current, 1, false),
                        }),
                        other => self.out.actions.push(Action::Dial {
                            target: other,
                            timeout: self.env.config.dial_timeout,
                            action: self.link(Endpoint::Dial, &current, 1, false),
                            whisper: (t.whisper != super::super::Whisper::Off)
                                .then(|| self.agent_link(Endpoint::Whisper, &current, false)),
                        }),
                    }
                    self.record_step(
                        &current,
                        kind,
                        &Said::default(),
                        None,
                        format!("transferring to {}", t.target),
                    );
                    self.outcome(format!("transferring:{}", t.target), true);
                    return Ok(());
                }
                Node::Voicemail(v) => {
                    // The ticket is opened before the recording, so a guest who hangs up
                    // at the tone still leaves a ticket to call back.
                    if let Some((category, reason)) = &v.ticket {
                        if !self.has_ticket()? {
                            let reason = self.for_staff(reason);
                            let result = self.open_ticket(&current, category, reason, None)?;
                            self.record_step(&current, kind, &Said::default(), None, result);
                        }
                    }
                    let said = self.say(self.speak(&v.prompt));
                    self.out.actions.push(Action::Record {
                        max_length: v
                            .max_length
                            .unwrap_or(self.env.config.voicemail_max_seconds),
                        action: self.link(Endpoint::Record, &current, 1, false),
                        on_silence: self.link(Endpoint::Record, &current, 1, true),
                    });
                    self.record_step(&current, kind, &said, None, "recording".into());
                    return Ok(());
                }
                Node::Entry(e) => {
                    let caller_ok = e.confirm_caller.is_some() && is_nanp(self.env.caller);
                    let said = if caller_ok {
                        let caller = self.env.caller.to_string();
                        self.ask_confirm(&current, e, 1, &caller, None)
                    } else {
                        self.ask_entry(&current, e, 1, None)
                    };
                    self.record_step(&current, kind, &said, None, "prompted".into());
                    return Ok(());
                }
                Node::ShoppingDollars(d) => {
                    let date = self.var(&current, &d.date_var)?;
                    let purchased = NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| {
                        EngineError::MissingVar {
                            node: current.to_string(),
                            var: d.date_var.clone(),
                        }
                    })?;
                    let paid = self.state.vars.get(&d.paid_var).map(String::as_str) == Some("yes");
                    let today = self.env.config.schedule.local_date(self.env.now);
                    let days = (today - purchased).num_days();
                    let rule = &self.env.config.shopping_dollars;
                    let review = i64::from(rule.review_days);
                    let grace = i64::from(rule.grace_days);
                    let (decision, next) = if days <= review {
                        ("within review period", &d.within_review)
                    } else if !paid {
                        ("awaiting first payment", &d.unpaid)
                    } else if days <= review + grace {
                        ("within grace days", &d.grace)
                    } else {
                        ("overdue", &d.overdue)
                    };
                    self.state.vars.insert(d.days_var.clone(), days.to_string());
                    let data = BTreeMap::from([
                        ("purchase_date".to_string(), date.clone()),
                        ("days".to_string(), days.to_string()),
                        (
                            "paid".to_string(),
                            if paid { "yes" } else { "no" }.to_string(),
                        ),
                        ("decision".to_string(), decision.to_string()),
                    ]);
                    self.record_data(
                        &current,
                        kind,
                        &Said::default(),
                        None,
                        format!(
                            "{decision}: {days} days since purchase, paid {}",
                            if paid { "yes" } else { "no" }
                        ),
                        data,
                    );
                    current = next.clone();
                }
                Node::ExternalTicket(t) => {
                    let external_ref = self.var(&current, &t.var)?;
                    let found = match self.env.facts {
                        Some(f) if f.category == t.category && f.external_ref == external_ref => {
                            f.found.clone()
                        }
                        _ => {
                            return Err(EngineError::NeedsLookup {
                                category: t.category.clone(),
                                external_ref,
                            })
                        }
                    };
                    let mut data =
                        BTreeMap::from([("external_ref".to_string(), external_ref.clone())]);
                    let now = self.env.now;
                    let (result, next) = match found {
                        None => {
                            let due = now + chrono::Duration::hours(i64::from(t.due_hours));
                            self.out.records.push(Record::Ticket {
                                category: t.category.clone(),
                                reason: self.for_staff(&t.reason),
                                external_ref: Some(external_ref.clone()),
                                due_at: Some(due),
                                recording_url: None,
                                node: Some(current.to_string()),
                            });
                            self.state.has_ticket = Some(true);
                            self.set_ticket_vars(None, None, Some(due));
                            data.insert("due_at".into(), due.to_rfc3339());
                            (format!("opened a {} ticket", t.category), &t.new)
                        }
                        Some(existing) => {
                            let number = TicketNumber(existing.id).to_string();
                            self.set_ticket_vars(
                                Some(&number),
                                Some(existing.created_at),
                                existing.due_at,
                            );
                            data.insert("ticket".into(), number.clone());
                            let overdue = existing.due_at.is_some_and(|d| d <= now);
                            let (relation, result, next) = if existing.status == "escalated" {
                                (
                                    "linked",
                                    format!("{number} already escalated"),
                                    &t.escalated,
                                )
                            } else if overdue {
                                self.out.records.push(Record::Escalate {
                                    ticket_id: existing.id,
                                });
                                (
                                    "escalated",
                                    format!("{number} overdue: escalated"),
                                    &t.overdue,
                                )
                            } else {
                                ("linked", format!("{number} open, not yet due"), &t.pending)
                            };
                            self.out.records.push(Record::LinkTicket {
                                ticket_id: existing.id,
                                relation: relation.into(),
                            });
                            self.state.has_ticket = Some(true);
                            (result, next)
                        }
                    };
                    self.record_data(&current, kind, &Said::default(), None, result, data);
                    current = next.clone();
                }
                Node::Hangup { text } => {
                    let said = match text {
                        Some(t) => self.say(self.speak(t)),
                        None => Said::default(),
                    };
                    self.out.actions.push(Action::Hangup);
                    self.record_step(&current, kind, &said, None, "hung up".into());
                    let outcome = if self.has_ticket()? {
                        "ticket_logged"
                    } else {
                        "self_service"
                    };
                    self.outcome(outcome.into(), false);
                    return Ok(());
                }
            }
        }
        Err(EngineError::TooManyNodes(current.to_string()))
    }

    pub(super) fn answer_menu(
        &mut self,
        node: NodeRef,
        attempt: u32,
        digits: Option<String>,
    ) -> Result<(), EngineError> {
        let menu = self.menu(&node)?;
        let attempt = attempt.clamp(1, menu.attempts);
        let pressed = digits.filter(|d| !d.is_empty());
        let Some(keys) = pressed else {
            return self.retry(node, menu, attempt, None, &menu.no_input, "no input");
        };
        if keys == "*" {
            let said = self.gather(&node, menu, attempt, None);
            self.record_step(&node, "menu", &said, Some(&keys), "repeat".into());
            return Ok(());
        }
        let mut chars = keys.chars();
        let chosen = match (chars.next(), chars.next()) {
            (Some(k), None) => menu.options.iter().find(|(d, _)| *d == k),
            _ => None,
        };
        match chosen {
            Some((digit, next)) => {
                let set = menu.sets.get(digit).cloned().unwrap_or_default();
                let mut data: BTreeMap<String, String> = set.iter().cloned().collect();
                // The concern in words, kept with the step: what an agent taking a transfer
                // is told of the caller's path.
                if let Some(label) = menu.labels.get(digit) {
                    data.insert(CHOSEN_LABEL.into(), label.clone());
                }
                self.state.vars.extend(set);
                self.record_data(
                    &node,
                    "menu",
                    &Said::default(),
                    Some(&keys),
                    format!("chose {keys}"),
                    data,
                );
                self.walk(next.clone())
            }
            None => self.retry(
                node,
                menu,
                attempt,
                Some(&keys),
                &menu.invalid,
                "invalid input",
            ),
        }
    }

    pub(super) fn retry(
        &mut self,
        node: NodeRef,
        menu: &Menu,
        attempt: u32,
        keys: Option<&str>,
        lead: &Prompt,
        what: &str,
    ) -> Result<(), EngineError> {
        if attempt >= menu.attempts {
            self.record_step(
                &node,
                "menu",
                &Said::default(),
                keys,
                format!("{what} (attempt {attempt} of {}): fallback", menu.attempts),
            );
            return self.walk(menu.fallback.clone());
        }
        let said = self.gather(&node, menu, attempt + 1, Some(lead));
        self.record_step(
            &node,
            "menu",
            &said,
            keys,
            format!("{what} (attempt {attempt} of {})", menu.attempts),
        );
        Ok(())
    }

    pub(super) fn transfer_result(
        &mut self,
        node: NodeRef,
        done: bool,
        status: &str,
    ) -> Result<(), EngineError> {
        let t = self.transfer(&node)?;
        if done {
            self.record_step(&node, "transfer", &Said::default(), None, status.into());
            self.outcome(format!("transferred:{}", t.target), true);
            self.out.actions.push(Action::Hangup);
            return Ok(());
        }
        self.record_step(
            &node,
            "transfer",
            &Said::default(),
            None,
            format!("failed: {status}"),
        );
        self.outcome(format!("transfer_failed:{}", t.target), true);
        self.walk(t.failed.clone())
    }

    pub(super) fn recorded(
        &mut self,
        node: NodeRef,
        url: Option<String>,
        duration: Option<i64>,
    ) -> Result<(), EngineError> {
        let v = match self.node(&node)? {
            Node::Voicemail(v) => v,
            _ => {
                return Err(EngineError::WrongKind {
                    node: node.to_string(),
                    expected: "voicemail",
                })
            }
        };
        let (result, outcome) = match url {
            Some(url) => {
                if let Some(var) = &v.save_as {
                    self.state.vars.insert(var.clone(), url.clone());
                }
                self.out.records.push(Record::Recording {
                    url,
                    duration_seconds: duration,
                });
                (format!("recorded {} s", duration.unwrap_or(0)), "voicemail")
            }
            None => ("nothing recorded".into(), "voicemail_empty"),
        };
        self.record_step(&node, "voicemail", &Said::default(), None, result);
        self.outcome(outcome.into(), true);
        self.walk(v.next.clone())
    }
}
