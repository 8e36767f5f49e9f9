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

/// Whether the spool holds fewer than half of the `count` segments wanted
/// ahead: then a prefetcher is worth starting.
pub fn needs_refill(spool: &Path, count: u32) -> bool {
    let spooled = fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    (spooled as u32) < count.div_ceil(2)
}

/// The most bytes a spool holds unless told otherwise.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 512 << 20;

/// How many segments of `segment_size` bytes to prefetch when `count` are
/// wanted and the spool may hold `max_bytes`: never more than fit, and at
/// least one.
pub fn bounded_count(count: u32, segment_size: u64, max_bytes: u64) -> u32 {
    let fit = (max_bytes / segment_size.max(1)).max(1);
    count.min(u32::try_from(fit).unwrap_or(u32::MAX))
}

/// The segment size a WAL segment file declares in its first page header
/// (PostgreSQL's clusters use 1 MiB to 1 GiB): what prefetching names the
/// next segments with, never an assumed 16 MiB.
pub fn segment_size_of(file: &Path) -> Option<u64> {
    use super::page_header::{LongPageHeader, LONG_HEADER_LEN};
    let mut head = [0u8; LONG_HEADER_LEN];
    let mut f = fs::File::open(file).ok()?;
    io::Read::read_exact(&mut f, &mut head).ok()?;
    let header = LongPageHeader::parse(&head, &file.display().to_string()).ok()?;
    Some(u64::from(header.segment_size))
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

/// The marker of a download under way into the spool.
fn in_flight(spool: &Path, name: &WalFileName) -> PathBuf {
    spool.join(format!(".fetching-{name}"))
}

/// A download under way: its marker lives as long as this does.
struct InFlight(PathBuf);

impl InFlight {
    fn mark(spool: &Path, name: &WalFileName) -> InFlight {
        let path = in_flight(spool, name);
        let _ = fs::write(&path, b"");
        InFlight(path)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// How long a download marker is trusted: older ones were left by a killed
/// prefetcher.
const STALE_DOWNLOAD: Duration = Duration::from_secs(60);

/// Moves a prefetched `name` into `dest` like [`take`]; if the prefetcher
/// is downloading it right now, first waits (up to `wait`) for that
/// download to finish instead of starting a second one. `Ok(false)`: not
/// in the spool; the caller fetches it itself.
pub async fn take_or_wait(
    spool: &Path,
    name: &WalFileName,
    source: &str,
    dest: &Path,
    wait: Duration,
) -> io::Result<bool> {
    let marker = in_flight(spool, name);
    let started = std::time::Instant::now();
    loop {
        if take(spool, name, source, dest)? {
            return Ok(true);
        }
        let fresh = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < STALE_DOWNLOAD);
        if !fresh || started.elapsed() >= wait || !source_matches(spool, source) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Downloads up to `count` segments after `after` (same timeline) into the
/// spool, `concurrency` at a time, each to a temporary name, verified,
/// fsynced and renamed, so a spooled file is always complete. It stops at
/// the first segment the archive does not have (the end of the archive, or
/// a gap that wal-fetch will report). Returns how many it fetched; 0 when
/// another prefetcher holds the spool.
pub async fn prefetch(
    repo: &Repo,
    spool: &Path,
    source: &str,
    after: &SegmentName,
    count: u32,
    segment_size: u64,
    concurrency: usize,
) -> Result<u32> {
    use futures::StreamExt;
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
    let first = after.segment_number(segment_size) + 1;
    let wanted: Vec<WalFileName> = (first..first + u64::from(count))
        .map(|n| WalFileName::Segment(SegmentName::from_number(after.timeline, n, segment_size)))
        .filter(|name| !spool.join(name.to_string()).exists())
        .collect();
    // In order, `concurrency` at a time; the first segment the archive does
    // not have ends the batch (downloads still under way are dropped: their
    // temporary files and markers go with them).
    let mut downloads = std::pin::pin!(futures::stream::iter(wanted)
        .map(|name| async move {
            let _marker = InFlight::mark(spool, &name);
            match fetch(repo, &name, &spool.join(name.to_string())).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .buffered(concurrency.max(1)));
    let mut fetched = 0;
    while let Some(r) = downloads.next().await {
        if !r? {
            break;
        }
        fetched += 1;
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_spool_is_bounded_in_bytes() {
        assert_eq!(bounded_count(8, 16 << 20, DEFAULT_SPOOL_MAX_BYTES), 8);
        assert_eq!(bounded_count(8, 64 << 20, DEFAULT_SPOOL_MAX_BYTES), 8);
        assert_eq!(bounded_count(8, 256 << 20, DEFAULT_SPOOL_MAX_BYTES), 2);
        assert_eq!(bounded_count(8, 1 << 30, DEFAULT_SPOOL_MAX_BYTES), 1);
        assert_eq!(bounded_count(64, 1 << 20, 16 << 20), 16);
    }

    use super::*;
    use crate::wal::push::push;
    use crate::wal::test_segments::{write_segment, TEST_SEGMENT_SIZE};
    use crate::wal::TimelineId;

    fn seg(n: u64) -> SegmentName {
        SegmentName::from_number(TimelineId::new(1).unwrap(), n, TEST_SEGMENT_SIZE)
    }

    async fn archive(dir: &Path, numbers: &[u64]) -> Repo {
        let repo = crate::wal::test_segments::fs_repo(&dir.join("repo"));
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
        let n = prefetch(&repo, &spool, "repo-a", &seg(1), 8, TEST_SEGMENT_SIZE, 4)
            .await
            .unwrap();
        assert_eq!(n, 3, "2, 3 and 4; it stops at the missing 5");
        assert!(!spool.join(seg(5).to_string()).exists());
        let left: Vec<_> = fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".fetching") || n.contains("pitr-tmp"))
            .collect();
        assert!(
            left.is_empty(),
            "no markers or partial files left: {left:?}"
        );
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
        let n = prefetch(&repo, &spool, "repo-b", &seg(3), 1, TEST_SEGMENT_SIZE, 2)
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(fs::read_to_string(spool.join(SOURCE)).unwrap(), "repo-b");
    }

    #[tokio::test]
    async fn a_fetch_waits_for_the_download_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        fs::write(spool.join(SOURCE), "a").unwrap();
        let name = WalFileName::Segment(seg(7));
        let dest = dir.path().join("RECOVERYXLOG");
        // Nothing under way: answered at once.
        let t = std::time::Instant::now();
        assert!(
            !take_or_wait(&spool, &name, "a", &dest, Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        // A download under way finishes 200 ms later: the fetch takes it.
        fs::write(in_flight(&spool, &name), b"").unwrap();
        let (s2, n2) = (spool.clone(), name);
        let finisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            fs::write(s2.join(n2.to_string()), b"segment").unwrap();
            fs::remove_file(in_flight(&s2, &n2)).unwrap();
        });
        assert!(
            take_or_wait(&spool, &name, "a", &dest, Duration::from_secs(5))
                .await
                .unwrap()
        );
        finisher.await.unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"segment");
        // A download that fails leaves no file: the fetch goes on alone.
        fs::write(in_flight(&spool, &name), b"").unwrap();
        let (s3, n3) = (spool.clone(), name);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fs::remove_file(in_flight(&s3, &n3)).unwrap();
        });
        assert!(
            !take_or_wait(&spool, &name, "a", &dest, Duration::from_secs(5))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn one_prefetcher_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path(), &[1, 2]).await;
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let held = Lock::acquire(&spool).expect("free");
        let n = prefetch(&repo, &spool, "a", &seg(1), 4, TEST_SEGMENT_SIZE, 2)
            .await
            .unwrap();
        assert_eq!(n, 0, "the spool is busy");
        drop(held);
        let n = prefetch(&repo, &spool, "a", &seg(1), 4, TEST_SEGMENT_SIZE, 2)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
