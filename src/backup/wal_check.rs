//! Is the WAL a backup needs in the archive? A backup is usable only when
//! every segment from its start to its end is stored.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::repo::Repo;
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
            dirs.insert(s.hash_dir());
        })
        .collect();
    let mut stored = BTreeSet::new();
    for dir in dirs {
        let prefix = format!("{}{dir}/", repo.layout.wals_prefix());
        for o in repo.store.list(&prefix).await? {
            if let Some(seg) = o.key.strip_prefix(&prefix).and_then(segment_of_key) {
                stored.insert(seg);
            }
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !stored.contains(s))
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

fn segment_of_key(file: &str) -> Option<String> {
    locate::segment_of_file(file).map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::segment_of_key;

    #[test]
    fn only_whole_segments_count() {
        assert_eq!(
            segment_of_key("000000010000000000000002.gz").as_deref(),
            Some("000000010000000000000002")
        );
        assert_eq!(
            segment_of_key("000000010000000000000002").as_deref(),
            Some("000000010000000000000002")
        );
        assert_eq!(segment_of_key("000000010000000000000002.partial.gz"), None);
        assert_eq!(
            segment_of_key("000000010000000000000002.00000028.backup.gz"),
            None
        );
    }
}
