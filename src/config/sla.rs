//! `[sla]`: when each ticket category is due, and who hears of overdue tickets.

use crate::hours::Schedule;
use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a ticket of a category has before it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Hours of Guest Care's scheduled opening hours (nights, closed days and holidays
    /// do not count).
    BusinessHours(u32),
    /// Clock hours.
    Hours(u32),
}

impl Due {
    /// Parses `16 business hours` or `24 hours`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let hours = |n: &str| -> anyhow::Result<u32> {
            n.parse::<u32>()
                .ok()
                .filter(|h| (1..=2000).contains(h))
                .ok_or_else(|| anyhow!("{raw:?}: the hours must be a whole number from 1 to 2000"))
        };
        match words.as_slice() {
            [n, "business", "hours" | "hour"] => Ok(Self::BusinessHours(hours(n)?)),
            [n, "hours" | "hour"] => Ok(Self::Hours(hours(n)?)),
            _ => bail!("{raw:?} is not like \"16 business hours\" or \"24 hours\""),
        }
    }

    /// The due time of a ticket opened at `opened`.
    pub fn after(self, opened: DateTime<Utc>, schedule: &Schedule) -> DateTime<Utc> {
        match self {
            Self::BusinessHours(h) => {
                schedule.after_open_time(opened, chrono::Duration::hours(i64::from(h)))
            }
            Self::Hours(h) => opened + chrono::Duration::hours(i64::from(h)),
        }
    }
}

/// The service levels of `[sla]`.
#[derive(Debug, Clone)]
pub struct Sla {
    /// Category → how long its tickets have.
    pub due: BTreeMap<String, Due>,
    /// Categories whose tickets, unresolved past due, are e-mailed to `overdue_contact`.
    pub overdue_categories: Vec<String>,
    /// The contact told of overdue tickets.
    pub overdue_contact: String,
    /// How often the sweep looks for overdue tickets.
    pub sweep_every: Duration,
}

/// `[sla]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSla {
    due: Option<BTreeMap<String, String>>,
    overdue_categories: Option<Vec<String>>,
    overdue_contact: Option<String>,
    sweep_every_seconds: Option<u64>,
}

impl Sla {
    /// The settings over their defaults; categories and the contact are checked.
    pub fn from_file(
        file: FileSla,
        categories: &[&str],
        contacts: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut due = BTreeMap::from([
            ("Initial".to_string(), Due::BusinessHours(16)),
            ("Follow-Up".to_string(), Due::BusinessHours(8)),
            ("OOM".to_string(), Due::BusinessHours(16)),
            ("Shopping Dollars".to_string(), Due::Hours(24)),
        ]);
        let known = |c: &str| -> anyhow::Result<()> {
            if categories.contains(&c) {
                Ok(())
            } else {
                bail!(
                    "sla: unknown ticket category {c:?}; known: {}",
                    categories.join(", ")
                )
            }
        };
        for (category, raw) in file.due.unwrap_or_default() {
            known(&category)?;
            let d = Due::parse(&raw).map_err(|e| anyhow!("sla.due.{category}: {e}"))?;
            due.insert(category, d);
        }
        let overdue_categories = file
            .overdue_categories
            .unwrap_or_else(|| vec!["Follow-Up".into(), "Shopping Dollars".into()]);
        for c in &overdue_categories {
            known(c)?;
        }
        let overdue_contact = file
            .overdue_contact
            .unwrap_or_else(|| "guest_care_manager".into());
        if !contacts.contains_key(&overdue_contact) {
            bail!("sla.overdue_contact {overdue_contact:?} is not one of [contacts]");
        }
        let every = file.sweep_every_seconds.unwrap_or(60);
        if !(1..=86_400).contains(&every) {
            bail!("sla.sweep_every_seconds must be 1 to 86400");
        }
        Ok(Self {
            due,
            overdue_categories,
            overdue_contact,
            sweep_every: Duration::from_secs(every),
        })
    }

    /// When a ticket of `category` opened at `opened` is due; `None` for a category with
    /// no service level.
    pub fn due_at(
        &self,
        category: &str,
        opened: DateTime<Utc>,
        schedule: &Schedule,
    ) -> Option<DateTime<Utc>> {
        self.due.get(category).map(|d| d.after(opened, schedule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_read_as_business_or_clock_hours() {
        assert_eq!(
            Due::parse("16 business hours").ok(),
            Some(Due::BusinessHours(16))
        );
        assert_eq!(Due::parse("24 hours").ok(), Some(Due::Hours(24)));
        assert_eq!(Due::parse("1 hour").ok(), Some(Due::Hours(1)));
        assert!(Due::parse("two days").is_err());
        assert!(Due::parse("0 hours").is_err());
    }

    #[test]
    fn unknown_categories_and_contacts_are_refused() {
        let contacts = BTreeMap::from([("guest_care_manager".to_string(), "m@example.com".into())]);
        let cats = &["Initial", "Follow-Up"];
        let bad_category = FileSla {
            due: Some(BTreeMap::from([("Urgent".into(), "2 hours".into())])),
            ..FileSla::default()
        };
        assert!(Sla::from_file(bad_category, cats, &contacts).is_err());
        let bad_contact = FileSla {
            overdue_contact: Some("nobody".into()),
            overdue_categories: Some(vec!["Follow-Up".into()]),
            ..FileSla::default()
        };
        assert!(Sla::from_file(bad_contact, cats, &contacts).is_err());
    }
}
