//! Which WAL the backups that stay still need, as a pure function of the
//! backups, their verdicts and the archive's listing.
//!
//! Every WAL file (segment, `.partial`, `.backup` label) whose position
//! lies before the begin WAL of the oldest kept backup that needs the WAL
//! after it (VALID, POTENTIALLY_OBSOLETE, KEEP:FULL, or a backup that is
//! not finished) goes, on every timeline: recovery reads forward from a
//! backup's begin, never back. A KEEP:STANDALONE backup needs only its
//! own begin-to-end WAL, on its timeline, and that stays whatever its age.
//! When no backup anchors the WAL after it (every backup that stays is a
//! standalone keep), WAL is kept from the newest DONE backup's begin, as
//! Barman does, since a backup may be starting. Timeline history files go
//! only for a timeline below every backup that stays, that no remaining
//! WAL is on, and that no later timeline's history names as an ancestor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::classify::{RetentionStatus, Verdict};
use crate::backup::catalog::CatalogEntry;
use crate::backup::{BackupId, BackupStatus};
use crate::wal::history::TimelinePath;
use crate::wal::{SegmentName, TimelineId, WalFileName};

/// One WAL object in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub name: WalFileName,
    pub key: String,
}

/// Where the WAL that stays starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Boundary {
    /// WAL before `segment`'s position, on every timeline, is not needed:
    /// `backup` (the oldest that needs all WAL after its begin) starts there.
    From {
        segment: SegmentName,
        backup: BackupId,
    },
    /// No WAL is removed, for this reason.
    KeepAll { reason: KeepAllReason },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAllReason {
    /// No DONE backup: nothing says which WAL a restore will need.
    NoDoneBackup,
    /// A backup that stays records no begin WAL.
    NoBeginWal(BackupId),
}

impl fmt::Display for KeepAllReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAllReason::NoDoneBackup => f.write_str("the repository holds no DONE backup"),
            KeepAllReason::NoBeginWal(id) => {
                write!(f, "backup {id} records no begin WAL")
            }
        }
    }
}

impl Serialize for KeepAllReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// WAL a standalone keep needs, whatever its age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protected {
    pub backup: BackupId,
    pub begin: SegmentName,
    pub end: SegmentName,
}

impl Protected {
    fn holds(&self, s: &SegmentName) -> bool {
        s.timeline == self.begin.timeline && pos(&self.begin) <= pos(s) && pos(s) <= pos(&self.end)
    }
}

/// What expire removes from `wals/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPlan {
    pub boundary: Boundary,
    pub protected: Vec<Protected>,
    /// In key order, history files last.
    pub delete: Vec<WalObject>,
}

/// The position of a segment, whatever the timeline (the order of
/// segment numbers, for any segment size).
fn pos(s: &SegmentName) -> (u32, u32) {
    (s.log, s.seg)
}

/// The segment a WAL file belongs to (`None` for history files).
fn segment_of(name: &WalFileName) -> Option<SegmentName> {
    match name {
        WalFileName::Segment(s) | WalFileName::Partial(s) => Some(*s),
        WalFileName::BackupHistory { segment, .. } => Some(*segment),
        WalFileName::TimelineHistory(_) => None,
    }
}

/// Plans the WAL deletions. `histories` holds every history file's parsed
/// ancestry (`None` when it could not be read: then no history goes).
pub fn plan(
    entries: &[CatalogEntry],
    verdicts: &[Verdict],
    wal: &[WalObject],
    histories: &BTreeMap<TimelineId, Option<TimelinePath>>,
) -> WalPlan {
    let verdict_of: BTreeMap<&BackupId, &Verdict> =
        verdicts.iter().map(|v| (&v.backup_id, v)).collect();
    let staying: Vec<(&CatalogEntry, &Verdict)> = entries
        .iter()
        .filter_map(|e| {
            verdict_of
                .get(&e.info.backup_id)
                .filter(|v| !v.delete)
                .map(|v| (e, *v))
        })
        .collect();

    let mut protected = Vec::new();
    let mut anchor: Option<(SegmentName, BackupId)> = None;
    let mut missing_begin: Option<BackupId> = None;
    for (e, v) in &staying {
        let id = &e.info.backup_id;
        let standalone = v.retention == RetentionStatus::KeepStandalone;
        match &e.info.status {
            // Unusable: needs no WAL.
            BackupStatus::Failed => continue,
            // Its begin, once known, lies after every finished backup's.
            BackupStatus::Started if e.info.begin_wal.is_none() => continue,
            _ => {}
        }
        let Some(begin) = e.info.begin_wal else {
            missing_begin.get_or_insert(id.clone());
            continue;
        };
        if standalone {
            match e.info.end_wal {
                Some(end) => protected.push(Protected {
                    backup: id.clone(),
                    begin,
                    end,
                }),
                None => {
                    missing_begin.get_or_insert(id.clone());
                }
            }
            continue;
        }
        if anchor.as_ref().is_none_or(|(a, _)| pos(&begin) < pos(a)) {
            anchor = Some((begin, id.clone()));
        }
    }
    let boundary = if let Some(id) = missing_begin {
        Boundary::KeepAll {
            reason: KeepAllReason::NoBeginWal(id),
        }
    } else if let Some((segment, backup)) = anchor {
        Boundary::From { segment, backup }
    } else {
        // Only standalone keeps stay: keep from the newest DONE backup's
        // begin (a backup may be starting after it).
        let newest_done = entries
            .iter()
            .filter(|e| e.info.status == BackupStatus::Done)
            .max_by(|a, b| a.info.backup_id.cmp(&b.info.backup_id));
        match newest_done {
            None => Boundary::KeepAll {
                reason: KeepAllReason::NoDoneBackup,
            },
            Some(e) => match e.info.begin_wal {
                Some(segment) => Boundary::From {
                    segment,
                    backup: e.info.backup_id.clone(),
                },
                None => Boundary::KeepAll {
                    reason: KeepAllReason::NoBeginWal(e.info.backup_id.clone()),
                },
            },
        }
    };

    let Boundary::From { segment: from, .. } = &boundary else {
        return WalPlan {
            boundary,
            protected,
            delete: Vec::new(),
        };
    };
    let mut delete: Vec<WalObject> = Vec::new();
    let mut remaining_timelines: BTreeSet<TimelineId> = BTreeSet::new();
    for w in wal {
        let Some(s) = segment_of(&w.name) else {
            continue;
        };
        if pos(&s) < pos(from) && !protected.iter().any(|p| p.holds(&s)) {
            delete.push(w.clone());
        } else {
            remaining_timelines.insert(s.timeline);
        }
    }
    delete.sort_by(|a, b| a.key.cmp(&b.key));

    // History files: only below every staying backup's timeline, with no
    // WAL left on them, and no later timeline descending from them.
    let lowest = staying
        .iter()
        .filter(|(e, _)| e.info.status != BackupStatus::Failed)
        .filter_map(|(e, _)| e.info.timeline.and_then(TimelineId::new))
        .min();
    let all_readable = histories.values().all(Option::is_some);
    if let (Some(lowest), true) = (lowest, all_readable) {
        let mut kept: BTreeSet<TimelineId> = BTreeSet::new();
        let mut gone: Vec<TimelineId> = Vec::new();
        for tli in histories.keys().rev() {
            let referenced = kept.iter().any(|k| {
                histories
                    .get(k)
                    .and_then(Option::as_ref)
                    .is_some_and(|p| p.spans.iter().any(|s| s.timeline == *tli))
            });
            if *tli >= lowest || remaining_timelines.contains(tli) || referenced {
                kept.insert(*tli);
            } else {
                gone.push(*tli);
            }
        }
        gone.sort();
        for tli in gone {
            for w in wal {
                if w.name == WalFileName::TimelineHistory(tli) {
                    delete.push(w.clone());
                }
            }
        }
    }
    WalPlan {
        boundary,
        protected,
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::BackupInfo;
    use crate::retention::classify::Reason;

    fn seg(s: &str) -> SegmentName {
        match s.parse::<WalFileName>().unwrap() {
            WalFileName::Segment(s) => s,
            _ => panic!("{s}"),
        }
    }

    /// A DONE backup with id `n`, on timeline `tli`, from segment `begin`
    /// to `end` (numbers in the low 32 bits).
    fn backup(n: u32, tli: u32, begin: u32, end: u32) -> CatalogEntry {
        let id: BackupId = format!("202612{:02}T000000", n).parse().unwrap();
        let mut info = BackupInfo::new(id, "main");
        info.status = BackupStatus::Done;
        info.timeline = Some(tli);
        info.begin_wal = Some(seg(&format!("{tli:08X}00000000{begin:08X}")));
        info.end_wal = Some(seg(&format!("{tli:08X}00000000{end:08X}")));
        CatalogEntry {
            info,
            details: None,
        }
    }

    fn verdict(e: &CatalogEntry, retention: RetentionStatus) -> Verdict {
        Verdict {
            backup_id: e.info.backup_id.clone(),
            status: e.info.status.clone(),
            retention,
            delete: retention == RetentionStatus::Obsolete,
            reason: Reason::MaybeRunning,
        }
    }

    fn wal(names: &[&str]) -> Vec<WalObject> {
        names
            .iter()
            .map(|n| WalObject {
                name: n.parse().unwrap(),
                key: format!("k/{n}.gz"),
            })
            .collect()
    }

    /// Segments 1..=n on timeline `tli`.
    fn segments(tli: u32, from: u32, to: u32) -> Vec<String> {
        (from..=to)
            .map(|n| format!("{tli:08X}00000000{n:08X}"))
            .collect()
    }

    fn deleted(p: &WalPlan) -> Vec<String> {
        p.delete.iter().map(|w| w.name.to_string()).collect()
    }

    fn run(
        entries: &[CatalogEntry],
        statuses: &[RetentionStatus],
        names: &[String],
        histories: &[(u32, Option<&str>)],
    ) -> WalPlan {
        let verdicts: Vec<Verdict> = entries
            .iter()
            .zip(statuses)
            .map(|(e, s)| verdict(e, *s))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let histories = histories
            .iter()
            .map(|(t, text)| {
                let tli = TimelineId::new(*t).unwrap();
                (tli, text.map(|x| TimelinePath::parse(tli, x, "h").unwrap()))
            })
            .collect();
        plan(entries, &verdicts, &wal(&names), &histories)
    }

    use RetentionStatus::{KeepFull, KeepStandalone, Obsolete, Valid};

    #[test]
    fn wal_before_the_oldest_kept_backup_goes() {
        let b = [backup(1, 1, 2, 3), backup(2, 1, 5, 5), backup(3, 1, 8, 9)];
        let mut names = segments(1, 1, 10);
        names.push("000000010000000000000005.00000028.backup".into());
        names.push("000000010000000000000004.partial".into());
        let p = run(&b, &[Obsolete, Valid, Valid], &names, &[]);
        assert_eq!(
            p.boundary,
            Boundary::From {
                segment: seg("000000010000000000000005"),
                backup: b[1].info.backup_id.clone()
            }
        );
        assert_eq!(
            deleted(&p),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000004.partial",
            ]
        );
    }

    #[test]
    fn keeps_full_and_standalone() {
        // 1: standalone (2..3), 2: obsolete, 3: full keep (6..6), 4: valid.
        let b = [
            backup(1, 1, 2, 3),
            backup(2, 1, 4, 4),
            backup(3, 1, 6, 6),
            backup(4, 1, 8, 8),
        ];
        let names = segments(1, 1, 9);
        let p = run(
            &b,
            &[KeepStandalone, Obsolete, KeepFull, Valid],
            &names,
            &[],
        );
        // The full keep anchors: everything from 6 on stays; 2..3 stay for
        // the standalone keep.
        assert_eq!(
            deleted(&p),
            [
                "000000010000000000000001",
                "000000010000000000000004",
                "000000010000000000000005"
            ]
        );
        // Only standalone keeps and an obsolete backup: WAL is kept from the
        // newest DONE backup's begin (4), as Barman does.
        let p = run(&b[..2], &[KeepStandalone, Obsolete], &names, &[]);
        assert_eq!(deleted(&p), ["000000010000000000000001"]);
    }

    #[test]
    fn every_timeline_below_the_boundary_and_histories_while_referenced() {
        // Timeline 2 forked from 1 at segment 4, timeline 3 (a dead end)
        // from 1 at segment 3; the kept backup is on timeline 2 at 6.
        let b = [backup(1, 1, 2, 2), backup(2, 2, 6, 6)];
        let mut names = segments(1, 1, 5);
        names.extend(segments(3, 3, 4));
        names.extend(segments(2, 4, 7));
        names.push("00000002.history".into());
        names.push("00000003.history".into());
        let h2 = "1\t0/4000000\tno recovery target specified\n";
        let h3 = "1\t0/3000000\tno recovery target specified\n";
        let p = run(
            &b,
            &[Obsolete, Valid],
            &names,
            &[(2, Some(h2)), (3, Some(h3))],
        );
        let d = deleted(&p);
        assert!(d.contains(&"000000010000000000000005".to_string()), "{d:?}");
        assert!(d.contains(&"000000030000000000000004".to_string()), "{d:?}");
        assert!(d.contains(&"000000020000000000000005".to_string()), "{d:?}");
        assert!(
            !d.contains(&"000000020000000000000006".to_string()),
            "{d:?}"
        );
        // 3 is below timeline 2? No: 3 > 2, so its history stays; 2 stays.
        assert!(!d.iter().any(|n| n.ends_with(".history")), "{d:?}");

        // A dead-end timeline below the kept one, with no WAL left, goes;
        // an ancestor of the kept timeline stays.
        let b = [backup(1, 2, 2, 2), backup(2, 4, 9, 9)];
        let mut names = segments(4, 8, 10);
        names.extend(segments(3, 5, 6));
        for t in ["00000002.history", "00000003.history", "00000004.history"] {
            names.push(t.into());
        }
        let h4 = "1\t0/1000000\tx\n2\t0/7000000\tx\n";
        let p = run(
            &b,
            &[Obsolete, Valid],
            &names,
            &[(2, Some(h2)), (3, Some(h3)), (4, Some(h4))],
        );
        let d = deleted(&p);
        assert!(d.contains(&"00000003.history".to_string()), "{d:?}");
        assert!(
            !d.contains(&"00000002.history".to_string()),
            "ancestor of 4: {d:?}"
        );
        assert!(!d.contains(&"00000004.history".to_string()), "{d:?}");
        // Unreadable history: no history goes.
        let p = run(
            &b,
            &[Obsolete, Valid],
            &names,
            &[(2, Some(h2)), (3, None), (4, Some(h4))],
        );
        assert!(!deleted(&p).iter().any(|n| n.ends_with(".history")));
    }

    #[test]
    fn nothing_goes_without_a_done_backup_or_a_begin_wal() {
        let mut started = backup(1, 1, 5, 5);
        started.info.status = BackupStatus::Failed;
        let names = segments(1, 1, 6);
        let p = run(
            std::slice::from_ref(&started),
            &[RetentionStatus::None],
            &names,
            &[],
        );
        assert_eq!(
            p.boundary,
            Boundary::KeepAll {
                reason: KeepAllReason::NoDoneBackup
            }
        );
        assert!(p.delete.is_empty());
        let mut odd = backup(2, 1, 5, 5);
        odd.info.begin_wal = Option::None;
        let p = run(&[backup(1, 1, 3, 3), odd], &[Valid, Valid], &names, &[]);
        assert!(matches!(p.boundary, Boundary::KeepAll { .. }));
        assert!(p.delete.is_empty());
        // A running backup without a begin yet does not stop the rest.
        let mut running = backup(3, 1, 9, 9);
        running.info.status = BackupStatus::Started;
        running.info.begin_wal = Option::None;
        let p = run(
            &[backup(1, 1, 3, 3), backup(2, 1, 4, 4), running],
            &[Obsolete, Valid, RetentionStatus::None],
            &names,
            &[],
        );
        assert_eq!(
            deleted(&p),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003"
            ]
        );
    }
}
