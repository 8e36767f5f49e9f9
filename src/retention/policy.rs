//! Retention policies, spelled as Barman spells them (`REDUNDANCY 7`,
//! `RECOVERY WINDOW OF 30 DAYS|WEEKS|MONTHS`) or as the CloudNativePG
//! plugin's `retentionPolicy` (`30d`, `4w`, `6m`), parsed once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::error::Error;

/// The unit of a recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Days,
    Weeks,
    /// Barman counts a month as 31 days.
    Months,
}

impl WindowUnit {
    fn name(self) -> &'static str {
        match self {
            WindowUnit::Days => "DAYS",
            WindowUnit::Weeks => "WEEKS",
            WindowUnit::Months => "MONTHS",
        }
    }

    fn days(self) -> i64 {
        match self {
            WindowUnit::Days => 1,
            WindowUnit::Weeks => 7,
            WindowUnit::Months => 31,
        }
    }
}

/// A retention policy, with Barman's meaning (see docs/retention.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// Keep the newest N DONE backups (keeps count among them).
    Redundancy(u32),
    /// Keep what a point-in-time recovery to any moment of the last N
    /// units needs: every backup that ended inside the window, and the
    /// newest one that ended before it (the base of the window).
    RecoveryWindow { value: u32, unit: WindowUnit },
}

impl RetentionPolicy {
    /// The length of a recovery window.
    pub fn window(&self) -> Option<TimeDelta> {
        match self {
            RetentionPolicy::Redundancy(_) => None,
            RetentionPolicy::RecoveryWindow { value, unit } => {
                Some(TimeDelta::days(i64::from(*value) * unit.days()))
            }
        }
    }

    /// The oldest moment a recovery must still reach, for a window policy:
    /// `now` minus the window.
    pub fn point_of_recoverability(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.window().map(|w| now - w)
    }
}

const SYNTAX: &str = "expected 'REDUNDANCY N', 'RECOVERY WINDOW OF N DAYS|WEEKS|MONTHS', \
                      or the short form Nd, Nw, Nm (e.g. 30d) \
                      (--retention-policy / PITR_RETENTION_POLICY)";

impl FromStr for RetentionPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("retention policy '{s}' {why}: {SYNTAX}"));
        let words: Vec<String> = s.split_whitespace().map(str::to_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let number = |w: &str| -> Result<u32, Error> {
            if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("has no number where one belongs"));
            }
            w.parse().map_err(|_| bad("has a number that is too large"))
        };
        let unit = |w: &str| match w {
            "day" | "days" | "d" => Some(WindowUnit::Days),
            "week" | "weeks" | "w" => Some(WindowUnit::Weeks),
            "month" | "months" | "m" => Some(WindowUnit::Months),
            _ => None,
        };
        let policy = match words.as_slice() {
            ["redundancy", n] => RetentionPolicy::Redundancy(number(n)?),
            ["recovery", "window", "of", n, u] => RetentionPolicy::RecoveryWindow {
                value: number(n)?,
                unit: unit(u).ok_or_else(|| bad("has an unknown unit"))?,
            },
            [short] if short.len() >= 2 => {
                let (n, u) = short.split_at(short.len() - 1);
                let unit = unit(u).ok_or_else(|| bad("is not a policy pitr knows"))?;
                RetentionPolicy::RecoveryWindow {
                    value: number(n)?,
                    unit,
                }
            }
            _ => return Err(bad("is not a policy pitr knows")),
        };
        if policy == RetentionPolicy::Redundancy(0) {
            return Err(bad(
                "would make every backup obsolete; use REDUNDANCY 1 or more",
            ));
        }
        Ok(policy)
    }
}

/// Barman's canonical form, which Barman's own tools accept.
impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionPolicy::Redundancy(n) => write!(f, "REDUNDANCY {n}"),
            RetentionPolicy::RecoveryWindow { value, unit } => {
                write!(f, "RECOVERY WINDOW OF {value} {}", unit.name())
            }
        }
    }
}

impl Serialize for RetentionPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RetentionPolicy {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn reads_barman_and_cnpg_spellings() {
        assert_eq!(p("REDUNDANCY 2"), RetentionPolicy::Redundancy(2));
        assert_eq!(p("  redundancy   7 "), RetentionPolicy::Redundancy(7));
        for (s, value, unit) in [
            ("RECOVERY WINDOW OF 30 DAYS", 30, WindowUnit::Days),
            ("recovery window of 1 day", 1, WindowUnit::Days),
            ("Recovery Window Of 4 Weeks", 4, WindowUnit::Weeks),
            ("RECOVERY WINDOW OF 6 MONTHS", 6, WindowUnit::Months),
            ("30d", 30, WindowUnit::Days),
            ("4w", 4, WindowUnit::Weeks),
            ("6m", 6, WindowUnit::Months),
            ("0d", 0, WindowUnit::Days),
        ] {
            assert_eq!(p(s), RetentionPolicy::RecoveryWindow { value, unit }, "{s}");
        }
    }

    #[test]
    fn prints_what_barman_cloud_backup_delete_accepts() {
        assert_eq!(p("30d").to_string(), "RECOVERY WINDOW OF 30 DAYS");
        assert_eq!(p("4w").to_string(), "RECOVERY WINDOW OF 4 WEEKS");
        assert_eq!(p("redundancy 3").to_string(), "REDUNDANCY 3");
        for s in ["REDUNDANCY 3", "RECOVERY WINDOW OF 2 MONTHS"] {
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn windows_use_barman_units() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let por = |s: &str| p(s).point_of_recoverability(now).unwrap().to_rfc3339();
        assert_eq!(por("7d"), "2026-11-24T12:00:00+00:00");
        assert_eq!(por("2w"), "2026-11-17T12:00:00+00:00");
        // A month is 31 days.
        assert_eq!(por("1m"), "2026-10-31T12:00:00+00:00");
        assert_eq!(p("REDUNDANCY 2").point_of_recoverability(now), None);
    }

    #[test]
    fn rejects_what_it_cannot_read_naming_the_input() {
        for s in [
            "",
            "30",
            "d",
            "30x",
            "-3d",
            "REDUNDANCY",
            "REDUNDANCY -1",
            "REDUNDANCY two",
            "RECOVERY WINDOW OF 30 YEARS",
            "RECOVERY WINDOW 30 DAYS",
            "99999999999d",
        ] {
            let e = s.parse::<RetentionPolicy>().unwrap_err().to_string();
            assert!(e.contains(&format!("'{s}'")), "{e}");
            assert!(e.contains("PITR_RETENTION_POLICY"), "{e}");
        }
        let e = "REDUNDANCY 0".parse::<RetentionPolicy>().unwrap_err();
        assert!(e.to_string().contains("REDUNDANCY 1 or more"), "{e}");
    }
}
