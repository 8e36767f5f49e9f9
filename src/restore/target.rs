//! Recovery targets as the user gives them, parsed once, and rendered as
//! PostgreSQL's `recovery_target_*` settings.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use crate::error::Error;
use crate::wal::{Lsn, TimelineId};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Replay everything archived.
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time {
        time: DateTime<FixedOffset>,
        zone_given: bool,
    },
    Lsn {
        lsn: Lsn,
    },
    Xid {
        xid: u64,
    },
    Name {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineTarget {
    Latest,
    /// The timeline of the backup.
    Current,
    Id(TimelineId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Parses a target time: RFC 3339 (`2026-11-22T04:00:00Z`), or PostgreSQL's
/// form (`2026-11-22 04:00:00[.123456][+01[:00]]`, optionally ` UTC`). A
/// time without a zone is UTC; the second value says whether a zone was given.
pub fn parse_time(s: &str) -> Result<(DateTime<FixedOffset>, bool), Error> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok((dt, true));
    }
    let (body, utc_word) = match t.strip_suffix(" UTC").or_else(|| t.strip_suffix(" GMT")) {
        Some(b) => (b, true),
        None => (t, false),
    };
    let body = body.replacen('T', " ", 1);
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(&body, f) {
            return Ok((dt, true));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&body, f) {
            return Ok((Utc.from_utc_datetime(&naive).fixed_offset(), utc_word));
        }
    }
    Err(Error::Config(format!(
        "--target-time '{s}' is not a time: use RFC 3339 (2026-11-22T04:00:00Z, \
         2026-11-22T05:00:00+01:00) or PostgreSQL's form (2026-11-22 04:00:00+00); \
         a time without a zone is taken as UTC"
    )))
}

pub fn parse_timeline(s: &str) -> Result<TimelineTarget, Error> {
    match s {
        "latest" => Ok(TimelineTarget::Latest),
        "current" => Ok(TimelineTarget::Current),
        n => n
            .parse::<u32>()
            .ok()
            .and_then(TimelineId::new)
            .map(TimelineTarget::Id)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--target-timeline '{s}' is not a timeline: use latest, current or a number like 2"
                ))
            }),
    }
}

/// PostgreSQL's timestamp form, in UTC: `2026-11-22 04:00:00.123456+00`.
pub fn pg_time(t: &DateTime<FixedOffset>) -> String {
    t.with_timezone(&Utc)
        .format("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string()
}

impl Target {
    /// The `recovery_target*` lines for postgresql.auto.conf.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Latest => vec![],
            Target::Immediate => vec![("recovery_target", "immediate".into())],
            Target::Time { time, .. } => vec![("recovery_target_time", pg_time(time))],
            Target::Lsn { lsn } => vec![("recovery_target_lsn", lsn.to_string())],
            Target::Xid { xid } => vec![("recovery_target_xid", xid.to_string())],
            Target::Name { name } => vec![("recovery_target_name", name.clone())],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => write!(f, "the end of the archived WAL (latest)"),
            Target::Immediate => write!(f, "the end of the backup (immediate)"),
            Target::Time { time, zone_given } => write!(
                f,
                "time {}{}",
                pg_time(time),
                if *zone_given {
                    ""
                } else {
                    " (no zone was given: taken as UTC)"
                }
            ),
            Target::Lsn { lsn } => write!(f, "LSN {lsn}"),
            Target::Xid { xid } => write!(f, "transaction {xid}"),
            Target::Name { name } => write!(f, "restore point '{name}'"),
        }
    }
}

/// What a restore is asked to reach.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub target: Target,
    pub timeline: TimelineTarget,
    pub exclusive: bool,
    pub action: TargetAction,
    /// A backup to use (id or name) instead of the newest that fits.
    pub backup: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_forms() {
        let utc = |s| parse_time(s).unwrap().0.with_timezone(&Utc).to_rfc3339();
        assert_eq!(utc("2026-11-22T04:00:00Z"), "2026-11-22T04:00:00+00:00");
        assert_eq!(
            utc("2026-11-22T05:00:00+01:00"),
            "2026-11-22T04:00:00+00:00"
        );
        assert_eq!(utc("2026-11-22 05:00:00+01"), "2026-11-22T04:00:00+00:00");
        assert_eq!(
            utc("2026-11-22 04:00:00.5+00:00"),
            "2026-11-22T04:00:00.500+00:00"
        );
        assert_eq!(utc("2026-11-22 04:00:00 UTC"), "2026-11-22T04:00:00+00:00");
        let (t, zone) = parse_time("2026-11-22 04:00:00").unwrap();
        assert!(!zone);
        assert_eq!(
            t.with_timezone(&Utc).to_rfc3339(),
            "2026-11-22T04:00:00+00:00"
        );
        let e = parse_time("yesterday").unwrap_err().to_string();
        assert!(e.contains("'yesterday'") && e.contains("RFC 3339"), "{e}");
        assert_eq!(
            pg_time(&parse_time("2026-11-22T05:00:00.25+01:00").unwrap().0),
            "2026-11-22 04:00:00.250000+00"
        );
    }

    #[test]
    fn parses_timelines() {
        assert_eq!(parse_timeline("latest").unwrap(), TimelineTarget::Latest);
        assert_eq!(
            parse_timeline("2").unwrap(),
            TimelineTarget::Id(TimelineId::new(2).unwrap())
        );
        assert!(parse_timeline("0").is_err());
    }
}
