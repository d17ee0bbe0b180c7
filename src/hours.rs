//! Guest Care opening hours: a weekly schedule in a time zone, holidays, and a manager's override.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A manager's manual override of the schedule, stored in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverrideState {
    /// Guest Care is open whatever the schedule says.
    Open,
    /// Guest Care is closed whatever the schedule says.
    Closed,
}

impl OverrideState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    /// Parses the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// One opening span within a day, local time; `end` is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Opening time.
    pub start: NaiveTime,
    /// Closing time; `None` is midnight at the end of the day (`24:00`), which no
    /// `NaiveTime` of the day reaches: 23:59:59 in its place closed the last second.
    pub end: Option<NaiveTime>,
}

impl Span {
    fn contains(&self, time: NaiveTime) -> bool {
        self.start <= time && self.end.is_none_or(|end| time < end)
    }

    fn spoken(&self) -> String {
        match self.end {
            None if self.start == NaiveTime::MIN => "24 hours".into(),
            None => format!("{} to midnight", spoken_time(self.start)),
            Some(end) => format!("{} to {}", spoken_time(self.start), spoken_time(end)),
        }
    }
}

/// The weekly schedule, holidays and time zone of Guest Care.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Time zone the schedule is written in.
    pub tz: Tz,
    /// Spans per weekday, Monday first.
    pub weekly: [Vec<Span>; 7],
    /// Days Guest Care is closed all day.
    pub holidays: BTreeSet<NaiveDate>,
}

const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

impl Schedule {
    /// The calendar date at `t` in the schedule's time zone.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// Whether Guest Care is open at `now`, the override winning over the schedule.
    pub fn is_open(&self, now: DateTime<Utc>, over: Option<OverrideState>) -> bool {
        match over {
            Some(OverrideState::Open) => return true,
            Some(OverrideState::Closed) => return false,
            None => {}
        }
        let local = now.with_timezone(&self.tz);
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let time = local.time();
        self.weekly[local.weekday().num_days_from_monday() as usize]
            .iter()
            .any(|s| s.contains(time))
    }

    /// The time `open` of Guest Care's scheduled hours after `start` (holidays closed, the
    /// override ignored: it says what is open now, not in the coming days). A schedule with
    /// no open hours in the coming year counts clock time instead.
    pub fn after_open_time(&self, start: DateTime<Utc>, open: chrono::Duration) -> DateTime<Utc> {
        let mut left = open;
        let mut day = self.local_date(start);
        for _ in 0..366 {
            if !self.holidays.contains(&day) {
                for span in &self.weekly[day.weekday().num_days_from_monday() as usize] {
                    let from = self.instant(day, Some(span.start));
                    let to = match span.end {
                        Some(end) => self.instant(day, Some(end)),
                        None => self.instant(day.succ_opt().unwrap_or(day), None),
                    };
                    let from = from.max(start);
                    if to <= from {
                        continue;
                    }
                    if to - from >= left {
                        return from + left;
                    }
                    left -= to - from;
                }
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        start + open
    }

    /// A local date and time (midnight when `None`) as an instant: the earlier of an
    /// ambiguous time, and the hour after a time that a change to summer time skips.
    fn instant(&self, day: NaiveDate, time: Option<NaiveTime>) -> DateTime<Utc> {
        use chrono::TimeZone;
        let local = day.and_time(time.unwrap_or(NaiveTime::MIN));
        self.tz
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                self.tz
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| local.and_utc())
    }

    /// Midnight at the start of a local date, as an instant (API date filters).
    pub fn start_of_day(&self, day: NaiveDate) -> DateTime<Utc> {
        self.instant(day, None)
    }

    /// Each weekday, Monday first, with its hours as a timetable reads them
    /// (`08:00–12:00, 13:00–17:00`, `closed`).
    pub fn timetable(&self) -> Vec<(&'static str, String)> {
        DAY_NAMES
            .iter()
            .zip(&self.weekly)
            .map(|(day, spans)| {
                let hours = if spans.is_empty() {
                    "closed".to_string()
                } else {
                    spans
                        .iter()
                        .map(|s| {
                            let end = s
                                .end
                                .map_or("24:00".into(), |e| e.format("%H:%M").to_string());
                            format!("{}–{end}", s.start.format("%H:%M"))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                (*day, hours)
            })
            .collect()
    }

    /// The hours in words, for the closed message: days with the same hours are grouped.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut day = 0;
        while day < 7 {
            let spans = &self.weekly[day];
            let mut last = day;
            while last + 1 < 7 && self.weekly[last + 1] == *spans {
                last += 1;
            }
            if !spans.is_empty() {
                let days = match last - day {
                    0 => DAY_NAMES[day].to_string(),
                    1 => format!("{} and {}", DAY_NAMES[day], DAY_NAMES[last]),
                    _ => format!("{} to {}", DAY_NAMES[day], DAY_NAMES[last]),
                };
                let times: Vec<String> = spans.iter().map(Span::spoken).collect();
                parts.push(format!("{days}, {}", times.join(" and ")));
            }
            day = last + 1;
        }
        if parts.is_empty() {
            return "by appointment only".into();
        }
        format!("{}, {} time", parts.join("; "), zone_words(self.tz))
    }
}

fn spoken_time(t: NaiveTime) -> String {
    use chrono::Timelike;
    let (pm, hour) = t.hour12();
    let suffix = if pm { "PM" } else { "AM" };
    if t.minute() == 0 {
        format!("{hour} {suffix}")
    } else {
        format!("{hour}:{:02} {suffix}", t.minute())
    }
}

fn zone_words(tz: Tz) -> String {
    match tz.name() {
        "America/Winnipeg" | "America/Chicago" | "America/Regina" => "Central".into(),
        "America/Toronto" | "America/New_York" | "America/Montreal" => "Eastern".into(),
        "America/Edmonton" | "America/Denver" => "Mountain".into(),
        "America/Vancouver" | "America/Los_Angeles" => "Pacific".into(),
        "America/Halifax" => "Atlantic".into(),
        other => other.rsplit('/').next().unwrap_or(other).replace('_', " "),
    }
}

/// Parses one day's hours: `closed`, or spans such as `08:00-12:00, 13:00-17:00`.
pub fn parse_day(raw: &str) -> Result<Vec<Span>, String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("closed") || raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(|part| {
            let (a, b) = part
                .trim()
                .split_once('-')
                .ok_or_else(|| format!("{part:?} is not a span like 08:00-17:00"))?;
            let start = NaiveTime::parse_from_str(a.trim(), "%H:%M")
                .map_err(|_| format!("{a:?} is not a time like 08:00"))?;
            let end = if b.trim() == "24:00" {
                None
            } else {
                Some(
                    NaiveTime::parse_from_str(b.trim(), "%H:%M")
                        .map_err(|_| format!("{b:?} is not a time like 17:00"))?,
                )
            };
            if end.is_some_and(|end| end <= start) {
                return Err(format!("{part:?} closes before it opens"));
            }
            Ok(Span { start, end })
        })
        .collect()
}

/// Index of a weekday name in the schedule (Monday = 0).
pub fn weekday_index(name: &str) -> Option<usize> {
    name.parse::<Weekday>()
        .ok()
        .map(|d| d.num_days_from_monday() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule() -> Schedule {
        let weekday = parse_day("08:00-20:00").unwrap_or_default();
        let mut weekly: [Vec<Span>; 7] = Default::default();
        for d in weekly.iter_mut().take(5) {
            *d = weekday.clone();
        }
        weekly[5] = parse_day("09:00-17:00").unwrap_or_default();
        Schedule {
            tz: chrono_tz::America::Winnipeg,
            weekly,
            holidays: [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap_or_default()].into(),
        }
    }

    fn winnipeg(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::America::Winnipeg
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn guest_care_is_open_on_a_weekday_morning_in_winnipeg() {
        let s = schedule();
        assert!(s.is_open(winnipeg(2026, 11, 23, 8, 0), None));
        assert!(!s.is_open(winnipeg(2026, 11, 23, 7, 59), None));
        assert!(!s.is_open(winnipeg(2026, 11, 23, 20, 0), None));
        assert!(!s.is_open(winnipeg(2026, 11, 22, 12, 0), None), "Sunday");
    }

    #[test]
    fn holidays_close_and_overrides_win() {
        let s = schedule();
        let christmas = winnipeg(2026, 12, 25, 12, 0);
        assert!(!s.is_open(christmas, None));
        assert!(s.is_open(christmas, Some(OverrideState::Open)));
        assert!(!s.is_open(winnipeg(2026, 11, 23, 12, 0), Some(OverrideState::Closed)));
    }

    #[test]
    fn the_hours_are_described_in_words() {
        assert_eq!(
            schedule().describe(),
            "Monday to Friday, 8 AM to 8 PM; Saturday, 9 AM to 5 PM, Central time"
        );
    }

    #[test]
    fn open_until_24_00_is_open_to_the_last_instant_of_the_day() {
        let mut s = schedule();
        s.weekly = std::array::from_fn(|_| parse_day("00:00-24:00").unwrap_or_default());
        let last = winnipeg(2026, 11, 23, 23, 59) + chrono::Duration::milliseconds(59_999);
        assert!(s.is_open(last, None), "23:59:59.999");
        assert!(s.is_open(winnipeg(2026, 11, 24, 0, 0), None));
        assert!(!s.is_open(winnipeg(2026, 12, 25, 12, 0), None), "a holiday");
        assert_eq!(s.describe(), "Monday to Sunday, 24 hours, Central time");
        s.weekly[0] = parse_day("18:00-24:00").unwrap_or_default();
        assert!(s.is_open(last, None));
        assert!(!s.is_open(winnipeg(2026, 11, 23, 17, 59), None));
        assert!(s
            .describe()
            .starts_with("Monday, 6 PM to midnight; Tuesday to Sunday"));
    }

    #[test]
    fn business_hours_are_counted_in_open_hours_only() {
        let s = schedule();
        let hours = chrono::Duration::hours;
        // Friday 18:00 + 8 business hours: 2 on Friday, 6 on Saturday (9-15).
        assert_eq!(
            s.after_open_time(winnipeg(2026, 11, 27, 18, 0), hours(8)),
            winnipeg(2026, 11, 28, 15, 0)
        );
        // Saturday 16:00 + 4: 1 on Saturday, Sunday closed, 3 on Monday.
        assert_eq!(
            s.after_open_time(winnipeg(2026, 11, 28, 16, 0), hours(4)),
            winnipeg(2026, 11, 30, 11, 0)
        );
        // Opened at night: counted from the next opening.
        assert_eq!(
            s.after_open_time(winnipeg(2026, 11, 23, 22, 30), hours(1)),
            winnipeg(2026, 11, 24, 9, 0)
        );
        // Christmas Day (a Friday in 2026) is skipped.
        assert_eq!(
            s.after_open_time(winnipeg(2026, 12, 24, 19, 0), hours(2)),
            winnipeg(2026, 12, 26, 10, 0)
        );
        let mut never = schedule();
        never.weekly = Default::default();
        let t = winnipeg(2026, 11, 23, 10, 0);
        assert_eq!(never.after_open_time(t, hours(5)), t + hours(5));
    }

    #[test]
    fn bad_spans_are_rejected() {
        assert!(parse_day("17:00-08:00").is_err());
        assert!(parse_day("8am-5pm").is_err());
        assert_eq!(parse_day("closed"), Ok(vec![]));
    }
}
