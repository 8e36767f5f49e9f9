//! The WAL chain from a backup to a target: every segment recovery will
//! read, along the target timeline's ancestry, each proven to be archived.

use super::archive_index::ArchiveIndex;
use super::stop_point::{describe_stop, stop_event, Events};
use super::target::PlanRequest;
use super::target::Target;
use crate::backup::catalog::CatalogEntry;
use crate::error::Error;
use crate::wal::history::TimelinePath;
use crate::wal::records::WalEvent;
use crate::wal::{Lsn, SegmentName};

/// Why a chain from one backup does not work.
pub(super) enum ChainError {
    /// The target lies before this backup became consistent: an older
    /// backup may do.
    TooLate(String),
    Fatal(Error),
}

impl From<Error> for ChainError {
    fn from(e: Error) -> Self {
        ChainError::Fatal(e)
    }
}

pub(super) struct Chain {
    pub(super) segments: Vec<SegmentName>,
    pub(super) reached_by: String,
}

/// Walks the WAL from `backup` along `path` as far as the target needs,
/// proving every segment is there.
pub(super) async fn chain(
    index: &ArchiveIndex,
    path: &TimelinePath,
    backup: &CatalogEntry,
    req: &PlanRequest,
    events: &mut Events<'_>,
) -> std::result::Result<Chain, ChainError> {
    let seg = backup.segment_size();
    let begin = backup.info.begin_xlog.expect("checked by the caller");
    let end = backup.info.end_xlog.expect("checked by the caller");
    let first = begin.segment_number(seg);
    let end_n = end.segment_number(seg);
    let name_of = |n: u64| SegmentName::from_number(path.timeline_of_segment(n, seg), n, seg);

    // Where reading WAL records starts.
    let scan_from = match &req.target {
        Target::Time { time, .. } => {
            let arrivals: Vec<(u64, Option<chrono::DateTime<chrono::Utc>>)> = (end_n..)
                .map(|n| (n, index.segments.get(&name_of(n)).map(|s| s.archived_at)))
                .take_while(|(_, a)| a.is_some())
                .map(|(n, a)| (n, a.flatten()))
                .collect();
            let ordered = arrivals
                .windows(2)
                .all(|w| matches!((w[0].1, w[1].1), (Some(a), Some(b)) if a <= b));
            let first_after = arrivals
                .iter()
                .find(|(_, a)| a.is_some_and(|a| a > *time))
                .map(|(n, _)| *n);
            match (ordered, first_after) {
                (true, Some(n)) => n.saturating_sub(1).max(end_n),
                _ => end_n,
            }
        }
        Target::Xid { .. } | Target::Name { .. } => first,
        _ => u64::MAX,
    };

    let mut segments = Vec::new();
    let mut n = first;
    loop {
        let name = name_of(n);
        if !index.segments.contains_key(&name) {
            if n <= end_n {
                return Err(Error::Unreachable(format!(
                    "backup {} cannot be restored: WAL it needs is missing from the archive: {name}",
                    backup.info.backup_id
                ))
                .into());
            }
            if let Some(later) = later_segment(index, path, n, seg) {
                let missing: Vec<SegmentName> = (n..later.segment_number(seg))
                    .map(name_of)
                    .filter(|s| !index.segments.contains_key(s))
                    .collect();
                return Err(Error::Unreachable(format!(
                    "{} cannot be reached: the archive has a gap: {} missing, but {later} is \
                     archived, and recovery would stop at the gap",
                    req.target,
                    missing_text(&missing)
                ))
                .into());
            }
            let last = segments
                .last()
                .map(|s: &SegmentName| s.to_string())
                .unwrap_or_default();
            return match &req.target {
                Target::Latest => Ok(Chain {
                    reached_by: format!("replaying every archived segment, up to {last}"),
                    segments,
                }),
                Target::Time { .. } => {
                    let last_end = events
                        .cache
                        .values()
                        .flatten()
                        .filter_map(|e| match e {
                            WalEvent::TxEnd { time, .. } => Some(*time),
                            _ => None,
                        })
                        .max();
                    Err(Error::Unreachable(format!(
                        "{} is after the latest recoverable point: the archive ends with segment \
                         {last}{}; recovery would end before reaching the target",
                        req.target,
                        last_end
                            .map(|t| format!(
                                ", whose last transaction ended at {}",
                                t.to_rfc3339()
                            ))
                            .unwrap_or_default()
                    ))
                    .into())
                }
                _ => Err(Error::Unreachable(format!(
                    "{} is not in the archived WAL after backup {} (read up to {last}): recovery \
                     would end before reaching it",
                    req.target, backup.info.backup_id
                ))
                .into()),
            };
        }
        segments.push(name);
        match &req.target {
            Target::Immediate if n >= end_n => {
                return Ok(Chain {
                    segments,
                    reached_by: "stopping as soon as the backup is consistent".into(),
                })
            }
            Target::Lsn { lsn } if n >= end_n.max(lsn.segment_number(seg)) => {
                return Ok(Chain {
                    segments,
                    reached_by: format!("replaying up to LSN {lsn}, in segment {name}"),
                })
            }
            Target::Time { .. } | Target::Xid { .. } | Target::Name { .. } if n >= scan_from => {
                let found = stop_event(&req.target, req.exclusive, events.of(&name).await?, Lsn(0))
                    .cloned();
                if let Some(e) = found {
                    if e.lsn() < end {
                        return Err(ChainError::TooLate(format!(
                            "{} is at {} in segment {name}, before backup {} became consistent at {end}",
                            req.target,
                            e.lsn(),
                            backup.info.backup_id
                        )));
                    }
                    if n >= end_n {
                        return Ok(Chain {
                            reached_by: describe_stop(&req.target, &e, &name),
                            segments,
                        });
                    }
                }
            }
            _ => {}
        }
        n += 1;
    }
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

fn missing_text(missing: &[SegmentName]) -> String {
    match missing {
        [one] => format!("{one} is"),
        few if few.len() <= 6 => {
            let names: Vec<String> = few.iter().map(|s| s.to_string()).collect();
            format!("{} are", names.join(", "))
        }
        many => format!(
            "{} segments, {} to {}, are",
            many.len(),
            many[0],
            many[many.len() - 1]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::{BackupInfo, BackupStatus};
    use crate::codec::Compression;
    use crate::config::{RepoConfig, RepoLocation, S3Settings};
    use crate::repo::Repo;
    use crate::restore::archive_index::ArchivedSegment;
    use crate::restore::target::{TargetAction, TimelineTarget};
    use crate::wal::TimelineId;

    const SEG: u64 = 16 << 20;

    fn tli(t: u32) -> TimelineId {
        TimelineId::new(t).unwrap()
    }

    fn index(segments: &[(u32, u64)]) -> ArchiveIndex {
        let mut index = ArchiveIndex::default();
        for (t, n) in segments {
            index.segments.insert(
                SegmentName::from_number(tli(*t), *n, SEG),
                ArchivedSegment {
                    stored_size: 100,
                    archived_at: None,
                },
            );
        }
        index
    }

    /// A DONE backup on timeline 1 from segment `begin` to `end`.
    fn backup(begin: u64, end: u64) -> CatalogEntry {
        let mut info = BackupInfo::new("20261201T000000".parse().unwrap(), "main");
        info.status = BackupStatus::Done;
        info.timeline = Some(1);
        info.begin_xlog = Some(Lsn(begin * SEG + 40));
        info.end_xlog = Some(Lsn(end * SEG + 312));
        info.xlog_segment_size = Some(SEG);
        CatalogEntry {
            info,
            details: None,
        }
    }

    fn request(target: Target) -> PlanRequest {
        PlanRequest {
            target,
            timeline: TimelineTarget::Latest,
            exclusive: false,
            action: TargetAction::Promote,
            backup: None,
        }
    }

    async fn walk(
        index: &ArchiveIndex,
        path: &TimelinePath,
        target: Target,
    ) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::create(&RepoConfig {
            location: RepoLocation::Fs {
                root: dir.path().to_path_buf(),
            },
            server_name: "main".into(),
            s3: S3Settings::default(),
            compression: Compression::None,
            encryption_key_file: None,
        })
        .unwrap();
        let mut events = Events::new(&repo);
        match chain(index, path, &backup(2, 3), &request(target), &mut events).await {
            Ok(c) => Ok(c.segments.iter().map(|s| s.to_string()).collect()),
            Err(ChainError::TooLate(why)) => Err(format!("too late: {why}")),
            Err(ChainError::Fatal(e)) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn latest_immediate_and_lsn_walk_exactly_what_recovery_reads() {
        let idx = index(&[(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]);
        let root = TimelinePath::root(tli(1));
        let latest = walk(&idx, &root, Target::Latest).await.unwrap();
        assert_eq!(latest.first().unwrap(), "000000010000000000000002");
        assert_eq!(latest.last().unwrap(), "000000010000000000000005");
        assert_eq!(latest.len(), 4);
        let immediate = walk(&idx, &root, Target::Immediate).await.unwrap();
        assert_eq!(
            immediate,
            ["000000010000000000000002", "000000010000000000000003"]
        );
        let lsn = walk(
            &idx,
            &root,
            Target::Lsn {
                lsn: Lsn(4 * SEG + 5),
            },
        )
        .await
        .unwrap();
        assert_eq!(lsn.last().unwrap(), "000000010000000000000004");
        let beyond = walk(&idx, &root, Target::Lsn { lsn: Lsn(9 * SEG) })
            .await
            .unwrap_err();
        assert!(beyond.contains("not in the archived WAL"), "{beyond}");
    }

    #[tokio::test]
    async fn missing_wal_and_gaps_are_named() {
        let root = TimelinePath::root(tli(1));
        // The backup's own end segment is missing: it cannot be restored.
        let e = walk(&index(&[(1, 2), (1, 4)]), &root, Target::Latest)
            .await
            .unwrap_err();
        assert!(
            e.contains("WAL it needs is missing") && e.contains("000000010000000000000003"),
            "{e}"
        );
        // After the backup, 5 and 6 are missing but 7 is archived: a gap.
        let e = walk(
            &index(&[(1, 2), (1, 3), (1, 4), (1, 7)]),
            &root,
            Target::Latest,
        )
        .await
        .unwrap_err();
        assert!(e.contains("gap"), "{e}");
        assert!(
            e.contains("000000010000000000000005") && e.contains("000000010000000000000007"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_switch_segment_comes_from_the_new_timeline() {
        // Timeline 2 forked from 1 inside segment 4.
        let path = TimelinePath::parse(tli(2), "1\t0/4000100\tno recovery target specified\n", "h")
            .unwrap();
        let idx = index(&[(1, 2), (1, 3), (1, 4), (2, 4), (2, 5)]);
        let segs = walk(&idx, &path, Target::Latest).await.unwrap();
        assert_eq!(
            segs,
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000020000000000000004",
                "000000020000000000000005"
            ]
        );
    }
}
