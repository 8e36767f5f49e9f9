//! What a repository holds, at a glance, read cheaply: the newest archived
//! segment (the newest hash directory only, found with one directory
//! listing), and the backups (the catalog's backup.info and pitr.json
//! files). `pitr status` prints it; Prometheus metrics and the CNPG-I
//! plugin's metrics are made from it. It never lists the whole archive:
//! the first and last segment of each timeline come from one directory
//! listing and the first and last hash directory of each timeline, and the
//! gaps from the last `archive verify` (its state record).

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use crate::backup::catalog::{self, CatalogEntry};
use crate::backup::{BackupId, BackupStatus};
use crate::error::Result;
use crate::repo::Repo;
use crate::state::{self, StateKind};
use crate::verify::checkpoint::VerifyState;
use crate::verify::report::SegmentRange;
use crate::wal::{SegmentName, TimelineId, WalFileName};

/// The newest segment in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveTip {
    pub segment: SegmentName,
    /// When the store received it.
    pub archived_at: Option<DateTime<Utc>>,
}

/// One backup, as status reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupPoint {
    pub backup_id: BackupId,
    pub name: Option<String>,
    pub begin_time: Option<DateTime<FixedOffset>>,
    pub end_time: Option<DateTime<FixedOffset>>,
    /// Bytes stored for its tars.
    pub size: Option<u64>,
}

impl BackupPoint {
    fn of(e: &CatalogEntry) -> BackupPoint {
        BackupPoint {
            backup_id: e.info.backup_id.clone(),
            name: e.info.backup_name.clone(),
            begin_time: e.info.begin_time,
            end_time: e.info.end_time,
            size: e.info.size,
        }
    }

    /// Seconds the backup took, when both ends are known.
    pub fn duration_seconds(&self) -> Option<f64> {
        let (b, e) = (self.begin_time?, self.end_time?);
        Some((e - b).num_milliseconds() as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoStatus {
    pub repository: String,
    pub last_archived: Option<ArchiveTip>,
    /// Backups a restore can use.
    pub usable_backups: usize,
    /// Every backup directory with a readable backup.info.
    pub backups: usize,
    pub last_backup: Option<BackupPoint>,
    pub last_failed_backup: Option<BackupPoint>,
    /// The earliest point a restore can reach: the end of the oldest usable
    /// backup.
    pub first_recoverability_point: Option<DateTime<FixedOffset>>,
    /// The archive's first and last segment of each timeline.
    pub timelines: Vec<TimelineExtent>,
    /// What the last `archive verify` found, if one ran.
    pub last_verify: Option<LastVerify>,
    /// The retention policy given to `status`, and what `expire` would
    /// remove under it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::RetentionPreview>,
    /// The last `expire` run (the Expire state record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_expire: Option<crate::retention::delete::ExpireState>,
    /// The last drill (the Drill state record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<crate::drill::report::DrillRecord>,
}

/// The first and last segment of one timeline in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineExtent {
    pub timeline: TimelineId,
    pub first_segment: SegmentName,
    pub last_segment: SegmentName,
}

/// The last `archive verify`'s result, from its state record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastVerify {
    pub verified_at: DateTime<Utc>,
    pub last_full_at: Option<DateTime<Utc>>,
    pub healthy: bool,
    /// The gaps it found: first and last missing segment.
    pub gaps: Vec<SegmentRange>,
    pub history_problems: Vec<String>,
    /// How many objects it found damaged, foreign or misplaced.
    pub object_problems: usize,
    /// Backups whose own WAL it found incomplete.
    pub incomplete_backups: Vec<String>,
}

impl LastVerify {
    fn of(s: VerifyState) -> LastVerify {
        let seg = s.segment_size;
        LastVerify {
            verified_at: s.verified_at,
            last_full_at: s.last_full_at,
            healthy: s.healthy,
            gaps: s
                .gaps
                .iter()
                .filter_map(|g| {
                    let t = TimelineId::new(g.timeline)?;
                    let r = crate::verify::ranges::Range {
                        first: g.first,
                        last: g.last,
                    };
                    Some(SegmentRange::new(t, r, seg))
                })
                .collect(),
            history_problems: s.history_problems,
            object_problems: s.object_problems.len(),
            incomplete_backups: s.incomplete_backups,
        }
    }
}

/// Reads the status of `repo`.
pub async fn gather(repo: &Repo) -> Result<RepoStatus> {
    gather_with(repo, None).await
}

/// [`gather`], also with the last expire and drill, and, given a retention
/// policy and minimum redundancy, what `expire` would remove now.
pub async fn gather_with(
    repo: &Repo,
    retention: Option<(crate::retention::RetentionPolicy, u32)>,
) -> Result<RepoStatus> {
    let (entries, (last_archived, timelines), verified, expired, drilled) = tokio::try_join!(
        catalog::list(repo),
        archive_extent(repo),
        state::read::<VerifyState>(repo, StateKind::Verify),
        state::read::<crate::retention::delete::ExpireState>(repo, StateKind::Expire),
        state::read::<crate::drill::report::DrillRecord>(repo, StateKind::Drill),
    )?;
    let mut status = summarize(repo.describe(), &entries, last_archived);
    status.timelines = timelines;
    status.last_verify = verified.map(LastVerify::of);
    status.last_expire = expired;
    status.last_drill = drilled;
    if let Some((policy, minimum)) = retention {
        status.retention = Some(crate::retention::preview(repo, &entries, policy, minimum).await?);
    }
    Ok(status)
}

/// The status from a catalog listing and the archive's tip.
pub fn summarize(
    repository: String,
    entries: &[CatalogEntry],
    last_archived: Option<ArchiveTip>,
) -> RepoStatus {
    let usable: Vec<&CatalogEntry> = entries.iter().filter(|e| e.usable()).collect();
    RepoStatus {
        repository,
        last_archived,
        usable_backups: usable.len(),
        backups: entries.len(),
        last_backup: usable.last().map(|e| BackupPoint::of(e)),
        last_failed_backup: entries
            .iter()
            .rfind(|e| e.info.status == BackupStatus::Failed)
            .map(BackupPoint::of),
        first_recoverability_point: usable.first().and_then(|e| e.info.end_time),
        timelines: Vec::new(),
        last_verify: None,
        retention: None,
        last_expire: None,
        last_drill: None,
    }
}

/// The newest whole segment of the archive: the newest hash directory (hash
/// directories sort by timeline, then by position) listed alone.
pub async fn archive_tip(repo: &Repo) -> Result<Option<ArchiveTip>> {
    let dirs = repo.store.list_dirs(&repo.layout.wals_prefix()).await?;
    for dir in dirs.iter().rev() {
        if let Some((_, (segment, archived_at))) = ends_of(repo, dir).await? {
            return Ok(Some(ArchiveTip {
                segment,
                archived_at,
            }));
        }
    }
    Ok(None)
}

/// The archive's tip, and the first and last segment of every timeline:
/// one directory listing, then each timeline's first and last hash
/// directory (more only where those hold no whole segment).
pub async fn archive_extent(repo: &Repo) -> Result<(Option<ArchiveTip>, Vec<TimelineExtent>)> {
    let dirs = repo.store.list_dirs(&repo.layout.wals_prefix()).await?;
    let mut by_timeline: std::collections::BTreeMap<TimelineId, Vec<String>> =
        std::collections::BTreeMap::new();
    for d in dirs {
        if let Some(t) = crate::verify::walk::dir_timeline(repo, &d) {
            by_timeline.entry(t).or_default().push(d);
        }
    }
    let mut tip = None;
    let mut extents = Vec::new();
    for (timeline, dirs) in by_timeline {
        // The newest directory with a segment, then the oldest before it:
        // each directory is listed once at most.
        let mut newest = None;
        for (i, dir) in dirs.iter().enumerate().rev() {
            if let Some(ends) = ends_of(repo, dir).await? {
                newest = Some((i, ends));
                break;
            }
        }
        let Some((i, (oldest_there, last))) = newest else {
            continue;
        };
        let mut first = oldest_there;
        for dir in &dirs[..i] {
            if let Some((lo, _)) = ends_of(repo, dir).await? {
                first = lo;
                break;
            }
        }
        tip = Some(ArchiveTip {
            segment: last.0,
            archived_at: last.1,
        });
        extents.push(TimelineExtent {
            timeline,
            first_segment: first.0,
            last_segment: last.0,
        });
    }
    Ok((tip, extents))
}

type Found = (SegmentName, Option<DateTime<Utc>>);

/// The oldest and newest whole segment in one hash directory.
async fn ends_of(repo: &Repo, dir: &str) -> Result<Option<(Found, Found)>> {
    let mut ends: Option<(Found, Found)> = None;
    for o in repo.store.list(dir).await? {
        if let Some(WalFileName::Segment(segment)) =
            repo.layout.parse_wal_key(&o.key).map(|k| k.name)
        {
            let found = (segment, o.last_modified);
            ends = Some(match ends {
                None => (found, found),
                Some((lo, hi)) => (
                    if segment < lo.0 { found } else { lo },
                    if segment > hi.0 { found } else { hi },
                ),
            });
        }
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::BackupInfo;
    use crate::wal::push::push;
    use crate::wal::test_segments::write_segment;

    #[tokio::test]
    async fn the_tip_is_the_newest_segment_of_the_newest_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::wal::test_segments::fs_repo(&dir.path().join("repo"));
        assert_eq!(archive_tip(&repo).await.unwrap(), None);
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        // 1 MiB segments: 4096 a hash directory; 5000 is in the second.
        for (tli, n) in [(1, 3), (1, 5000), (1, 4), (2, 4100)] {
            push(&repo, &write_segment(&wal, tli, n, 5)).await.unwrap();
        }
        let tip = archive_tip(&repo).await.unwrap().unwrap();
        assert_eq!(tip.segment.to_string(), "000000020000000100000004");
        assert!(tip.archived_at.is_some());
        let (again, extents) = archive_extent(&repo).await.unwrap();
        assert_eq!(again, Some(tip));
        let text: Vec<String> = extents
            .iter()
            .map(|e| {
                format!(
                    "{} {}-{}",
                    e.timeline.get(),
                    e.first_segment,
                    e.last_segment
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "1 000000010000000000000003-000000010000000100000388",
                "2 000000020000000100000004-000000020000000100000004"
            ]
        );
    }

    fn entry(id: &str, status: BackupStatus, end: &str) -> CatalogEntry {
        let mut info = BackupInfo::new(id.parse().unwrap(), "main");
        info.status = status;
        info.begin_time = DateTime::parse_from_rfc3339(end)
            .ok()
            .map(|t| t - chrono::TimeDelta::seconds(90));
        info.end_time = DateTime::parse_from_rfc3339(end).ok();
        CatalogEntry {
            info,
            details: None,
        }
    }

    #[test]
    fn summary_names_the_last_good_and_failed_backups_and_the_window() {
        let entries = [
            entry(
                "20261101T000000",
                BackupStatus::Done,
                "2026-11-01T00:10:00Z",
            ),
            entry(
                "20261102T000000",
                BackupStatus::Failed,
                "2026-11-02T00:10:00Z",
            ),
            entry(
                "20261103T000000",
                BackupStatus::Done,
                "2026-11-03T00:10:00Z",
            ),
            entry(
                "20261104T000000",
                BackupStatus::Started,
                "2026-11-04T00:10:00Z",
            ),
        ];
        let s = summarize("r".into(), &entries, None);
        assert_eq!(s.backups, 4);
        assert_eq!(s.usable_backups, 2);
        let last = s.last_backup.unwrap();
        assert_eq!(last.backup_id.to_string(), "20261103T000000");
        assert_eq!(last.duration_seconds(), Some(90.0));
        assert_eq!(
            s.last_failed_backup.unwrap().backup_id.to_string(),
            "20261102T000000"
        );
        assert_eq!(
            s.first_recoverability_point.unwrap().to_rfc3339(),
            "2026-11-01T00:10:00+00:00"
        );
    }
}
