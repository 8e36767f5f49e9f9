//! Is the WAL a backup needs in the archive? A backup is usable only when
//! every segment from its start to its end is stored.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::WalKey;
use crate::repo::Repo;
#[cfg(test)]
use crate::wal::TimelineId;
use crate::wal::{locate, SegmentName, WalFileName};

/// Waits until `segment` is in the archive.
pub async fn wait_for_segment(repo: &Repo, segment: &SegmentName, timeout: Duration) -> Result<()> {
    let name = WalFileName::Segment(*segment);
    let start = Instant::now();
    loop {
        if !locate::stored_copies(repo, &name).await?.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Store(format!(
                "WAL segment {segment}, which holds the end of the backup, was not archived in \
                 {} within {}s: check that archive_command runs pitr wal-push with this \
                 repository and server name, and look at pg_stat_archiver (failed_count, \
                 last_failed_wal) and the server log; --wal-timeout sets the wait",
                repo.describe(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fails naming every segment from `begin` to `end` (inclusive) that is
/// not in the archive.
pub async fn require_range(
    repo: &Repo,
    begin: &SegmentName,
    end: &SegmentName,
    seg_size: u64,
) -> Result<()> {
    if begin.timeline != end.timeline {
        return Err(Error::Postgres(format!(
            "the backup started on timeline {} and ended on timeline {}: the server was promoted \
             during the backup; take a new one",
            begin.timeline, end.timeline
        )));
    }
    let first = begin.segment_number(seg_size);
    let last = end.segment_number(seg_size);
    let mut dirs = BTreeSet::new();
    let wanted: Vec<SegmentName> = (first..=last)
        .map(|n| SegmentName::from_number(begin.timeline, n, seg_size))
        .inspect(|s| {
            dirs.insert(repo.layout.wal_dir_prefix(s));
        })
        .collect();
    let mut stored = BTreeSet::new();
    for prefix in dirs {
        for o in repo.store.list(&prefix).await? {
            if let Some(WalKey {
                name: WalFileName::Segment(seg),
                ..
            }) = repo.layout.parse_wal_key(&o.key)
            {
                stored.insert(seg);
            }
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|s| !stored.contains(*s))
        .map(|s| s.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Store(format!(
            "WAL the backup needs is missing from {}: {}",
            repo.describe(),
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::push::push;
    use crate::wal::test_segments::{write_segment, TEST_SEGMENT_SIZE};

    #[tokio::test]
    async fn only_whole_segments_count_and_every_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::wal::test_segments::fs_repo(&dir.path().join("repo"));
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        for n in [1, 2, 5] {
            push(&repo, &write_segment(&wal, 1, n, 7)).await.unwrap();
        }
        // Segment 3 only as a .partial: not a whole segment.
        let three = write_segment(&wal, 1, 3, 7);
        let partial = wal.join("000000010000000000000003.partial");
        std::fs::rename(&three, &partial).unwrap();
        push(&repo, &partial).await.unwrap();

        let seg =
            |n: u64| SegmentName::from_number(TimelineId::new(1).unwrap(), n, TEST_SEGMENT_SIZE);
        require_range(&repo, &seg(1), &seg(2), TEST_SEGMENT_SIZE)
            .await
            .unwrap();
        let e = require_range(&repo, &seg(1), &seg(5), TEST_SEGMENT_SIZE)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("000000010000000000000003, 000000010000000000000004"),
            "{msg}"
        );
        assert!(!msg.contains("000000010000000000000005"), "{msg}");
    }
}
