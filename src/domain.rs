//! Domain newtypes parsed at the edge: call ids, phone numbers, digits, ticket numbers.

use std::fmt;

/// Ticket categories of the Service Desk.
pub const CATEGORIES: &[&str] = &["Initial", "Follow-Up", "OOM", "Shopping Dollars"];

/// Whether a call status (Twilio's `CallStatus`) is final.
pub fn is_final_status(status: &str) -> bool {
    matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    )
}

/// Order of call statuses, for callbacks without a sequence number.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "queued" | "initiated" => 0,
        "ringing" => 1,
        "in-progress" | "answered" => 2,
        s if is_final_status(s) => 3,
        _ => 0,
    }
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A Twilio call identifier (`CA` followed by 32 hex digits on Twilio; other platforms differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallSid(String);

impl CallSid {
    /// Accepts 1 to 64 ASCII letters, digits, `-` or `_`, with at least one letter: call
    /// ids are logged, and a bare number could be someone's phone number.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && raw.bytes().any(|b| b.is_ascii_alphabetic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err("CallSid must be 1 to 64 letters, digits, '-' or '_', with a letter".into())
        }
    }

    /// The identifier as sent by the platform.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Text from outside (an error naming a URL or a node) made fit for the logs: every run of
/// seven or more digits, which could be a phone number, keeps only its last two.
pub fn redact_numbers(text: &str) -> String {
    mask_numbers(text, &[], 1)
}

/// A request path from outside made fit for the logs: percent-escapes decoded, every
/// phone-like number masked (seven or more digits, also written `(204) 555-1234` or
/// `204.555.1234`), and cut to 96 characters.
///
/// ```
/// assert_eq!(ivr::domain::redact_path("/voice/%2B1%20(204)%20555-1234"), "/voice/+* (***) ***-**34");
/// ```
pub fn redact_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len().min(512));
    let mut i = 0;
    while i < bytes.len() && decoded.len() < 512 {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text: String = String::from_utf8_lossy(&decoded)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let masked = mask_numbers(&text, &[' ', '-', '.', '(', ')', '_', '/', '+'], 2);
    masked.chars().take(96).collect()
}

/// Stored text made to forget its caller: web addresses (recordings) are removed, and every
/// number of seven or more digits, written (`2045551234`) or spoken (`2 0 4 5 5 5 1 2 3 4`),
/// keeps only its last two.
pub fn forget_text(text: &str) -> String {
    let mut text = text.to_string();
    while let Some(start) = text.find("https://").or_else(|| text.find("http://")) {
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(text.len(), |n| start + n);
        text.replace_range(start..end, "[removed]");
    }
    mask_numbers(&text, &[' ', ','], 1)
}

/// Masks all but the last two digits of every number of seven or more digits; digits
/// separated by up to `gap` of `separators` count as one number.
fn mask_numbers(text: &str, separators: &[char], gap: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut j = i;
        let sep = |k: usize| chars.get(k).is_some_and(|c| separators.contains(c));
        let digit = |k: usize| chars.get(k).is_some_and(char::is_ascii_digit);
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || (sep(j) && (digit(j + 1) || (gap > 1 && sep(j + 1) && digit(j + 2)))))
        {
            j += 1;
        }
        let digits = chars[i..j].iter().filter(|c| c.is_ascii_digit()).count();
        let mut seen = 0;
        for &c in &chars[i..j] {
            if c.is_ascii_digit() {
                seen += 1;
                out.push(if digits >= 7 && seen <= digits - 2 {
                    '*'
                } else {
                    c
                });
            } else {
                out.push(c);
            }
        }
        i = j;
    }
    out
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller or called number. `Display` masks all but the last four digits, so it is
/// safe in logs; `as_str` gives the full number for the records managers read.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Keeps what the platform sent (E.164, a SIP URI, or words such as `anonymous`),
    /// trimmed and bounded; control characters are dropped.
    pub fn parse(raw: &str) -> Self {
        let cleaned: String = raw
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        Self(cleaned)
    }

    /// The full number, for storage only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number masked to its last four digits, e.g. `+1******1234`.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// Masks every digit but the last four; keeps a leading `+1` country code.
///
/// ```
/// assert_eq!(ivr::domain::mask_phone("+12045551234"), "+1******1234");
/// assert_eq!(ivr::domain::mask_phone("anonymous"), "***");
/// ```
pub fn mask_phone(raw: &str) -> String {
    let digits: Vec<char> = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return if raw.is_empty() {
            String::new()
        } else {
            "***".into()
        };
    }
    let keep = digits.len().min(4);
    let last: String = digits[digits.len() - keep..].iter().collect();
    let prefix = if raw.starts_with("+1") && digits.len() == 11 {
        "+1"
    } else if raw.starts_with('+') {
        "+"
    } else {
        ""
    };
    let hidden = digits.len() - keep - prefix.chars().filter(char::is_ascii_digit).count();
    format!("{prefix}{}{last}", "*".repeat(hidden))
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// Keypad input from a Gather: only `0-9`, `*` and `#`, at most 32 keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digits(String);

impl Digits {
    /// Parses keypad input; anything else is rejected.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() <= 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err("Digits may only hold 0-9, * and #, at most 32 keys".into())
        }
    }

    /// The keys pressed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when nothing was pressed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A human-friendly ticket number, `GC-000123`, derived from the ticket's row id.
///
/// ```
/// use ivr::domain::TicketNumber;
/// assert_eq!(TicketNumber(123).to_string(), "GC-000123");
/// assert_eq!(TicketNumber::parse("GC-000123"), Ok(TicketNumber(123)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TicketNumber(pub i64);

impl TicketNumber {
    /// Parses `GC-000123` (case-insensitive prefix) or a bare number.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let digits = raw
            .strip_prefix("GC-")
            .or_else(|| raw.strip_prefix("gc-"))
            .unwrap_or(raw);
        digits
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Self)
            .ok_or_else(|| format!("not a ticket number: {raw:?} (expected GC-000123)"))
    }

    /// Digits of the number spaced out so text-to-speech reads them one by one.
    pub fn spoken(&self) -> String {
        let text = self.to_string();
        let digits: Vec<String> = text
            .trim_start_matches("GC-")
            .chars()
            .map(String::from)
            .collect();
        format!("G C {}", digits.join(" "))
    }
}

impl fmt::Display for TicketNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GC-{:06}", self.0)
    }
}

/// Whether a name is an identifier of the flow language: 1 to 64 of a-z, 0-9 and `_`
/// (flow files, node ids, call variables, configured texts).
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_north_american_number_is_masked_to_its_last_four_digits() {
        assert_eq!(
            PhoneNumber::parse("+12045551234").to_string(),
            "+1******1234"
        );
        assert_eq!(mask_phone("+442071234567"), "+********4567");
        assert_eq!(mask_phone("anonymous"), "***");
        assert_eq!(mask_phone("12"), "12");
    }

    #[test]
    fn call_sids_with_markup_are_rejected() {
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(CallSid::parse("").is_err());
        assert!(CallSid::parse("CA<script>").is_err());
    }

    #[test]
    fn digits_accept_only_keypad_keys() {
        assert_eq!(Digits::parse(" 12*# ").map(|d| d.0), Ok("12*#".into()));
        assert!(Digits::parse("1a").is_err());
    }

    #[test]
    fn numbers_in_outside_text_are_redacted_for_the_logs() {
        assert_eq!(
            redact_numbers("unknown node `+12045551234` at 4294967296, attempt 12"),
            "unknown node `+*********34` at ********96, attempt 12"
        );
        assert!(
            CallSid::parse("4294967296").is_err(),
            "a bare number is not a call id"
        );
        assert!(CallSid::parse("CA4294967296").is_ok());
    }

    #[test]
    fn forgotten_text_keeps_no_number_or_recording() {
        assert_eq!(
            forget_text("Callback: +12045551234, said 2 0 4 5 5 5 1 2 3 4. Recording: https://api.twilio.com/RE1 ticket GC-000012, 30 days"),
            "Callback: +*********34, said * * * * * * * * 3 4. Recording: [removed] ticket GC-000012, 30 days"
        );
    }

    #[test]
    fn ticket_numbers_round_trip_through_their_display_form() {
        let n = TicketNumber(123);
        assert_eq!(n.to_string(), "GC-000123");
        assert_eq!(TicketNumber::parse("GC-000123"), Ok(n));
        assert_eq!(TicketNumber::parse("123"), Ok(n));
        assert!(TicketNumber::parse("GC-abc").is_err());
        assert_eq!(n.spoken(), "G C 0 0 0 1 2 3");
    }
}
