//! Flow files as written, before validation: `deny_unknown_fields` refuses a misspelt key.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    pub(super) start: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) nodes: BTreeMap<String, toml::Spanned<RawNode>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) kind: Option<String>,
    pub(super) prompt: Option<String>,
    pub(super) text: Option<String>,
    pub(super) options: Option<Vec<RawOption>>,
    pub(super) no_input: Option<String>,
    pub(super) invalid: Option<String>,
    pub(super) fallback: Option<String>,
    pub(super) timeout: Option<u32>,
    pub(super) attempts: Option<u32>,
    pub(super) next: Option<String>,
    pub(super) target: Option<String>,
    pub(super) closed: Option<String>,
    pub(super) open: Option<String>,
    pub(super) failed: Option<String>,
    pub(super) wait_message: Option<String>,
    pub(super) category: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) max_length: Option<u32>,
    pub(super) ticket_category: Option<String>,
    pub(super) ticket_reason: Option<String>,
    pub(super) contact: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) body: Option<String>,
    pub(super) format: Option<String>,
    pub(super) var: Option<String>,
    pub(super) min_digits: Option<u32>,
    pub(super) max_digits: Option<u32>,
    pub(super) confirm: Option<String>,
    pub(super) confirm_caller: Option<String>,
    pub(super) errors: Option<BTreeMap<String, String>>,
    pub(super) max_age_years: Option<u32>,
    pub(super) date_var: Option<String>,
    pub(super) paid_var: Option<String>,
    pub(super) days_var: Option<String>,
    pub(super) within_review: Option<String>,
    pub(super) unpaid: Option<String>,
    pub(super) grace: Option<String>,
    pub(super) overdue: Option<String>,
    pub(super) new: Option<String>,
    pub(super) pending: Option<String>,
    pub(super) escalated: Option<String>,
    pub(super) due_hours: Option<u32>,
    pub(super) save_as: Option<String>,
    pub(super) recording_var: Option<String>,
    pub(super) abandoned: Option<String>,
    pub(super) attach_recording: Option<bool>,
    /// Transfers: whether the agent hears the guest's concern first (the target's setting
    /// when unset).
    pub(super) whisper: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOption {
    pub(super) digit: String,
    pub(super) next: String,
    /// The concern in a few words, told to the agent who takes a transfer.
    pub(super) label: Option<String>,
    #[serde(default)]
    pub(super) set: BTreeMap<String, String>,
}
