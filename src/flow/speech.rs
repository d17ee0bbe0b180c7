//! How values are said to a caller and shown to staff: dates, phone numbers, digits.

use super::{EntryFormat, VarKind};
use crate::config::Config;
use crate::domain::TicketNumber;
use chrono::{DateTime, Datelike, NaiveDate};

/// Whether a number is a North American number a callback can use.
pub(crate) fn is_nanp(number: &str) -> bool {
    number.strip_prefix("+1").is_some_and(|n| {
        n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with(['0', '1'])
    })
}

pub(crate) fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A date in words: "March 5th, 2026".
pub fn say_date(d: NaiveDate) -> String {
    format!("{} {}, {}", d.format("%B"), ordinal(d.day()), d.year())
}

pub(crate) fn say_entry(format: EntryFormat, value: &str) -> String {
    match format {
        EntryFormat::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(say_date)
            .unwrap_or_default(),
        EntryFormat::Phone => say_phone(value),
        EntryFormat::Digits => spaced(value),
    }
}

/// A 10-digit number read in groups: "2 0 4, 5 5 5, 0 1 2 3".
pub(crate) fn say_phone(value: &str) -> String {
    let digits: String = value.trim_start_matches("+1").chars().collect();
    match (digits.get(0..3), digits.get(3..6), digits.get(6..)) {
        (Some(a), Some(b), Some(c)) if digits.len() == 10 => {
            format!("{}, {}, {}", spaced(a), spaced(b), spaced(c))
        }
        _ => spaced(&digits),
    }
}

/// The last four digits of a number, for a masked read-back.
pub(crate) fn say_last_four(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    spaced(&tail)
}

/// A variable as a prompt says it.
pub(crate) fn say_value(kind: VarKind, value: &str, config: &Config) -> String {
    match kind {
        VarKind::Date => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(say_date)
            .unwrap_or_default(),
        VarKind::DateTime => DateTime::parse_from_rfc3339(value)
            .map(|t| {
                let local = t.with_timezone(&config.schedule.tz);
                format!(
                    "{} on {}",
                    local.format("%-I:%M %p"),
                    say_date(local.date_naive())
                )
            })
            .unwrap_or_default(),
        VarKind::Phone => say_phone(value),
        VarKind::Digits => spaced(value),
        VarKind::Ticket => TicketNumber::parse(value)
            .map(|t| t.spoken())
            .unwrap_or_default(),
        VarKind::Number | VarKind::Text => value.to_string(),
        VarKind::Url => String::new(),
    }
}

/// A variable as staff read it in a ticket or an e-mail.
pub(crate) fn show_value(kind: VarKind, value: &str, config: &Config) -> String {
    match kind {
        VarKind::DateTime => DateTime::parse_from_rfc3339(value)
            .map(|t| {
                t.with_timezone(&config.schedule.tz)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default(),
        _ if value.is_empty() => "(not given)".into(),
        _ => value.to_string(),
    }
}

/// Spaces out digits so text-to-speech reads them one by one.
pub(crate) fn spaced(number: &str) -> String {
    let chars: Vec<String> = number.chars().map(String::from).collect();
    chars.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_said_the_way_a_person_would() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(say_date(d(2026, 3, 5)), "March 5th, 2026");
        assert_eq!(say_date(d(2026, 3, 1)), "March 1st, 2026");
        assert_eq!(say_date(d(2026, 3, 22)), "March 22nd, 2026");
        assert_eq!(say_date(d(2026, 3, 13)), "March 13th, 2026");
        assert_eq!(say_phone("+12045550199"), "2 0 4, 5 5 5, 0 1 9 9");
        assert_eq!(say_last_four("+12045551234"), "1 2 3 4");
        assert!(is_nanp("+12045551234"));
        assert!(!is_nanp("+442071234567"));
        assert!(!is_nanp("anonymous"));
    }
}
