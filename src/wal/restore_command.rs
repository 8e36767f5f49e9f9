//! The `restore_command` contract, decided once for every caller: the
//! `pitr wal-fetch` command maps the verdict to exit codes, the CNPG-I
//! plugin maps it to gRPC codes.
//!
//! PostgreSQL reads "not found" as the end of the archive: recovery ends and
//! the server promotes. So "not found" is given only when the archive is
//! really there and really ends before the requested file. A repository or
//! server with no archive at all (a mistyped `--repo` or `--server-name`, an
//! unmounted directory), a missing segment with later segments after it (a
//! gap), and every failure to fetch or to decide are told apart, so that the
//! caller can stop recovery instead of promoting with WAL missing. Whether
//! that applies (a standby falls back to streaming instead) is the caller's
//! rule, not this module's.

use std::path::Path;
use std::time::Duration;

use super::fetch::{fetch, FetchOutcome};
use super::locate;
use super::{SegmentName, WalFileName};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repo;

/// What became of one `restore_command` request.
#[derive(Debug)]
pub enum Verdict {
    /// The file is at the destination, complete and verified.
    Restored(FetchOutcome),
    /// Not in the archive, which is there: the end of archived WAL, or a
    /// timeline or history file that does not exist (normal).
    NotInArchive,
    /// The segment is missing, but a later segment of the same timeline is
    /// archived: ending recovery here would lose everything after it.
    Gap { later: SegmentName },
    /// The file could not be fetched, or whether it exists could not be
    /// decided; `attempts` tries were made.
    Failed { error: Error, attempts: u32 },
}

/// How failures are retried within one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled after each.
    pub first_wait: Duration,
}

impl RetryPolicy {
    /// The longest a request can spend waiting between tries.
    pub fn total_wait(&self) -> Duration {
        (1..self.attempts.max(1)).fold(Duration::ZERO, |total, i| {
            total + self.first_wait * 2u32.saturating_pow(i - 1)
        })
    }
}

/// A try that failed and will be retried, for the caller's log.
#[derive(Debug)]
pub struct Retry<'a> {
    pub attempt: u32,
    pub attempts: u32,
    pub error: &'a Error,
    pub wait: Duration,
}

/// Whether trying again could help: settings and keys do not change
/// between tries; the store, the network and a damaged transfer may.
fn retryable(e: &Error) -> bool {
    !matches!(e.kind(), ErrorKind::Config | ErrorKind::WrongKey)
}

/// Fetches `name` into `dest` and decides what PostgreSQL must be told.
/// Nothing is left at `dest` unless the verdict is `Restored`.
pub async fn restore_wal(
    repo: &Repo,
    name: &WalFileName,
    dest: &Path,
    policy: RetryPolicy,
    mut on_retry: impl FnMut(Retry<'_>),
) -> Verdict {
    let attempts = policy.attempts.max(1);
    let mut wait = policy.first_wait;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match try_once(repo, name, dest).await {
            Ok(verdict) => return verdict,
            Err(e) => e,
        };
        if attempt >= attempts || !retryable(&error) {
            return Verdict::Failed {
                error,
                attempts: attempt,
            };
        }
        on_retry(Retry {
            attempt,
            attempts,
            error: &error,
            wait,
        });
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

async fn try_once(repo: &Repo, name: &WalFileName, dest: &Path) -> Result<Verdict> {
    match fetch(repo, name, dest).await {
        Ok(done) => Ok(Verdict::Restored(done)),
        Err(e) if e.kind() == ErrorKind::NotFound => missing(repo, name).await,
        Err(e) => Err(e),
    }
}

/// `name` is not in the archive: the end of it, a gap, or no archive at all.
pub async fn missing(repo: &Repo, name: &WalFileName) -> Result<Verdict> {
    if !locate::archive_exists(repo).await? {
        return Err(Error::Config(format!(
            "{name} was asked for, but {} holds no archive at all (no WAL, no pitr identity): \
             check --repo / PITR_REPO and --server-name / PITR_SERVER_NAME, and that the \
             archive is mounted; an empty archive is never taken as the end of the WAL",
            repo.describe()
        )));
    }
    let WalFileName::Segment(segment) = name else {
        return Ok(Verdict::NotInArchive);
    };
    Ok(match locate::later_on_same_timeline(repo, segment).await? {
        Some(later) => Verdict::Gap { later },
        None => Verdict::NotInArchive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoConfig;
    use crate::wal::push::push;
    use crate::wal::test_segments::write_segment;

    fn repo_at(root: &Path, server: &str) -> RepoConfig {
        crate::wal::test_segments::fs_repo_config(root, server)
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 2,
        first_wait: Duration::from_millis(1),
    };

    async fn verdict(repo: &Repo, name: &str, dest: &Path) -> Verdict {
        restore_wal(repo, &name.parse().unwrap(), dest, FAST, |_| {}).await
    }

    /// A repository with segments 1, 2 and 4 of timeline 1, and timeline 2's
    /// history file.
    async fn archive(dir: &Path) -> Repo {
        let repo = Repo::create(&repo_at(&dir.join("repo"), "main")).unwrap();
        let wal = dir.join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        for n in [1, 2, 4] {
            let seg = write_segment(&wal, 1, n, 42);
            push(&repo, &seg).await.unwrap();
        }
        let hist = wal.join("00000002.history");
        std::fs::write(&hist, "1\t0/4000000\tno recovery target specified\n").unwrap();
        push(&repo, &hist).await.unwrap();
        repo
    }

    #[tokio::test]
    async fn restored_files_are_complete_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path()).await;
        let dest = dir.path().join("RECOVERYXLOG");
        let v = verdict(&repo, "000000010000000000000002", &dest).await;
        assert!(
            matches!(v, Verdict::Restored(ref o) if o.checksum_verified),
            "{v:?}"
        );
        let expected = std::fs::read(dir.path().join("wal/000000010000000000000002")).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), expected);
        let v = verdict(
            &repo,
            "00000002.history",
            &dir.path().join("RECOVERYHISTORY"),
        )
        .await;
        assert!(matches!(v, Verdict::Restored(_)), "{v:?}");
    }

    #[tokio::test]
    async fn the_end_of_the_archive_is_not_in_archive() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path()).await;
        let dest = dir.path().join("RECOVERYXLOG");
        let v = verdict(&repo, "000000010000000000000005", &dest).await;
        assert!(matches!(v, Verdict::NotInArchive), "{v:?}");
        assert!(!dest.exists());
        // Probes for timelines that do not exist, on a timeline with no WAL.
        let v = verdict(&repo, "00000003.history", &dest).await;
        assert!(matches!(v, Verdict::NotInArchive), "{v:?}");
        let v = verdict(&repo, "000000020000000000000004", &dest).await;
        assert!(matches!(v, Verdict::NotInArchive), "{v:?}");
    }

    #[tokio::test]
    async fn a_missing_segment_before_a_later_one_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path()).await;
        let dest = dir.path().join("RECOVERYXLOG");
        let v = verdict(&repo, "000000010000000000000003", &dest).await;
        match v {
            Verdict::Gap { later } => assert_eq!(later.to_string(), "000000010000000000000004"),
            other => panic!("expected a gap, got {other:?}"),
        }
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn no_archive_at_all_is_a_failure_not_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let _ = archive(dir.path()).await;
        // A mistyped server name: the repository is there, the server is not.
        let other = Repo::open(&repo_at(&dir.path().join("repo"), "mian")).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        for name in ["000000010000000000000001", "00000002.history"] {
            match verdict(&other, name, &dest).await {
                Verdict::Failed { error, attempts } => {
                    assert_eq!(error.kind(), ErrorKind::Config);
                    assert!(error.to_string().contains("PITR_SERVER_NAME"), "{error}");
                    assert_eq!(attempts, 1, "a settings error is not retried");
                }
                v => panic!("{name}: expected a failure, got {v:?}"),
            }
        }
        // A mistyped repository directory is refused when opening, and not
        // created.
        let missing = dir.path().join("no-such-repo");
        let e = Repo::open(&repo_at(&missing, "main"))
            .err()
            .expect("refused");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!missing.exists());
    }

    #[tokio::test]
    async fn a_damaged_object_fails_after_every_try() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path()).await;
        let key = dir
            .path()
            .join("repo/main/wals/0000000100000000/000000010000000000000002.gz");
        let mut bytes = std::fs::read(&key).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&key, bytes).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let mut retries = 0;
        let v = restore_wal(
            &repo,
            &"000000010000000000000002".parse().unwrap(),
            &dest,
            FAST,
            |_| retries += 1,
        )
        .await;
        match v {
            Verdict::Failed { error, attempts } => {
                assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
                assert_eq!(attempts, 2);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(retries, 1);
        assert!(!dest.exists(), "nothing half-written at the destination");
    }

    #[tokio::test]
    async fn plaintext_in_an_encrypted_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        let root = dir.path().join("repo");
        let mut cfg = repo_at(&root, "main");
        cfg.encryption_key_file = Some(key);
        let repo = Repo::create(&cfg).unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        push(&repo, &write_segment(&wal, 1, 1, 42)).await.unwrap();
        assert!(crate::wal::identity::load(&repo)
            .await
            .unwrap()
            .unwrap()
            .encrypted());

        // Someone without the key cannot push: the identity says encrypted.
        let plain = Repo::open(&repo_at(&root, "main")).unwrap();
        let e = push(&plain, &write_segment(&wal, 1, 2, 42))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");

        // A plaintext segment put there by hand is refused on fetch.
        let elsewhere = Repo::create(&repo_at(&dir.path().join("other"), "main")).unwrap();
        push(&elsewhere, &write_segment(&wal, 1, 2, 42))
            .await
            .unwrap();
        let rel = "main/wals/0000000100000000/000000010000000000000002.gz";
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(dir.path().join("other").join(rel), root.join(rel)).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        match verdict(&repo, "000000010000000000000002", &dest).await {
            Verdict::Failed { error, attempts } => {
                assert_eq!(error.kind(), ErrorKind::WrongKey, "{error}");
                assert!(error.to_string().contains("not encrypted"), "{error}");
                assert_eq!(attempts, 1);
            }
            v => panic!("expected a refusal, got {v:?}"),
        }
        assert!(!dest.exists());
        // The genuine, encrypted one still restores.
        let v = verdict(&repo, "000000010000000000000001", &dest).await;
        assert!(matches!(v, Verdict::Restored(_)), "{v:?}");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Hostile input under every WAL key wal-fetch reads: each damaged
    /// object is planted by hand (no stored checksum, as Barman's objects
    /// or an intruder's), and each is a failure naming the object, never
    /// "not in the archive", with nothing left in the destination directory.
    #[tokio::test]
    async fn damaged_objects_under_wal_keys_are_failures_naming_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let repo = archive(dir.path()).await;
        let root = dir.path().join("repo");
        let wal = dir.path().join("wal");
        let seg = |n: u64| std::fs::read(write_segment(&wal, 1, n, 42)).unwrap();
        let mut short = seg(2);
        short.truncate(short.len() / 2);
        // A header that says segments are 2 MiB on a 1 MiB segment.
        let mut lying = seg(2);
        lying[32..36].copy_from_slice(&(2u32 << 20).to_le_bytes());
        let mut zstd = Vec::new();
        zstd::stream::copy_encode(&seg(2)[..], &mut zstd, 1).unwrap();
        let other_key = dir.path().join("other-key");
        std::fs::write(&other_key, "cd".repeat(32)).unwrap();
        let mut enc_cfg = repo_at(&dir.path().join("enc"), "main");
        enc_cfg.encryption_key_file = Some(other_key);
        let enc = Repo::create(&enc_cfg).unwrap();
        push(&enc, &write_segment(&wal, 1, 2, 42)).await.unwrap();
        let encrypted = std::fs::read(
            dir.path()
                .join("enc/main/wals/0000000100000000/000000010000000000000002.gz"),
        )
        .unwrap();
        let seg_key = "main/wals/0000000100000000/000000010000000000000002.gz";
        let hist_key = "main/wals/00000002.history.gz";
        let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
            ("empty segment", seg_key, vec![], "Corrupt"),
            (
                "truncated gzip",
                seg_key,
                gzip(&seg(2))[..300].to_vec(),
                "Corrupt",
            ),
            (
                "not gzip",
                seg_key,
                b"hello, not gzip at all".to_vec(),
                "Corrupt",
            ),
            ("zstd under .gz", seg_key, zstd, "Corrupt"),
            ("gzip of garbage", seg_key, gzip(&[0x41; 4096]), "Corrupt"),
            ("gzip of half a segment", seg_key, gzip(&short), "Corrupt"),
            (
                "header lies about the size",
                seg_key,
                gzip(&lying),
                "Corrupt",
            ),
            (
                "another segment's content",
                seg_key,
                gzip(&seg(3)),
                "Corrupt",
            ),
            (
                "encrypted with a key this repo lacks",
                seg_key,
                encrypted,
                "WrongKey",
            ),
            (
                "history of garbage",
                hist_key,
                gzip(b"\x00\x01garbage\n"),
                "Corrupt",
            ),
            (
                "history with a loop",
                hist_key,
                gzip(b"1\t0/1000000\tr\n1\t0/2000000\tr\n"),
                "Corrupt",
            ),
            (
                "history naming itself",
                hist_key,
                gzip(b"2\t0/1000000\tr\n"),
                "Corrupt",
            ),
        ];
        let originals: Vec<(String, Vec<u8>)> = [seg_key, hist_key]
            .iter()
            .map(|k| (k.to_string(), std::fs::read(root.join(k)).unwrap()))
            .collect();
        let dest_dir = dir.path().join("pg_wal");
        std::fs::create_dir_all(&dest_dir).unwrap();
        for (what, key, bytes, kind) in cases {
            for (k, b) in &originals {
                std::fs::write(root.join(k), b).unwrap();
            }
            std::fs::write(root.join(key), &bytes).unwrap();
            let _ = std::fs::remove_file(root.join(".pitr-meta").join(format!("{key}.json")));
            let name = std::path::Path::new(key)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let name = name.trim_end_matches(".gz");
            let dest = dest_dir.join("RECOVERYXLOG");
            match verdict(&repo, name, &dest).await {
                Verdict::Failed { error, .. } => {
                    assert_eq!(format!("{:?}", error.kind()), kind, "{what}: {error}");
                    let file = std::path::Path::new(key)
                        .file_name()
                        .unwrap()
                        .to_str()
                        .unwrap();
                    assert!(
                        error.to_string().contains(file.trim_end_matches(".gz")),
                        "{what}: {error}"
                    );
                }
                v => panic!("{what}: expected a failure, got {v:?}"),
            }
            let left: Vec<_> = std::fs::read_dir(&dest_dir).unwrap().collect();
            assert!(left.is_empty(), "{what}: left {left:?} in pg_wal");
        }
    }

    #[test]
    fn total_wait_doubles() {
        let p = RetryPolicy {
            attempts: 4,
            first_wait: Duration::from_secs(1),
        };
        assert_eq!(p.total_wait(), Duration::from_secs(7));
        let once = RetryPolicy {
            attempts: 1,
            first_wait: Duration::from_secs(1),
        };
        assert_eq!(once.total_wait(), Duration::ZERO);
    }
}
