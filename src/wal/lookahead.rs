//! Look-ahead archiving: while PostgreSQL asks for one WAL file, the next
//! files it has marked ready (`pg_wal/archive_status/*.ready`) are pushed
//! at the same time, so a burst never piles up `.ready` files.
//!
//! Each file stored this way gets a marker in `pg_wal/.pitr-archived/`,
//! written only after the store acknowledged the object, recording where it
//! went and the SHA-256 and size of what was stored. When PostgreSQL then
//! asks for that file, `wal-push` compares the file on disk with the marker
//! (same repository, size and SHA-256) and answers at once; any mismatch
//! (the file was rewritten, another repository) means a normal push, with
//! all of its rules (never overwrite, same-bytes idempotence, identity).
//! PostgreSQL ignores directories in pg_wal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::push::{push_remembering, sha256_of_file, PushOutcome};
use super::push_cache::PushCache;
use super::WalFileName;
use crate::error::{Error, Result};
use crate::fsutil::{fsync_dir, temp_beside};
use crate::repo::Repo;

const MARKERS: &str = ".pitr-archived";

/// What a marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    source: String,
    key: String,
    size: u64,
    sha256: String,
}

/// The markers of one pg_wal directory.
#[derive(Debug, Clone)]
pub struct Markers {
    dir: PathBuf,
    source: String,
}

impl Markers {
    /// The markers beside `pg_wal` for pushes into the repository
    /// described by `source` (see [`Repo::describe`]).
    pub fn new(pg_wal: &Path, source: &str) -> Markers {
        Markers {
            dir: pg_wal.join(MARKERS),
            source: source.to_string(),
        }
    }

    /// What pushes from this pg_wal verified about the repository (kept in
    /// the markers' directory).
    pub fn push_cache(&self) -> PushCache {
        PushCache::in_dir(&self.dir)
    }

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// Records that `name` (SHA-256 `sha256`, `size` bytes) is stored
    /// under `key`.
    pub fn record(&self, name: &WalFileName, key: &str, sha256: &str, size: u64) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let marker = Marker {
            source: self.source.clone(),
            key: key.to_string(),
            size,
            sha256: sha256.to_string(),
        };
        let path = self.path(name);
        let temp = temp_beside(&path);
        fs::write(
            &temp,
            serde_json::to_vec(&marker).expect("marker serialises"),
        )?;
        fs::rename(&temp, &path)?;
        fsync_dir(&self.dir)
    }

    /// The key and SHA-256 `file` was stored under, if a marker says that
    /// exactly these bytes were stored for `name` in this repository. Reads
    /// the file when a marker exists.
    pub fn stored_as(&self, name: &WalFileName, file: &Path) -> Result<Option<(String, String)>> {
        let Ok(text) = fs::read(self.path(name)) else {
            return Ok(None);
        };
        let Ok(marker) = serde_json::from_slice::<Marker>(&text) else {
            return Ok(None);
        };
        let size = fs::metadata(file)
            .map_err(|e| Error::io(format!("cannot stat {}", file.display()), e))?
            .len();
        if marker.source != self.source || marker.size != size {
            return Ok(None);
        }
        let sha256 = sha256_of_file(file)?;
        Ok((sha256 == marker.sha256).then_some((marker.key, sha256)))
    }

    /// Whether a marker of this repository records `name` with `size`
    /// bytes (the file's content is not read: [`Markers::stored_as`] does
    /// that before a push is answered from the marker).
    pub fn recorded(&self, name: &WalFileName, size: u64) -> bool {
        fs::read(self.path(name))
            .ok()
            .and_then(|t| serde_json::from_slice::<Marker>(&t).ok())
            .is_some_and(|m| m.source == self.source && m.size == size)
    }

    /// Removes markers of files that are no longer in pg_wal (PostgreSQL
    /// removed or recycled them after archiving).
    pub fn prune(&self, pg_wal: &Path) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if PushCache::is_its_file(&name) {
                continue;
            }
            if !pg_wal.join(&name).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The files PostgreSQL has marked ready to archive, other than `current`
/// and those `markers` record as pushed ahead already, in the order it
/// would ask for them (timeline history files first, then WAL order), at
/// most `count` of them and at most `max_bytes` in all.
pub fn ready_files(
    pg_wal: &Path,
    current: &WalFileName,
    count: usize,
    max_bytes: u64,
    markers: &Markers,
) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut ready: Vec<WalFileName> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".ready")?.parse().ok()
        })
        .filter(|n| n != current)
        .collect();
    ready.sort_by_key(|n| (!matches!(n, WalFileName::TimelineHistory(_)), n.to_string()));
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for name in ready {
        if out.len() == count {
            break;
        }
        let path = pg_wal.join(name.to_string());
        let Ok(md) = fs::metadata(&path) else {
            continue;
        };
        // Already pushed ahead by an earlier call: PostgreSQL's own call
        // for it checks the marker; pushing it again would only hold a
        // place in this batch that a new file can use.
        if markers.recorded(&name, md.len()) {
            continue;
        }
        if !out.is_empty() && bytes + md.len() > max_bytes {
            break;
        }
        bytes += md.len();
        out.push(path);
    }
    out
}

/// What became of one file pushed ahead.
#[derive(Debug)]
pub struct AheadResult {
    pub path: PathBuf,
    pub result: Result<PushOutcome>,
}

/// Pushes `files` (ready files after the one PostgreSQL asked for), at most
/// `concurrency` at once, recording a marker for each one stored or found
/// already archived. Files that already have a matching marker are skipped.
pub async fn push_ahead(
    repo: &Repo,
    markers: &Markers,
    files: Vec<PathBuf>,
    concurrency: usize,
) -> Vec<AheadResult> {
    futures::stream::iter(files)
        .map(|path| async move {
            let result = push_one(repo, markers, &path).await;
            AheadResult { path, result }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Pushes one file and records its marker once it is stored.
pub async fn push_one(repo: &Repo, markers: &Markers, path: &Path) -> Result<PushOutcome> {
    let name: WalFileName = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .parse()?;
    if let Some((key, sha256)) = markers.stored_as(&name, path)? {
        return Ok(PushOutcome::AlreadyArchived { key, sha256 });
    }
    let outcome = push_remembering(repo, path, Some(&markers.push_cache())).await?;
    crate::fault_point::reached("push-stored-before-marker", &name.to_string());
    let (key, sha256, size) = match &outcome {
        PushOutcome::Stored {
            key,
            sha256,
            plain_size,
            ..
        } => (key.clone(), sha256.clone(), *plain_size),
        PushOutcome::AlreadyArchived { key, sha256 } => {
            let size = fs::metadata(path)
                .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
                .len();
            (key.clone(), sha256.clone(), size)
        }
    };
    markers
        .record(&name, &key, &sha256, size)
        .map_err(|e| Error::io(format!("cannot write the archive marker of {name}"), e))?;
    Ok(outcome)
}

/// The pushes under way in this process (a long-lived process such as the
/// CNPG-I sidecar), so that one file is never pushed twice at once: a push
/// of a file already being pushed waits for that one, then finds its
/// marker.
#[derive(Debug, Default)]
pub struct InFlight {
    pushes:
        std::sync::Mutex<std::collections::HashMap<PathBuf, tokio::sync::watch::Receiver<bool>>>,
}

/// A claim on one file's push; dropping it ends the claim and wakes those
/// waiting for it.
struct Claim<'a> {
    in_flight: &'a InFlight,
    path: PathBuf,
    done: tokio::sync::watch::Sender<bool>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.in_flight
            .pushes
            .lock()
            .expect("in-flight lock")
            .remove(&self.path);
        let _ = self.done.send(true);
    }
}

impl InFlight {
    fn claim(&self, path: &Path) -> Result<Claim<'_>, tokio::sync::watch::Receiver<bool>> {
        let mut pushes = self.pushes.lock().expect("in-flight lock");
        if let Some(busy) = pushes.get(path) {
            return Err(busy.clone());
        }
        let (done, rx) = tokio::sync::watch::channel(false);
        pushes.insert(path.to_path_buf(), rx);
        Ok(Claim {
            in_flight: self,
            path: path.to_path_buf(),
            done,
        })
    }

    /// How many pushes are under way.
    pub fn len(&self) -> usize {
        self.pushes.lock().expect("in-flight lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`push_one`], but never while another push of the same file runs in
/// this process: then it waits for that push and answers from its marker.
pub async fn push_exclusive(
    repo: &Repo,
    markers: &Markers,
    in_flight: &InFlight,
    path: &Path,
) -> Result<PushOutcome> {
    loop {
        match in_flight.claim(path) {
            Ok(_claim) => return push_one(repo, markers, path).await,
            Err(mut busy) => {
                let _ = busy.wait_for(|done| *done).await;
            }
        }
    }
}

/// Pushes the ready files after `current` in the background (a task of
/// its own), `concurrency` at a time, each with [`push_exclusive`]. For a
/// long-lived process: the call that asked for `current` can answer
/// PostgreSQL at once while the next files travel.
pub fn spawn_ahead(
    repo: std::sync::Arc<Repo>,
    markers: Markers,
    in_flight: std::sync::Arc<InFlight>,
    files: Vec<PathBuf>,
    concurrency: usize,
) -> tokio::task::JoinHandle<Vec<AheadResult>> {
    tokio::spawn(async move {
        futures::stream::iter(files)
            .map(|path| {
                let (repo, markers, in_flight) = (&repo, &markers, &in_flight);
                async move {
                    let result = push_exclusive(repo, markers, in_flight, &path).await;
                    AheadResult { path, result }
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::wal::test_segments::write_segment;

    fn repo(dir: &Path) -> Repo {
        crate::wal::test_segments::fs_repo(&dir.join("repo"))
    }

    /// pg_wal with segments 1..=n, each marked ready.
    fn pg_wal(dir: &Path, n: u64) -> PathBuf {
        let wal = dir.join("pg_wal");
        fs::create_dir_all(wal.join("archive_status")).unwrap();
        for i in 1..=n {
            let seg = write_segment(&wal, 1, i, 3);
            let name = seg.file_name().unwrap().to_string_lossy().into_owned();
            fs::write(wal.join("archive_status").join(format!("{name}.ready")), "").unwrap();
        }
        wal
    }

    #[test]
    fn ready_files_come_in_wal_order_bounded_by_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = pg_wal(dir.path(), 6);
        fs::write(wal.join("00000002.history"), "1\t0/5000000\tx\n").unwrap();
        fs::write(wal.join("archive_status/00000002.history.ready"), "").unwrap();
        // A .done file is not ready.
        fs::rename(
            wal.join("archive_status/000000010000000000000004.ready"),
            wal.join("archive_status/000000010000000000000004.done"),
        )
        .unwrap();
        let current: WalFileName = "000000010000000000000001".parse().unwrap();
        let markers = Markers::new(&wal, "repo");
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(ready_files(&wal, &current, 10, u64::MAX, &markers)),
            [
                "00000002.history",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000005",
                "000000010000000000000006"
            ]
        );
        assert_eq!(ready_files(&wal, &current, 2, u64::MAX, &markers).len(), 2);
        // 1 MiB segments: 2.5 MiB of room holds the history file and two.
        assert_eq!(ready_files(&wal, &current, 10, 5 << 19, &markers).len(), 3);

        // Files an earlier call pushed ahead (a marker of this repository
        // with their size) make room for the next ones; another
        // repository's markers do not.
        let two: WalFileName = "000000010000000000000002".parse().unwrap();
        let size = fs::metadata(wal.join("000000010000000000000002"))
            .unwrap()
            .len();
        markers.record(&two, "k2", "00", size).unwrap();
        let three: WalFileName = "000000010000000000000003".parse().unwrap();
        Markers::new(&wal, "elsewhere")
            .record(&three, "k3", "00", size)
            .unwrap();
        assert_eq!(
            names(ready_files(&wal, &current, 3, u64::MAX, &markers)),
            [
                "00000002.history",
                "000000010000000000000003",
                "000000010000000000000005"
            ]
        );
    }

    #[tokio::test]
    async fn files_pushed_ahead_are_answered_from_their_marker_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let wal = pg_wal(dir.path(), 4);
        let markers = Markers::new(&wal, &repo.describe());
        let current: WalFileName = "000000010000000000000001".parse().unwrap();
        let ahead = ready_files(&wal, &current, 7, u64::MAX, &markers);
        let results = push_ahead(&repo, &markers, ahead, 3).await;
        assert_eq!(results.len(), 3);
        assert!(results
            .iter()
            .all(|r| matches!(r.result, Ok(PushOutcome::Stored { .. }))));

        // PostgreSQL now asks for segment 2: the marker answers, without the
        // store (its object is gone here, and the answer is still "stored").
        let two = wal.join("000000010000000000000002");
        let key = "main/wals/0000000100000000/000000010000000000000002.gz";
        fs::remove_file(dir.path().join("repo").join(key)).unwrap();
        match push_one(&repo, &markers, &two).await.unwrap() {
            PushOutcome::AlreadyArchived { key: k, .. } => assert_eq!(k, key),
            other => panic!("{other:?}"),
        }

        // Segment 3 rewritten under the same name: the marker no longer
        // matches, a normal push runs and refuses the different content.
        let three = wal.join("000000010000000000000003");
        let mut bytes = fs::read(&three).unwrap();
        bytes[9000] ^= 1;
        fs::write(&three, bytes).unwrap();
        let e = push_one(&repo, &markers, &three).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");

        // Another repository's markers are not this one's.
        let other = Markers::new(&wal, "somewhere else");
        let four = wal.join("000000010000000000000004");
        let key4 = "main/wals/0000000100000000/000000010000000000000004.gz";
        assert!(other
            .stored_as(&"000000010000000000000004".parse().unwrap(), &four)
            .unwrap()
            .is_none());
        assert_eq!(
            markers
                .stored_as(&"000000010000000000000004".parse().unwrap(), &four)
                .unwrap()
                .map(|(key, _)| key)
                .as_deref(),
            Some(key4)
        );

        // Once PostgreSQL removes a segment, its marker goes.
        fs::remove_file(&four).unwrap();
        markers.prune(&wal);
        assert!(!wal.join(MARKERS).join("000000010000000000000004").exists());
        assert!(wal.join(MARKERS).join("000000010000000000000002").exists());
    }

    #[tokio::test]
    async fn a_file_is_never_pushed_twice_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = std::sync::Arc::new(repo(dir.path()));
        let wal = pg_wal(dir.path(), 6);
        let markers = Markers::new(&wal, &repo.describe());
        let in_flight = std::sync::Arc::new(InFlight::default());
        let current: WalFileName = "000000010000000000000001".parse().unwrap();
        let files = ready_files(&wal, &current, 5, u64::MAX, &markers);
        // Two background batches of the same files and foreground pushes of
        // each, all at once: every file ends stored once, every call OK.
        let a = spawn_ahead(
            repo.clone(),
            markers.clone(),
            in_flight.clone(),
            files.clone(),
            5,
        );
        let b = spawn_ahead(
            repo.clone(),
            markers.clone(),
            in_flight.clone(),
            files.clone(),
            2,
        );
        let fg = futures::future::join_all(
            files
                .iter()
                .map(|f| push_exclusive(&repo, &markers, &in_flight, f)),
        )
        .await;
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let outcomes: Vec<&Result<PushOutcome>> = fg
            .iter()
            .chain(a.iter().map(|r| &r.result))
            .chain(b.iter().map(|r| &r.result))
            .collect();
        assert_eq!(outcomes.len(), 15);
        let stored = outcomes
            .iter()
            .filter(|r| matches!(r, Ok(PushOutcome::Stored { .. })))
            .count();
        assert_eq!(stored, 5, "each of the 5 files uploaded exactly once");
        assert!(outcomes.iter().all(|r| r.is_ok()));
        assert!(in_flight.is_empty());
    }
}
