//! Barman's retention rules (barman/retention_policies.py), as a pure
//! function of the backups, their keeps, the policy and the time: which
//! backups are VALID, OBSOLETE, POTENTIALLY_OBSOLETE (Barman's `OBSOLETE*`),
//! KEEP:FULL or KEEP:STANDALONE, and why. Backups that are not DONE get no
//! retention status (Barman's `-`); pitr removes FAILED ones and abandoned
//! STARTED ones once a newer DONE backup exists, and never one that may
//! still be running.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use super::policy::RetentionPolicy;
use crate::backup::catalog::CatalogEntry;
use crate::backup::keep::KeepTarget;
use crate::backup::{BackupId, BackupStatus};

/// A backup's retention status, as Barman reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionStatus {
    Valid,
    Obsolete,
    /// Outside the policy, kept for the minimum redundancy (`OBSOLETE*`).
    PotentiallyObsolete,
    KeepFull,
    KeepStandalone,
    /// Not DONE: retention policies do not rate it (Barman's `-`).
    None,
}

impl RetentionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionStatus::Valid => "VALID",
            RetentionStatus::Obsolete => "OBSOLETE",
            RetentionStatus::PotentiallyObsolete => "POTENTIALLY_OBSOLETE",
            RetentionStatus::KeepFull => "KEEP:FULL",
            RetentionStatus::KeepStandalone => "KEEP:STANDALONE",
            RetentionStatus::None => "NONE",
        }
    }

    fn of_keep(k: KeepTarget) -> Self {
        match k {
            KeepTarget::Full => RetentionStatus::KeepFull,
            KeepTarget::Standalone => RetentionStatus::KeepStandalone,
        }
    }
}

impl fmt::Display for RetentionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RetentionStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a backup got its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// One of the newest `redundancy` DONE backups (1 = the newest).
    WithinRedundancy { rank: usize, redundancy: u32 },
    /// Older than the newest `redundancy` DONE backups.
    BeyondRedundancy { redundancy: u32 },
    /// Ended after the point of recoverability.
    InsideWindow { por: DateTime<Utc> },
    /// The newest backup that ended before the point of recoverability:
    /// recoveries to the start of the window begin from it.
    BaseOfWindow { por: DateTime<Utc> },
    /// Older than the base of the window.
    OutsideWindow { base: BackupId },
    /// Outside the policy, kept so that `minimum` backups remain.
    MinimumRedundancy { minimum: u32 },
    /// A keep annotation (pitr backup keep / barman-cloud-backup-keep).
    Keep(KeepTarget),
    /// FAILED, or STARTED and abandoned, with a newer DONE backup: removed.
    Superseded { status: BackupStatus, by: BackupId },
    /// FAILED with no newer DONE backup: kept so that the failure shows.
    NewestFailure,
    /// STARTED less than the abandon time ago: it may still be running.
    MaybeRunning,
    /// Another status (WAITING_FOR_WALS, ...): never touched.
    OtherStatus(BackupStatus),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%:z").to_string();
        match self {
            Reason::WithinRedundancy { rank, redundancy } => write!(
                f,
                "DONE backup {rank} of the newest {redundancy} the policy keeps"
            ),
            Reason::BeyondRedundancy { redundancy } => {
                write!(f, "older than the newest {redundancy} DONE backups")
            }
            Reason::InsideWindow { por } => {
                write!(f, "ended inside the window (after {})", t(por))
            }
            Reason::BaseOfWindow { por } => write!(
                f,
                "the newest backup that ended before {}: the base of the window",
                t(por)
            ),
            Reason::OutsideWindow { base } => {
                write!(f, "older than {base}, the base of the window")
            }
            Reason::MinimumRedundancy { minimum } => write!(
                f,
                "outside the policy, kept for the minimum redundancy of {minimum}"
            ),
            Reason::Keep(target) => write!(f, "kept (target {target})"),
            Reason::Superseded { status, by } => {
                write!(f, "{status}, and the newer backup {by} is DONE")
            }
            Reason::NewestFailure => write!(f, "FAILED, and no newer backup is DONE yet"),
            Reason::MaybeRunning => write!(f, "STARTED recently: it may still be running"),
            Reason::OtherStatus(s) => write!(f, "status {s}: left alone"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub backup_id: BackupId,
    pub status: BackupStatus,
    pub retention: RetentionStatus,
    /// Whether expire removes it.
    pub delete: bool,
    pub reason: Reason,
}

/// The settings the rules need.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub policy: RetentionPolicy,
    pub minimum_redundancy: u32,
    pub now: DateTime<Utc>,
    /// A STARTED backup begun longer ago than this was abandoned.
    pub abandoned_after: chrono::TimeDelta,
}

/// When a backup started: its begin_time, or the local time its id names.
fn started_at(e: &CatalogEntry) -> Option<DateTime<Utc>> {
    e.info
        .begin_time
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            NaiveDateTime::parse_from_str(e.info.backup_id.as_str(), "%Y%m%dT%H%M%S")
                .ok()
                .and_then(|n| Local.from_local_datetime(&n).earliest())
                .map(|t| t.with_timezone(&Utc))
        })
}

/// Rates every backup in `entries` (any order); returns the verdicts
/// oldest first.
pub fn classify(
    entries: &[CatalogEntry],
    keeps: &BTreeMap<BackupId, KeepTarget>,
    rules: &Rules,
) -> Vec<Verdict> {
    let mut sorted: Vec<&CatalogEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.info.backup_id.cmp(&b.info.backup_id));
    let done = |e: &CatalogEntry| e.info.status == BackupStatus::Done;
    let rated = match rules.policy {
        RetentionPolicy::Redundancy(n) => redundancy(&sorted, keeps, n, rules),
        RetentionPolicy::RecoveryWindow { .. } => window(&sorted, keeps, rules),
    };
    let newest_done = sorted
        .iter()
        .rev()
        .find(|e| done(e))
        .map(|e| e.info.backup_id.clone());
    let mut out: Vec<Verdict> = sorted
        .iter()
        .zip(rated)
        .map(|(e, rated)| {
            let id = e.info.backup_id.clone();
            let status = e.info.status.clone();
            let (retention, reason) = match rated {
                Some(r) => r,
                None => (RetentionStatus::None, other(e, newest_done.as_ref(), rules)),
            };
            let delete = retention == RetentionStatus::Obsolete
                || matches!(reason, Reason::Superseded { .. });
            Verdict {
                backup_id: id,
                status,
                retention,
                delete,
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| a.backup_id.cmp(&b.backup_id));
    out
}

/// A backup that is not DONE: removed only when a newer backup is DONE,
/// and a STARTED one only when it was abandoned.
fn other(e: &CatalogEntry, newest_done: Option<&BackupId>, rules: &Rules) -> Reason {
    let newer_done = newest_done.filter(|d| **d > e.info.backup_id).cloned();
    match &e.info.status {
        BackupStatus::Failed => match newer_done {
            Some(by) => Reason::Superseded {
                status: BackupStatus::Failed,
                by,
            },
            None => Reason::NewestFailure,
        },
        BackupStatus::Started => {
            let abandoned = started_at(e)
                .is_some_and(|t| rules.now.signed_duration_since(t) > rules.abandoned_after);
            match newer_done {
                Some(by) if abandoned => Reason::Superseded {
                    status: BackupStatus::Started,
                    by,
                },
                _ => Reason::MaybeRunning,
            }
        }
        s => Reason::OtherStatus(s.clone()),
    }
}

type Rated = Option<(RetentionStatus, Reason)>;

/// REDUNDANCY N: the newest max(N, minimum) DONE backups are VALID; keeps
/// count among them; older DONE backups are OBSOLETE unless kept.
fn redundancy(
    sorted: &[&CatalogEntry],
    keeps: &BTreeMap<BackupId, KeepTarget>,
    n: u32,
    rules: &Rules,
) -> Vec<Rated> {
    let redundancy = n.max(rules.minimum_redundancy);
    let mut out = vec![None; sorted.len()];
    let mut i = 0usize;
    for (slot, e) in sorted.iter().enumerate().rev() {
        if e.info.status != BackupStatus::Done {
            continue;
        }
        let rated = match keeps.get(&e.info.backup_id) {
            Some(k) => (RetentionStatus::of_keep(*k), Reason::Keep(*k)),
            None if i < redundancy as usize => (
                RetentionStatus::Valid,
                Reason::WithinRedundancy {
                    rank: i + 1,
                    redundancy,
                },
            ),
            None => (
                RetentionStatus::Obsolete,
                Reason::BeyondRedundancy { redundancy },
            ),
        };
        out[slot] = Some(rated);
        i += 1;
    }
    out
}

/// RECOVERY WINDOW: DONE backups that ended inside the window are VALID,
/// and so is the newest one that ended before it; older ones are OBSOLETE,
/// or POTENTIALLY_OBSOLETE while fewer than the minimum redundancy are
/// kept; keeps stay whatever their age.
fn window(
    sorted: &[&CatalogEntry],
    keeps: &BTreeMap<BackupId, KeepTarget>,
    rules: &Rules,
) -> Vec<Rated> {
    let por = rules
        .policy
        .point_of_recoverability(rules.now)
        .expect("a window policy");
    let minimum = rules.minimum_redundancy as usize;
    let mut out = vec![None; sorted.len()];
    let mut base: Option<BackupId> = None;
    let mut valid = 0usize;
    for (slot, e) in sorted.iter().enumerate().rev() {
        if e.info.status != BackupStatus::Done {
            continue;
        }
        let keep = keeps.get(&e.info.backup_id).copied();
        let rated = match &base {
            Some(base) => {
                let rated = match (keep, valid < minimum) {
                    (Some(k), _) => (RetentionStatus::of_keep(k), Reason::Keep(k)),
                    (None, true) => (
                        RetentionStatus::PotentiallyObsolete,
                        Reason::MinimumRedundancy {
                            minimum: rules.minimum_redundancy,
                        },
                    ),
                    (None, false) => (
                        RetentionStatus::Obsolete,
                        Reason::OutsideWindow { base: base.clone() },
                    ),
                };
                if valid < minimum {
                    valid += 1;
                }
                rated
            }
            None => {
                valid += 1;
                // Barman compares the end time; a DONE backup without one
                // is treated as inside the window (kept).
                let ended_before = e.info.end_time.is_some_and(|t| t < por);
                if ended_before {
                    base = Some(e.info.backup_id.clone());
                }
                match keep {
                    Some(k) => (RetentionStatus::of_keep(k), Reason::Keep(k)),
                    None if ended_before => (RetentionStatus::Valid, Reason::BaseOfWindow { por }),
                    None => (RetentionStatus::Valid, Reason::InsideWindow { por }),
                }
            }
        };
        out[slot] = Some(rated);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::BackupInfo;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A backup whose id is `days_ago` days before now, ended then too.
    fn b(days_ago: i64, status: BackupStatus) -> CatalogEntry {
        let t = now() - TimeDelta::days(days_ago);
        let id = BackupId::from_time(t.with_timezone(&Local));
        let mut info = BackupInfo::new(id, "main");
        info.status = status;
        info.begin_time = Some(t.fixed_offset());
        info.end_time = Some((t + TimeDelta::minutes(5)).fixed_offset());
        CatalogEntry {
            info,
            details: None,
        }
    }

    fn done(days_ago: &[i64]) -> Vec<CatalogEntry> {
        days_ago.iter().map(|d| b(*d, BackupStatus::Done)).collect()
    }

    fn rules(policy: &str, minimum: u32) -> Rules {
        Rules {
            policy: policy.parse().unwrap(),
            minimum_redundancy: minimum,
            now: now(),
            abandoned_after: TimeDelta::hours(6),
        }
    }

    /// The statuses, oldest first, as Barman prints them.
    fn statuses(
        entries: &[CatalogEntry],
        keeps: &[(usize, KeepTarget)],
        r: &Rules,
    ) -> Vec<&'static str> {
        let keeps: BTreeMap<BackupId, KeepTarget> = keeps
            .iter()
            .map(|(i, k)| (entries[*i].info.backup_id.clone(), *k))
            .collect();
        classify(entries, &keeps, r)
            .iter()
            .map(|v| {
                assert_eq!(
                    v.delete,
                    v.retention == RetentionStatus::Obsolete
                        || matches!(v.reason, Reason::Superseded { .. })
                );
                v.retention.as_str()
            })
            .collect()
    }

    #[test]
    fn redundancy_keeps_the_newest_n_done_backups() {
        // Oldest first: 40, 30, 20, 10, 1 days ago.
        let e = done(&[40, 30, 20, 10, 1]);
        assert_eq!(
            statuses(&e, &[], &rules("REDUNDANCY 2", 0)),
            ["OBSOLETE", "OBSOLETE", "OBSOLETE", "VALID", "VALID"]
        );
        // The minimum redundancy raises the count.
        assert_eq!(
            statuses(&e, &[], &rules("REDUNDANCY 2", 3)),
            ["OBSOLETE", "OBSOLETE", "VALID", "VALID", "VALID"]
        );
        // Keeps count among the newest N (Barman's `i` counts every DONE
        // backup) and are never obsolete.
        assert_eq!(
            statuses(
                &e,
                &[(4, KeepTarget::Standalone), (0, KeepTarget::Full)],
                &rules("REDUNDANCY 2", 0)
            ),
            [
                "KEEP:FULL",
                "OBSOLETE",
                "OBSOLETE",
                "VALID",
                "KEEP:STANDALONE"
            ]
        );
    }

    #[test]
    fn failed_backups_are_not_counted_and_go_once_superseded() {
        let mut e = done(&[40, 30, 1]);
        e.insert(2, b(20, BackupStatus::Failed));
        e.push(b(0, BackupStatus::Failed));
        let r = rules("REDUNDANCY 2", 0);
        let v = classify(&e, &BTreeMap::new(), &r);
        let got: Vec<(&str, bool)> = v.iter().map(|v| (v.retention.as_str(), v.delete)).collect();
        assert_eq!(
            got,
            [
                ("OBSOLETE", true),
                ("VALID", false),
                ("NONE", true), // FAILED, older than the newest DONE
                ("VALID", false),
                ("NONE", false), // the newest FAILED shows
            ]
        );
        assert!(
            matches!(v[2].reason, Reason::Superseded { .. }),
            "{}",
            v[2].reason
        );
        assert_eq!(v[4].reason, Reason::NewestFailure);
    }

    #[test]
    fn started_backups_are_removed_only_when_abandoned() {
        let mut e = done(&[10, 1]);
        let mut running = b(0, BackupStatus::Started);
        running.info.begin_time = Some((now() - TimeDelta::hours(1)).fixed_offset());
        let mut old_running = b(5, BackupStatus::Started); // older than a DONE one
        old_running.info.begin_time = Some((now() - TimeDelta::hours(2)).fixed_offset());
        e.push(running);
        e.push(old_running);
        e.push(b(20, BackupStatus::Started)); // abandoned long ago
        let v = classify(&e, &BTreeMap::new(), &rules("REDUNDANCY 5", 0));
        let by_reason: Vec<(String, bool)> =
            v.iter().map(|v| (v.reason.to_string(), v.delete)).collect();
        assert!(by_reason[0].1, "abandoned STARTED goes: {by_reason:?}");
        assert!(by_reason[0].0.starts_with("STARTED, and the newer backup"));
        assert_eq!(v[2].reason, Reason::MaybeRunning, "begun 2 hours ago");
        assert!(!v[2].delete);
        assert_eq!(v[4].reason, Reason::MaybeRunning);
        assert!(!v[4].delete);
    }

    #[test]
    fn recovery_window_keeps_the_base_of_the_window() {
        // Barman's example: a 30 day window; backups ended 40, 35, 20, 10
        // and 1 days ago. 35 is the newest that ended before the window
        // opens: recoveries to 30 days ago start from it, so it is VALID.
        let e = done(&[40, 35, 20, 10, 1]);
        let r = rules("RECOVERY WINDOW OF 30 DAYS", 0);
        assert_eq!(
            statuses(&e, &[], &r),
            ["OBSOLETE", "VALID", "VALID", "VALID", "VALID"]
        );
        let v = classify(&e, &BTreeMap::new(), &r);
        assert!(matches!(v[1].reason, Reason::BaseOfWindow { .. }));
        assert_eq!(
            v[0].reason,
            Reason::OutsideWindow {
                base: v[1].backup_id.clone()
            }
        );
        // All backups older than the window: only the newest stays.
        assert_eq!(
            statuses(&done(&[60, 50, 40]), &[], &r),
            ["OBSOLETE", "OBSOLETE", "VALID"]
        );
        // The short form means the same.
        assert_eq!(statuses(&e, &[], &rules("30d", 0)), statuses(&e, &[], &r));
    }

    #[test]
    fn recovery_window_minimum_redundancy_gives_potentially_obsolete() {
        let e = done(&[50, 45, 40, 35, 1]);
        // Valid: 1 (inside) and 35 (base); the minimum of 4 keeps two more.
        assert_eq!(
            statuses(&e, &[], &rules("30d", 4)),
            [
                "OBSOLETE",
                "POTENTIALLY_OBSOLETE",
                "POTENTIALLY_OBSOLETE",
                "VALID",
                "VALID"
            ]
        );
        // A keep among the old ones counts toward the minimum (Barman adds
        // it to `valid` while the minimum is not reached).
        assert_eq!(
            statuses(&e, &[(2, KeepTarget::Full)], &rules("30d", 4)),
            [
                "OBSOLETE",
                "POTENTIALLY_OBSOLETE",
                "KEEP:FULL",
                "VALID",
                "VALID"
            ]
        );
        // Past the minimum, a keep is still kept.
        assert_eq!(
            statuses(&e, &[(0, KeepTarget::Standalone)], &rules("30d", 0)),
            ["KEEP:STANDALONE", "OBSOLETE", "OBSOLETE", "VALID", "VALID"]
        );
    }

    #[test]
    fn a_window_of_months_counts_31_days() {
        let e = done(&[70, 40, 32, 1]);
        // 1 month = 31 days: 32 days ago is the base, 40 and 70 go.
        assert_eq!(
            statuses(&e, &[], &rules("1m", 0)),
            ["OBSOLETE", "OBSOLETE", "VALID", "VALID"]
        );
    }
}
