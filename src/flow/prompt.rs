//! Prompts compiled at load: a flow file's text becomes a list of typed parts once, when
//! the flows are loaded and checked. Configuration (the configured texts, the brand, the
//! website, the texting number, the hours, the review and grace days) is put in as text;
//! what only a call knows (the store, the callback number, call variables, the value read
//! back, the ticket number) stays a typed part for the engine to fill.

use super::speech::spaced;
use crate::config::Config;

/// A prompt or a staff text, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt(Vec<Part>);

/// A part of a [`Prompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as written, configuration already in it.
    Text(String),
    /// `{store_name}`: the store called, or Guest Care.
    StoreName,
    /// `{callback_by}`: how the caller will be called back.
    CallbackBy,
    /// `{var.NAME}`: a call variable, said or written by its kind.
    Var(String),
    /// `{value}`: the entry being read back.
    Value,
    /// `{caller}`: the caller's number (staff texts).
    Caller,
    /// `{call_sid}`: the call's id (staff texts).
    CallSid,
    /// `{ticket_number}`: the call's ticket, known once the records are committed.
    TicketNumber,
}

impl Prompt {
    /// Compiles a text the flow check has accepted. A placeholder it does not know stays
    /// as written (the check refuses those before this runs).
    pub fn compile(text: &str, config: &Config) -> Prompt {
        // Configured texts first, as they may use the placeholders below (such as
        // {website}); two passes, so that a text may use another text.
        let mut expanded = text.to_string();
        for _ in 0..2 {
            if !expanded.contains('{') {
                break;
            }
            for (name, value) in &config.texts {
                let key = format!("{{{name}}}");
                if expanded.contains(&key) {
                    expanded = expanded.replace(&key, value);
                }
            }
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = expanded.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            text.push_str(&rest[..open]);
            let name = &rest[open + 1..close];
            let part = match name {
                "store_name" => Some(Part::StoreName),
                "callback_by" => Some(Part::CallbackBy),
                "value" => Some(Part::Value),
                "caller" => Some(Part::Caller),
                "call_sid" => Some(Part::CallSid),
                "ticket_number" => Some(Part::TicketNumber),
                _ => match name.strip_prefix("var.") {
                    Some(var) => Some(Part::Var(var.to_string())),
                    None => {
                        match config_value(name, config) {
                            Some(v) => text.push_str(&v),
                            None => text.push_str(&rest[open..=close]),
                        }
                        None
                    }
                },
            };
            if let Some(part) = part {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(part);
            }
            rest = &rest[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Prompt(parts)
    }

    /// Its parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }
}

/// A placeholder filled from configuration, the same for every call.
fn config_value(name: &str, c: &Config) -> Option<String> {
    Some(match name {
        "brand" => c.brand.clone(),
        "website" => c.website.clone(),
        "texting_number" => spaced(&c.texting_number),
        "hours" => c.schedule.describe(),
        "review_days" => c.shopping_dollars.review_days.to_string(),
        "grace_days" => c.shopping_dollars.grace_days.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_put_in_at_load_and_the_call_s_parts_stay_typed() {
        let config = Config::from_toml(
            "brand = \"Example Furniture\"\n[texts]\nthanks = \"Thank you for calling {brand}.\"",
        )
        .expect("configuration");
        let p = Prompt::compile(
            "{thanks} Logged ticket {ticket_number} at {store_name} for {var.callback}. {unknown}",
            &config,
        );
        assert_eq!(
            p.parts(),
            [
                Part::Text("Thank you for calling Example Furniture. Logged ticket ".into()),
                Part::TicketNumber,
                Part::Text(" at ".into()),
                Part::StoreName,
                Part::Text(" for ".into()),
                Part::Var("callback".into()),
                Part::Text(". {unknown}".into()),
            ]
        );
        assert!(Prompt::compile("", &config).parts().is_empty());
    }
}
