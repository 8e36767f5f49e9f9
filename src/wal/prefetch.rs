//! Prefetching WAL for recovery: while PostgreSQL replays one segment, the
//! next ones are downloaded, verified and written into a spool directory
//! beside the destination (`pg_wal/.pitr-prefetch/`), so that the next
//! `wal-fetch` is a rename. PostgreSQL ignores directories in pg_wal.
//!
//! The spool carries a `.source` file naming the repository and server it
//! was filled from; a spool from anywhere else is never used. One
//! prefetcher runs at a time (a `.lock` file; a stale one is taken over).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::fetch::fetch;
use super::{SegmentName, WalFileName};
use crate::error::{Error, Result};
use crate::fsutil::{fsync_dir, parent_dir};
use crate::repo::Repo;

const SOURCE: &str = ".source";
const LOCK: &str = ".lock";
const STALE_LOCK: Duration = Duration::from_secs(120);

/// The spool for a destination like `pg_wal/RECOVERYXLOG`.
pub fn spool_dir(dest: &Path) -> PathBuf {
    parent_dir(dest).join(".pitr-prefetch")
}

fn source_matches(spool: &Path, source: &str) -> bool {
    fs::read_to_string(spool.join(SOURCE)).is_ok_and(|s| s == source)
}

/// Moves a prefetched `name` into `dest`. `Ok(false)` when the spool does
/// not have it (or was filled from another repository).
pub fn take(spool: &Path, name: &WalFileName, source: &str, dest: &Path) -> io::Result<bool> {
    let file = spool.join(name.to_string());
    if !source_matches(spool, source) || !file.exists() {
        return Ok(false);
    }
    fs::rename(&file, dest)?;
    fsync_dir(parent_dir(dest))?;
    Ok(true)
}

/// Removes spooled segments before `current`: they will not be asked for again.
pub fn prune(spool: &Path, current: &SegmentName) {
    let Ok(entries) = fs::read_dir(spool) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(WalFileName::Segment(s)) = name.parse::<WalFileName>() {
            if s < *current {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes the whole spool (at the end of the archive).
pub fn clear(spool: &Path) {
    let _ = fs::remove_dir_all(spool);
}

struct Lock(PathBuf);

impl Lock {
    fn acquire(spool: &Path) -> Option<Lock> {
        let path = spool.join(LOCK);
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Some(Lock(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    return None;
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Downloads up to `count` segments after `after` (same timeline) into the
/// spool, stopping at the first one the archive does not have. Returns how
/// many it fetched; 0 when another prefetcher holds the spool.
pub async fn prefetch(
    repo: &Repo,
    spool: &Path,
    source: &str,
    after: &SegmentName,
    count: u32,
    segment_size: u64,
) -> Result<u32> {
    fs::create_dir_all(spool)
        .map_err(|e| Error::io(format!("cannot create {}", spool.display()), e))?;
    let Some(_lock) = Lock::acquire(spool) else {
        return Ok(0);
    };
    if !source_matches(spool, source) {
        // Filled from elsewhere (or new): start afresh.
        if let Ok(entries) = fs::read_dir(spool) {
            for e in entries.flatten() {
                if e.file_name() != LOCK {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        fs::write(spool.join(SOURCE), source)
            .map_err(|e| Error::io(format!("cannot write {}", spool.display()), e))?;
    }
    let mut fetched = 0;
    let first = after.segment_number(segment_size) + 1;
    for n in first..first + u64::from(count) {
        let name = WalFileName::Segment(SegmentName::from_number(after.timeline, n, segment_size));
        let file = spool.join(name.to_string());
        if file.exists() {
            continue;
        }
        match fetch(repo, &name, &file).await {
            Ok(_) => fetched += 1,
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::config::{RepoConfig, RepoLocation, S3Settings};
    use crate::wal::push::push;
    use crate::wal::test_segments::{write_segment, TEST_SEGMENT_SIZE};
    use crate::wal::TimelineId;

    fn seg(n: u64) -> SegmentName {
        SegmentName::from_number(TimelineId::new(1).unwrap(), n, TEST_SEGMENT_SIZE)
    }

    async fn archive(dir: &Path, numbers: &[u64]) -> Repo {
        let repo = Repo::create(&RepoConfig {
            location: RepoLocation::Fs {
                root: dir.join("repo"),
            },
            server_name: "main".into(),
            s3: S3Settings::default(),
            compression: Compression::Gzip { level: 1 },
            encryption_key_file: None,
        })
        .unwrap();
        let wal = dir.join("wal");
        fs::create_dir_all(&wal).unwrap();
        for n in numbers {
            push(&repo, &write_segment(&wal, 1, *n, 9)).await.unwrap();
        }
        repo
    }

    #[tokio::test]
    async fn prefetches_until_the_end_of_the_archive_and_serves_only_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path(), &[1, 2, 3, 4, 6]).await;
        let spool = dir.path().join("pg_wal/.pitr-prefetch");
        let n = prefetch(&repo, &spool, "repo-a", &seg(1), 8, TEST_SEGMENT_SIZE)
            .await
            .unwrap();
        assert_eq!(n, 3, "2, 3 and 4; it stops at the missing 5");
        assert!(!spool.join(seg(6).to_string()).exists());
        // What is spooled is the archived file, complete.
        let want = fs::read(dir.path().join("wal").join(seg(3).to_string())).unwrap();
        assert_eq!(fs::read(spool.join(seg(3).to_string())).unwrap(), want);

        // Another repository's request never takes from this spool.
        let dest = dir.path().join("pg_wal/RECOVERYXLOG");
        let name = WalFileName::Segment(seg(2));
        assert!(!take(&spool, &name, "repo-b", &dest).unwrap());
        assert!(!dest.exists());
        assert!(take(&spool, &name, "repo-a", &dest).unwrap());
        assert_eq!(
            fs::read(&dest).unwrap(),
            fs::read(dir.path().join("wal").join(seg(2).to_string())).unwrap()
        );
        assert!(
            !spool.join(seg(2).to_string()).exists(),
            "moved, not copied"
        );

        // Pruning drops what recovery has passed.
        prune(&spool, &seg(4));
        assert!(!spool.join(seg(3).to_string()).exists());
        assert!(spool.join(seg(4).to_string()).exists());

        // A spool filled from elsewhere is emptied before it is refilled.
        let n = prefetch(&repo, &spool, "repo-b", &seg(3), 1, TEST_SEGMENT_SIZE)
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(fs::read_to_string(spool.join(SOURCE)).unwrap(), "repo-b");
    }

    #[tokio::test]
    async fn one_prefetcher_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path(), &[1, 2]).await;
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let held = Lock::acquire(&spool).expect("free");
        let n = prefetch(&repo, &spool, "a", &seg(1), 4, TEST_SEGMENT_SIZE)
            .await
            .unwrap();
        assert_eq!(n, 0, "the spool is busy");
        drop(held);
        let n = prefetch(&repo, &spool, "a", &seg(1), 4, TEST_SEGMENT_SIZE)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
