//! Builds each node from its raw form, checking every field.

use super::check::NodeCtx;
use super::raw::RawNode;
use super::*;

/// Longest menu option label, in bytes: an announcement to an agent, not a prompt.
const MAX_LABEL: usize = 80;

impl NodeCtx<'_, '_> {
    pub(super) fn entry(&mut self, raw: RawNode, p: &[&str]) -> Option<Node> {
        let kind = "entry";
        let format = match raw.format.as_deref() {
            Some("date") => Some(EntryFormat::Date),
            Some("digits") => Some(EntryFormat::Digits),
            Some("phone") => Some(EntryFormat::Phone),
            other => {
                self.err(format!(
                    "an entry node needs `format` = \"date\", \"digits\" or \"phone\", not {other:?}"
                ));
                None
            }
        };
        let prompt = self.text(raw.prompt, "prompt", kind, p);
        let confirm = self.text(raw.confirm, "confirm", kind, &with_value(p));
        let confirm_caller = match raw.confirm_caller {
            Some(t) if format == Some(EntryFormat::Phone) => {
                Some(self.prompt(&t, "confirm_caller", &with_value(p)))
            }
            Some(_) => {
                self.err("`confirm_caller` applies only to phone entries".into());
                None
            }
            None => None,
        };
        let no_input = self.text(raw.no_input, "no_input", kind, p);
        let invalid = self.text(raw.invalid, "invalid", kind, p);
        let fallback = self.reference(raw.fallback, "fallback", kind);
        let next = self.reference(raw.next, "next", kind);
        let (min_digits, max_digits) = match format {
            Some(EntryFormat::Date) => (8, 8),
            Some(EntryFormat::Phone) => (10, 10),
            _ => (raw.min_digits.unwrap_or(1), raw.max_digits.unwrap_or(20)),
        };
        if format != Some(EntryFormat::Digits)
            && (raw.min_digits.is_some() || raw.max_digits.is_some())
        {
            self.err("`min_digits` and `max_digits` apply only to digits entries".into());
        }
        if !(1..=30).contains(&min_digits) || !(min_digits..=30).contains(&max_digits) {
            self.err("digits entries need 1 ≤ `min_digits` ≤ `max_digits` ≤ 30".into());
        }
        let needed: &[&str] = match format {
            Some(EntryFormat::Date) => &["length", "not_a_date", "future", "too_old"],
            _ => &["length"],
        };
        let errors = raw.errors.unwrap_or_default();
        for n in needed {
            if !errors.contains_key(*n) {
                self.err(format!(
                    "an entry node needs `errors.{n}`, said when the caller's entry is refused for that reason"
                ));
            }
        }
        let mut compiled = BTreeMap::new();
        for (name, text) in &errors {
            if !needed.contains(&name.as_str()) {
                self.err(format!(
                    "`errors.{name}` is not a reason this entry can refuse; reasons: {}",
                    needed.join(", ")
                ));
            }
            let prompt = self.prompt(text, "errors", p);
            compiled.insert(name.clone(), prompt);
        }
        let errors = compiled;
        let var_kind = match format {
            Some(EntryFormat::Date) => VarKind::Date,
            Some(EntryFormat::Phone) => VarKind::Phone,
            _ => VarKind::Digits,
        };
        let var = self
            .required(raw.var, "var", kind)
            .and_then(|v| self.define_var(&v, var_kind, "var"));
        let attempts = raw.attempts.unwrap_or(3);
        if !(1..=5).contains(&attempts) {
            self.err("`attempts` must be 1 to 5".into());
        }
        let timeout = raw.timeout.unwrap_or(10);
        if !(1..=60).contains(&timeout) {
            self.err("`timeout` must be 1 to 60 seconds".into());
        }
        if raw.max_age_years.is_some() && format != Some(EntryFormat::Date) {
            self.err("`max_age_years` applies only to date entries".into());
        }
        Some(Node::Entry(Entry {
            prompt: prompt?,
            format: format?,
            var: var?,
            min_digits,
            max_digits,
            confirm: confirm?,
            confirm_caller,
            errors,
            no_input: no_input?,
            invalid: invalid?,
            fallback: fallback?,
            attempts,
            timeout,
            max_age_years: raw.max_age_years.unwrap_or(5),
            next: next?,
        }))
    }

    /// A transfer's whisper: the node's `whisper` over its target's. A target reached
    /// through an IVR (`send_digits`) or a queue has nobody to hear one.
    fn whisper(&mut self, name: &str, target: &Target, node: Option<bool>) -> Whisper {
        let configured = self
            .loader
            .config
            .whispers
            .get(name)
            .copied()
            .unwrap_or_default();
        match node {
            None => configured,
            Some(false) => Whisper::Off,
            Some(true) => match target {
                Target::Number {
                    send_digits: Some(_),
                    ..
                } => {
                    self.err(format!(
                        "`whisper`: target `{name}` is reached through an IVR (send_digits), \
                         where nobody hears a whisper or presses 1; remove `whisper`"
                    ));
                    Whisper::Off
                }
                Target::Queue { .. } => {
                    self.err(format!(
                        "`whisper` applies to people, and target `{name}` is a queue"
                    ));
                    Whisper::Off
                }
                _ if configured == Whisper::Off => Whisper::Announce,
                _ => configured,
            },
        }
    }

    pub(super) fn build(&mut self, raw: RawNode) -> Option<Node> {
        let Some(kind) = raw.kind.clone() else {
            self.err(format!("needs a `kind` ({})", KINDS.join(", ")));
            return None;
        };
        let kind = kind.as_str();
        let used: &[&str] = match kind {
            "menu" => &[
                "prompt", "options", "no_input", "invalid", "fallback", "timeout", "attempts",
            ],
            "say" => &["text", "next"],
            "transfer" => &[
                "target",
                "closed",
                "failed",
                "wait_message",
                "abandoned",
                "whisper",
            ],
            "ticket" => &["category", "reason", "recording_var", "next"],
            "hours" => &["open", "closed"],
            "voicemail" => &[
                "prompt",
                "max_length",
                "ticket_category",
                "ticket_reason",
                "save_as",
                "next",
            ],
            "notify" => &["contact", "subject", "body", "attach_recording", "next"],
            "hangup" => &["text"],
            "goto" => &["next"],
            "entry" => &[
                "prompt",
                "format",
                "var",
                "min_digits",
                "max_digits",
                "confirm",
                "confirm_caller",
                "errors",
                "no_input",
                "invalid",
                "fallback",
                "attempts",
                "timeout",
                "max_age_years",
                "next",
            ],
            "shopping_dollars" => &[
                "date_var",
                "paid_var",
                "days_var",
                "within_review",
                "unpaid",
                "grace",
                "overdue",
            ],
            "external_ticket" => &[
                "category",
                "var",
                "reason",
                "due_hours",
                "new",
                "pending",
                "overdue",
                "escalated",
            ],
            other => {
                self.err(format!(
                    "unknown kind {other:?}; known: {}",
                    KINDS.join(", ")
                ));
                return None;
            }
        };
        let present = [
            ("prompt", raw.prompt.is_some()),
            ("text", raw.text.is_some()),
            ("options", raw.options.is_some()),
            ("no_input", raw.no_input.is_some()),
            ("invalid", raw.invalid.is_some()),
            ("fallback", raw.fallback.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("attempts", raw.attempts.is_some()),
            ("next", raw.next.is_some()),
            ("target", raw.target.is_some()),
            ("closed", raw.closed.is_some()),
            ("open", raw.open.is_some()),
            ("failed", raw.failed.is_some()),
            ("wait_message", raw.wait_message.is_some()),
            ("whisper", raw.whisper.is_some()),
            ("category", raw.category.is_some()),
            ("reason", raw.reason.is_some()),
            ("max_length", raw.max_length.is_some()),
            ("ticket_category", raw.ticket_category.is_some()),
            ("ticket_reason", raw.ticket_reason.is_some()),
            ("contact", raw.contact.is_some()),
            ("subject", raw.subject.is_some()),
            ("body", raw.body.is_some()),
            ("format", raw.format.is_some()),
            ("var", raw.var.is_some()),
            ("min_digits", raw.min_digits.is_some()),
            ("max_digits", raw.max_digits.is_some()),
            ("confirm", raw.confirm.is_some()),
            ("confirm_caller", raw.confirm_caller.is_some()),
            ("errors", raw.errors.is_some()),
            ("max_age_years", raw.max_age_years.is_some()),
            ("date_var", raw.date_var.is_some()),
            ("paid_var", raw.paid_var.is_some()),
            ("days_var", raw.days_var.is_some()),
            ("within_review", raw.within_review.is_some()),
            ("unpaid", raw.unpaid.is_some()),
            ("grace", raw.grace.is_some()),
            ("overdue", raw.overdue.is_some()),
            ("new", raw.new.is_some()),
            ("pending", raw.pending.is_some()),
            ("escalated", raw.escalated.is_some()),
            ("due_hours", raw.due_hours.is_some()),
            ("save_as", raw.save_as.is_some()),
            ("recording_var", raw.recording_var.is_some()),
            ("abandoned", raw.abandoned.is_some()),
            ("attach_recording", raw.attach_recording.is_some()),
        ];
        let extra: Vec<(&str, bool)> = present
            .iter()
            .filter(|(name, _)| !used.contains(name))
            .copied()
            .collect();
        self.unused(kind, &extra);
        let texts: Vec<String> = self.loader.config.texts.keys().cloned().collect();
        let p_owned: Vec<&str> = PROMPT_PLACEHOLDERS
            .iter()
            .copied()
            .chain(texts.iter().map(String::as_str))
            .collect();
        let p = p_owned.as_slice();
        let next_or_dead_end = |ctx: &mut Self, next: Option<String>| -> Option<NodeRef> {
            match next {
                Some(n) => ctx.parse_ref(&n, "next"),
                None => {
                    ctx.err(format!("has no way out: a {kind} node needs `next`"));
                    None
                }
            }
        };
        match kind {
            "menu" => {
                let prompt = self.text(raw.prompt, "prompt", kind, p);
                let no_input = match raw.no_input {
                    Some(t) => Some(t),
                    None => {
                        self.err("a menu needs no-input handling: set `no_input`, said when the caller presses nothing".into());
                        None
                    }
                };
                let invalid = match raw.invalid {
                    Some(t) => Some(t),
                    None => {
                        self.err("a menu needs invalid-input handling: set `invalid`, said when the caller presses a wrong key".into());
                        None
                    }
                };
                let fallback = match raw.fallback {
                    Some(f) => self.parse_ref(&f, "fallback"),
                    None => {
                        self.err("a menu needs `fallback`, where callers go after the last failed attempt".into());
                        None
                    }
                };
                let mut options = Vec::new();
                let mut labels = BTreeMap::new();
                let mut sets = BTreeMap::new();
                let mut seen = BTreeSet::new();
                let raw_options = raw.options.unwrap_or_default();
                if raw_options.is_empty() {
                    self.err("a menu needs at least one entry in `options`".into());
                }
                for o in raw_options {
                    let mut chars = o.digit.chars();
                    let digit = match (chars.next(), chars.next()) {
                        (Some(c), None) if c.is_ascii_digit() || c == '#' => c,
                        (Some('*'), None) => {
                            self.err("digit `*` is reserved: it repeats the menu".into());
                            continue;
                        }
                        _ => {
                            self.err(format!(
                                "option digit {:?} must be one key, 0-9 or #",
                                o.digit
                            ));
                            continue;
                        }
                    };
                    if !seen.insert(digit) {
                        self.err(format!("duplicate digit `{digit}` in the menu's options"));
                        continue;
                    }
                    if let Some(r) = self.parse_ref(&o.next, "options.next") {
                        options.push((digit, r));
                    }
                    match o.label.as_deref().map(str::trim) {
                        Some(l) if !l.is_empty() && l.len() <= MAX_LABEL && !l.contains('{') => {
                            labels.insert(digit, l.to_string());
                        }
                        Some(_) => self.err(format!(
                            "option `{digit}`'s `label` must be 1 to {MAX_LABEL} characters of \
                             plain text (no placeholders)"
                        )),
                        None => self.err(format!(
                            "option `{digit}` needs a `label`: the caller's concern in a few words, \
                             as the agent who takes a transfer hears it (\"a delivery date\")"
                        )),
                    }
                    if !o.set.is_empty() {
                        let mut assigned = Vec::new();
                        for (name, value) in o.set {
                            if let Some(name) = self.define_var(&name, VarKind::Text, "options.set")
                            {
                                assigned.push((name, value));
                            }
                        }
                        sets.insert(digit, assigned);
                    }
                }
                let timeout = raw.timeout.unwrap_or(5);
                if !(1..=60).contains(&timeout) {
                    self.err("`timeout` must be 1 to 60 seconds".into());
                }
                let attempts = raw.attempts.unwrap_or(3);
                if !(1..=5).contains(&attempts) {
                    self.err("`attempts` must be 1 to 5".into());
                }
                let no_input = no_input.map(|t| self.prompt(&t, "no_input", p));
                let invalid = invalid.map(|t| self.prompt(&t, "invalid", p));
                Some(Node::Menu(Menu {
                    prompt: prompt?,
                    options,
                    labels,
                    sets,
                    no_input: no_input?,
                    invalid: invalid?,
                    fallback: fallback?,
                    timeout,
                    attempts,
                }))
            }
            "say" => {
                let text = self.text(raw.text, "text", kind, p);
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Say {
                    text: text?,
                    next: next?,
                })
            }
            "transfer" => {
                let target = self.required(raw.target, "target", kind)?;
                let Some(t) = self.loader.config.targets.get(&target).cloned() else {
                    let known: Vec<&str> = self
                        .loader
                        .config
                        .targets
                        .keys()
                        .map(String::as_str)
                        .collect();
                    self.err(format!(
                        "unknown target `{target}`; configured: {}",
                        known.join(", ")
                    ));
                    return None;
                };
                let is_queue = matches!(t, Target::Queue { .. });
                if is_queue && raw.wait_message.is_none() {
                    self.err(format!("target `{target}` is a queue: set `wait_message`, said while the caller waits"));
                }
                if !is_queue && raw.abandoned.is_some() {
                    self.err(format!(
                        "`abandoned` applies only to queue targets, and `{target}` is not one"
                    ));
                }
                if !is_queue && raw.wait_message.is_some() {
                    self.err(format!(
                        "`wait_message` applies only to queue targets, and `{target}` is not one"
                    ));
                }
                let whisper = self.whisper(&target, &t, raw.whisper);
                let wait_message = raw
                    .wait_message
                    .as_ref()
                    .map(|w| self.prompt(w, "wait_message", p));
                let closed = self.default_ref(raw.closed, "closed", "common.closed");
                let failed = self.default_ref(raw.failed, "failed", "common.transfer_failed");
                let abandoned = if is_queue {
                    Some(self.default_ref(raw.abandoned, "abandoned", ABANDONED_IN_QUEUE)?)
                } else {
                    None
                };
                Some(Node::Transfer(Transfer {
                    target,
                    closed: closed?,
                    failed: failed?,
                    wait_message,
                    abandoned,
                    whisper,
                }))
            }
            "ticket" => {
                let category = self.category(raw.category, "category", kind);
                let reason = self.text(raw.reason, "reason", kind, NOTIFY_PLACEHOLDERS);
                let recording_var = match raw.recording_var {
                    Some(v) => Some(self.use_var(Some(v), "recording_var", kind)?),
                    None => None,
                };
                self.define_var(TICKET_DUE_VAR, VarKind::DateTime, "ticket");
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Ticket {
                    category: category?,
                    reason: reason?,
                    recording_var,
                    next: next?,
                })
            }
            "entry" => self.entry(raw, p),
            "shopping_dollars" => {
                let date_var = self.use_var(raw.date_var, "date_var", kind);
                let paid_var = self.use_var(raw.paid_var, "paid_var", kind);
                let days_var = self
                    .required(raw.days_var, "days_var", kind)
                    .and_then(|v| self.define_var(&v, VarKind::Number, "days_var"));
                let within_review = self.reference(raw.within_review, "within_review", kind);
                let unpaid = self.reference(raw.unpaid, "unpaid", kind);
                let grace = self.reference(raw.grace, "grace", kind);
                let overdue = self.reference(raw.overdue, "overdue", kind);
                Some(Node::ShoppingDollars(ShoppingDollars {
                    date_var: date_var?,
                    paid_var: paid_var?,
                    days_var: days_var?,
                    within_review: within_review?,
                    unpaid: unpaid?,
                    grace: grace?,
                    overdue: overdue?,
                }))
            }
            "external_ticket" => {
                let category = self.category(raw.category, "category", kind);
                let var = self.use_var(raw.var, "var", kind);
                let reason = self.text(raw.reason, "reason", kind, NOTIFY_PLACEHOLDERS);
                let due_hours = raw.due_hours.unwrap_or(24);
                if !(1..=720).contains(&due_hours) {
                    self.err("`due_hours` must be 1 to 720".into());
                }
                for (name, k) in EXTERNAL_TICKET_VARS {
                    self.define_var(name, *k, "external_ticket");
                }
                let new = self.reference(raw.new, "new", kind);
                let pending = self.reference(raw.pending, "pending", kind);
                let overdue = self.reference(raw.overdue, "overdue", kind);
                let escalated = self.reference(raw.escalated, "escalated", kind);
                Some(Node::ExternalTicket(ExternalTicket {
                    category: category?,
                    var: var?,
                    reason: reason?,
                    due_hours,
                    new: new?,
                    pending: pending?,
                    overdue: overdue?,
                    escalated: escalated?,
                }))
            }
            "hours" => {
                let open = self.reference(raw.open, "open", kind);
                let closed = self.reference(raw.closed, "closed", kind);
                Some(Node::Hours {
                    open: open?,
                    closed: closed?,
                })
            }
            "voicemail" => {
                let prompt = self.text(raw.prompt, "prompt", kind, p);
                // The ticket opened before the tone, unless the node keeps the recording
                // for a later ticket node (`save_as` without a ticket).
                let ticket = match (raw.ticket_category, raw.ticket_reason, &raw.save_as) {
                    (None, None, Some(_)) => None,
                    (c, r, _) => {
                        let c = self.category(c, "ticket_category", kind);
                        let r = self.text(r, "ticket_reason", kind, NOTIFY_PLACEHOLDERS);
                        self.define_var(TICKET_DUE_VAR, VarKind::DateTime, "ticket_category");
                        Some((c?, r?))
                    }
                };
                let save_as = match raw.save_as {
                    Some(v) => Some(self.define_var(&v, VarKind::Url, "save_as")?),
                    None => None,
                };
                let next = next_or_dead_end(self, raw.next);
                if raw.max_length.is_some_and(|m| !(5..=3600).contains(&m)) {
                    self.err("`max_length` must be 5 to 3600 seconds".into());
                }
                Some(Node::Voicemail(Voicemail {
                    prompt: prompt?,
                    max_length: raw.max_length,
                    ticket,
                    save_as,
                    next: next?,
                }))
            }
            "notify" => {
                let contact = self.required(raw.contact, "contact", kind);
                if let Some(c) = &contact {
                    if !self.loader.config.contacts.contains_key(c) {
                        let known: Vec<&str> = self
                            .loader
                            .config
                            .contacts
                            .keys()
                            .map(String::as_str)
                            .collect();
                        self.err(format!(
                            "unknown contact `{c}`; configured: {}",
                            known.join(", ")
                        ));
                    }
                }
                let subject = self.text(raw.subject, "subject", kind, NOTIFY_PLACEHOLDERS);
                let body = self.text(raw.body, "body", kind, NOTIFY_PLACEHOLDERS);
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Notify {
                    contact: contact?,
                    subject: subject?,
                    body: body?,
                    attach_recording: raw.attach_recording.unwrap_or(false),
                    next: next?,
                })
            }
            "hangup" => {
                let text = raw.text.as_ref().map(|t| self.prompt(t, "text", p));
                Some(Node::Hangup { text })
            }
            "goto" => {
                let next = next_or_dead_end(self, raw.next);
                Some(Node::Goto { next: next? })
            }
            _ => None,
        }
    }
}
