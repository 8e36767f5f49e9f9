//! The restore planner: from a target to a backup and the WAL chain that
//! reaches it, proven complete before anything is touched.
//!
//! How a time, xid or restore-point target maps to segments: exactly, by
//! reading the WAL records. Recovery to a time stops at the first
//! transaction that ends after it (at or after it with `--exclusive`); the
//! planner reads commit and abort records, with their timestamps, until it
//! finds that transaction, and the segment holding it is the last one
//! recovery needs. To read little, it starts just before the first segment
//! the store received after the target time: a segment is archived after it
//! is written, so earlier arrivals hold only earlier commits (archive times
//! are a lower bound on where the answer is, never the answer). If the
//! archive times run backwards (a copied repository), it reads from the
//! backup's end. xid and restore-point targets are found the same way.

use serde::Serialize;

use super::archive_index::ArchiveIndex;
use super::chain::{chain, ChainError};
use super::stop_point::Events;
pub use super::target::PlanRequest;
use super::target::{Target, TargetAction, TimelineTarget};
use crate::backup::catalog::{self, CatalogEntry};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::wal::{Lsn, SegmentName, TimelineId};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub backup: CatalogEntry,
    pub target: Target,
    pub exclusive: bool,
    pub action: TargetAction,
    pub timeline: TimelineId,
    /// Timelines from the backup's to the target's, with the LSN each ends at.
    pub timeline_path: Vec<(TimelineId, Option<Lsn>)>,
    /// Every segment recovery will read, in order.
    pub segments: Vec<SegmentName>,
    pub wal_bytes: u64,
    pub backup_bytes: u64,
    /// How the target will be reached, in words.
    pub reached_by: String,
    pub notes: Vec<String>,
}

impl Plan {
    pub fn first_segment(&self) -> Option<&SegmentName> {
        self.segments.first()
    }
    pub fn last_segment(&self) -> Option<&SegmentName> {
        self.segments.last()
    }
}

fn describe_point(e: &CatalogEntry) -> String {
    format!(
        "backup {} ended {} at {} on timeline {}",
        e.info.backup_id,
        e.info
            .end_time
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "?".into()),
        e.info
            .end_xlog
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into()),
        e.info.timeline.unwrap_or(0)
    )
}

/// Does the backup end before the target (so recovery can be consistent
/// before it)? `Err` says why not.
fn ends_before(e: &CatalogEntry, target: &Target) -> std::result::Result<(), String> {
    match target {
        Target::Time { time, .. } => match e.info.end_time {
            Some(end) if end <= *time => Ok(()),
            Some(end) => Err(format!(
                "it ended at {}, after the target time",
                end.to_rfc3339()
            )),
            None => Err("its end time is unknown".into()),
        },
        Target::Lsn { lsn } => match e.info.end_xlog {
            Some(end) if end <= *lsn => Ok(()),
            Some(end) => Err(format!("it ended at LSN {end}, after the target LSN")),
            None => Err("its end LSN is unknown".into()),
        },
        _ => Ok(()),
    }
}

/// Plans a restore. Errors say why the target is unreachable, with the
/// earliest and latest recoverable points, or name the missing segments.
pub async fn plan(repo: &Repo, req: &PlanRequest) -> Result<Plan> {
    let all = catalog::list(repo).await?;
    let usable: Vec<&CatalogEntry> = all.iter().filter(|e| e.usable()).collect();
    if usable.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no usable backup{}: take one with `pitr backup`",
            repo.describe(),
            if all.is_empty() {
                ""
            } else {
                " (none is DONE)"
            }
        )));
    }
    let forced = match &req.backup {
        Some(spec) => {
            let e = catalog::resolve(repo, spec).await?;
            if !e.usable() {
                return Err(Error::Config(format!(
                    "backup {} is {}, not usable for a restore",
                    e.info.backup_id, e.info.status
                )));
            }
            Some(e)
        }
        None => None,
    };
    // History files first (one shallow listing); segments once the
    // candidate backups are known, from the newest one's first segment on.
    let mut index = ArchiveIndex::histories(repo).await?;
    let one = TimelineId::new(1).expect("1 is a timeline");
    let tli_of = |e: &CatalogEntry| e.info.timeline.and_then(TimelineId::new).unwrap_or(one);
    let timeline = match req.timeline {
        TimelineTarget::Id(t) => t,
        TimelineTarget::Latest => index.latest_timeline(forced.as_ref().map(tli_of).unwrap_or(one)),
        TimelineTarget::Current => {
            tli_of(forced.as_ref().unwrap_or(usable.last().expect("not empty")))
        }
    };
    let path = index.path(repo, timeline).await?;

    // Usable backups on the path that end before the target, newest first.
    let mut refusals = Vec::new();
    let candidates: Vec<&CatalogEntry> = match &forced {
        Some(e) => vec![e],
        None => usable.iter().rev().copied().collect(),
    };
    let mut fitting = Vec::new();
    for e in candidates {
        let (Some(end), Some(_)) = (e.info.end_xlog, e.info.begin_xlog) else {
            refusals.push(format!(
                "{}: no begin/end LSN in backup.info",
                e.info.backup_id
            ));
            continue;
        };
        match path.check_contains(tli_of(e), end) {
            Err(Some(at)) => refusals.push(format!(
                "{}: timeline {} forked from timeline {} at {at}, before the backup ended at {end}",
                e.info.backup_id,
                timeline.get(),
                tli_of(e).get()
            )),
            Err(None) => refusals.push(format!(
                "{}: its timeline {} is not an ancestor of timeline {}",
                e.info.backup_id,
                tli_of(e).get(),
                timeline.get()
            )),
            Ok(()) => match ends_before(e, &req.target) {
                Err(why) => refusals.push(format!("{}: {why}", e.info.backup_id)),
                Ok(()) => fitting.push(e),
            },
        }
    }
    let floor = |e: &CatalogEntry| e.info.begin_wal;
    index
        .load_segments(repo, fitting.first().and_then(|e| floor(e)))
        .await?;
    let unreachable = |index: &ArchiveIndex, refusals: &[String]| {
        let earliest = usable
            .first()
            .map(|e| describe_point(e))
            .unwrap_or_default();
        let latest = latest_point(index, usable.last().expect("not empty"));
        Error::Unreachable(format!(
            "{} cannot be reached on timeline {}: {}. Earliest recoverable point: {earliest}; \
             latest: {latest}",
            req.target,
            timeline.get(),
            refusals.join("; ")
        ))
    };

    let mut events = Events::new(repo);
    for backup in fitting {
        // An older backup than the one the listing started at: list more.
        if let Some(begin) = floor(backup).filter(|b| !index.covers(b)) {
            index.load_segments(repo, Some(begin)).await?;
        }
        let found = match chain(&index, &path, backup, req, &mut events).await {
            Ok(c) => c,
            Err(ChainError::TooLate(why)) => {
                refusals.push(why);
                continue;
            }
            Err(ChainError::Fatal(e)) => return Err(e),
        };
        let mut notes = Vec::new();
        if let Target::Time {
            zone_given: false, ..
        } = req.target
        {
            notes.push("the target time has no zone: it is taken as UTC".to_string());
        }
        let wal_bytes = found
            .segments
            .iter()
            .filter_map(|s| index.segments.get(s))
            .map(|s| s.stored_size)
            .sum();
        let backup_bytes = match &backup.details {
            Some(d) => d
                .objects
                .iter()
                .filter(|o| o.kind.is_tar())
                .map(|o| o.stored_size)
                .sum(),
            // Barman's backups: what is stored under base/<id>/.
            None => repo
                .store
                .list(&repo.layout.backup_prefix(&backup.info.backup_id))
                .await?
                .iter()
                .filter(|o| {
                    repo.layout
                        .parse_backup_key(&o.key)
                        .is_some_and(|(_, f)| f.is_tar())
                })
                .map(|o| o.size)
                .sum(),
        };
        let backup_tli = tli_of(backup);
        let timeline_path = path
            .spans
            .iter()
            .skip_while(|s| s.timeline != backup_tli)
            .map(|s| (s.timeline, s.end))
            .collect();
        return Ok(Plan {
            backup: backup.clone(),
            target: req.target.clone(),
            exclusive: req.exclusive,
            action: req.action,
            timeline,
            timeline_path,
            segments: found.segments,
            wal_bytes,
            backup_bytes,
            reached_by: found.reached_by,
            notes,
        });
    }
    Err(unreachable(&index, &refusals))
}

/// The end of the archive reachable from a backup, in words.
fn latest_point(index: &ArchiveIndex, backup: &CatalogEntry) -> String {
    let t = backup.info.timeline.unwrap_or(1);
    match index
        .segments
        .iter()
        .rev()
        .find(|(s, _)| s.timeline.get() >= t)
    {
        Some((s, a)) => format!(
            "segment {s}, archived at {}",
            a.archived_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "?".into())
        ),
        None => describe_point(backup),
    }
}
