//! The restore planner: from a target to a backup and the WAL chain that
//! reaches it, proven complete before anything is touched.
//!
//! How a time target maps to segments: the store's time of arrival of a
//! segment bounds every commit in it from above (a segment is archived
//! after it is written). So every segment that arrived at or before the
//! target time must be replayed, and the first segment that arrived after it
//! is the last one recovery can need: the commit that ends recovery is in
//! it or before it. Reading commit timestamps from the WAL records would
//! be exact; archive times are an upper bound, which is what the plan
//! states.

use serde::Serialize;

use super::archive_index::ArchiveIndex;
use super::target::{Target, TargetAction, TimelineTarget};
use crate::backup::catalog::{self, CatalogEntry};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::wal::history::TimelinePath;
use crate::wal::{Lsn, SegmentName, TimelineId};

const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub target: Target,
    pub timeline: TimelineTarget,
    pub exclusive: bool,
    pub action: TargetAction,
    /// A backup to use (id or name) instead of the newest that fits.
    pub backup: Option<String>,
}

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

fn seg_size(e: &CatalogEntry) -> u64 {
    e.info.xlog_segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE)
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
    let index = ArchiveIndex::load(repo).await?;

    // The target timeline and its ancestry.
    let first_tli = |e: &CatalogEntry| {
        TimelineId::new(e.info.timeline.unwrap_or(1)).unwrap_or(TimelineId::new(1).unwrap())
    };
    let timeline = match req.timeline {
        TimelineTarget::Id(t) => t,
        TimelineTarget::Latest => {
            let from = forced
                .as_ref()
                .map(first_tli)
                .unwrap_or(TimelineId::new(1).unwrap());
            index.latest_timeline(from)
        }
        TimelineTarget::Current => match &forced {
            Some(e) => first_tli(e),
            None => first_tli(usable.last().expect("not empty")),
        },
    };
    let path = index.path(repo, timeline).await?;

    // The newest usable backup on the path that ends before the target.
    let mut refusals = Vec::new();
    let candidates: Vec<&CatalogEntry> = match &forced {
        Some(e) => vec![e],
        None => usable.clone(),
    };
    let mut chosen = None;
    for e in candidates.iter().rev() {
        let (Some(end), Some(_)) = (e.info.end_xlog, e.info.begin_xlog) else {
            refusals.push(format!(
                "{}: no begin/end LSN in backup.info",
                e.info.backup_id
            ));
            continue;
        };
        if let Err(fork) = path.check_contains(first_tli(e), end) {
            refusals.push(match fork {
                Some(at) => format!(
                    "{}: timeline {} forked from timeline {} at {at}, before the backup ended at {end}",
                    e.info.backup_id,
                    timeline.get(),
                    first_tli(e).get()
                ),
                None => format!(
                    "{}: its timeline {} is not an ancestor of timeline {}",
                    e.info.backup_id,
                    first_tli(e).get(),
                    timeline.get()
                ),
            });
            continue;
        }
        if let Err(why) = ends_before(e, &req.target) {
            refusals.push(format!("{}: {why}", e.info.backup_id));
            continue;
        }
        chosen = Some((*e).clone());
        break;
    }
    let backup = chosen.ok_or_else(|| {
        let earliest = usable
            .first()
            .map(|e| describe_point(e))
            .unwrap_or_default();
        let latest = latest_point(&index, usable.last().expect("not empty"));
        Error::Config(format!(
            "{} cannot be reached on timeline {}: {}. Earliest recoverable point: {earliest}; \
             latest: {latest}",
            req.target,
            timeline.get(),
            refusals.join("; ")
        ))
    })?;

    let seg = seg_size(&backup);
    let begin = backup.info.begin_xlog.expect("checked");
    let end = backup.info.end_xlog.expect("checked");
    let first = begin.segment_number(seg);
    let backup_end = end.segment_number(seg);
    let name_of = |n: u64| SegmentName::from_number(path.timeline_of_segment(n, seg), n, seg);
    let mut notes = Vec::new();
    if let Target::Time {
        zone_given: false, ..
    } = req.target
    {
        notes.push("the target time has no zone: it is taken as UTC".to_string());
    }

    // Walk the chain as far as the target needs.
    let mut segments = Vec::new();
    let mut missing = Vec::new();
    let mut n = first;
    let reached_by;
    loop {
        let name = name_of(n);
        let found = index.segments.get(&name);
        let past_backup = n > backup_end;
        match (&req.target, found) {
            (_, None) if !past_backup => missing.push(name),
            (Target::Immediate, _) if past_backup => {
                reached_by = "stopping as soon as the backup is consistent".to_string();
                break;
            }
            (Target::Lsn { lsn }, _) if past_backup && n > lsn.segment_number(seg) => {
                reached_by = format!(
                    "replaying up to LSN {lsn}, in segment {}",
                    name_of(lsn.segment_number(seg))
                );
                break;
            }
            (Target::Lsn { lsn }, None) => {
                missing.push(name);
                return Err(Error::Store(format!(
                    "LSN {lsn} cannot be reached: {}. Latest recoverable point: {}",
                    missing_text(&missing),
                    latest_point(&index, &backup)
                )));
            }
            (Target::Time { time, .. }, Some(s))
                if past_backup && s.archived_at.is_some_and(|a| a > *time) =>
            {
                segments.push(name);
                reached_by = format!(
                    "replaying to the first commit after {}: segment {name} was archived at {}, \
                     after the target, so that commit is in it or before it (archive times \
                     bound commit times from above)",
                    super::target::pg_time(time),
                    s.archived_at.map(|a| a.to_rfc3339()).unwrap_or_default()
                );
                break;
            }
            (Target::Time { time, .. }, None) => {
                return Err(match later_segment(&index, &path, n, seg) {
                    Some(later) => Error::Store(format!(
                        "{} cannot be reached: the archive has a gap: {name} is missing, {later} is archived",
                        req.target
                    )),
                    None => Error::Config(format!(
                        "time {} is after the latest recoverable point: {}",
                        super::target::pg_time(time),
                        latest_point(&index, &backup)
                    )),
                });
            }
            (_, None) => {
                // Latest, xid and name targets replay to the end of the archive.
                if let Some(later) = later_segment(&index, &path, n, seg) {
                    return Err(Error::Store(format!(
                        "{} cannot be reached: the archive has a gap: {name} is missing, but {later} is archived; \
                         recovery would stop at the gap. Latest recoverable point: {}",
                        req.target,
                        segments.last().map(|s: &SegmentName| s.to_string()).unwrap_or_default()
                    )));
                }
                reached_by = match &req.target {
                    Target::Xid { xid } => format!(
                        "replaying until transaction {xid} commits; the archive is complete up to {}, \
                         and recovery fails if the transaction is not in it",
                        segments.last().map(|s| s.to_string()).unwrap_or_default()
                    ),
                    Target::Name { name } => format!(
                        "replaying until restore point '{name}'; the archive is complete up to {}, and \
                         recovery fails if the restore point is not in it",
                        segments.last().map(|s| s.to_string()).unwrap_or_default()
                    ),
                    _ => format!(
                        "replaying every archived segment, up to {}",
                        segments.last().map(|s| s.to_string()).unwrap_or_default()
                    ),
                };
                break;
            }
            (_, Some(_)) => {}
        }
        if found.is_some() {
            segments.push(name);
        }
        n += 1;
    }
    if !missing.is_empty() {
        return Err(Error::Store(format!(
            "backup {} cannot be restored: WAL it needs is missing from the archive: {}",
            backup.info.backup_id,
            missing_text(&missing)
        )));
    }

    let wal_bytes = segments
        .iter()
        .filter_map(|s| index.segments.get(s))
        .map(|s| s.stored_size)
        .sum();
    let backup_bytes = match &backup.details {
        Some(d) => d
            .objects
            .iter()
            .filter(|o| o.kind != "manifest")
            .map(|o| o.stored_size)
            .sum(),
        // Barman's backups: what is stored under base/<id>/.
        None => repo
            .store
            .list(&repo.layout.backup_prefix(&backup.info.backup_id))
            .await?
            .iter()
            .filter(|o| o.key.contains(".tar"))
            .map(|o| o.size)
            .sum(),
    };
    let first_tli_of_backup = first_tli(&backup);
    let timeline_path = path
        .spans
        .iter()
        .skip_while(|s| s.timeline != first_tli_of_backup)
        .map(|s| (s.timeline, s.end))
        .collect();
    Ok(Plan {
        backup,
        target: req.target.clone(),
        exclusive: req.exclusive,
        action: req.action,
        timeline,
        timeline_path,
        segments,
        wal_bytes,
        backup_bytes,
        reached_by,
        notes,
    })
}

/// A segment after number `n` on the path, if the archive has one.
fn later_segment(
    index: &ArchiveIndex,
    path: &TimelinePath,
    n: u64,
    seg: u64,
) -> Option<SegmentName> {
    index
        .segments
        .keys()
        .find(|s| {
            let number = s.segment_number(seg);
            number > n && path.timeline_of_segment(number, seg) == s.timeline
        })
        .copied()
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

fn missing_text(missing: &[SegmentName]) -> String {
    if missing.len() <= 6 {
        missing
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        format!(
            "{} segments, {} to {}",
            missing.len(),
            missing[0],
            missing[missing.len() - 1]
        )
    }
}
