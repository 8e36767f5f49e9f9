//! Archiving counters, kept without costing the WAL path a store request:
//! every `wal-push` (and every Archive call of the CNPG-I sidecar) counts
//! its outcome in a small local file, `pg_wal/.pitr-state/archive.json`
//! (PostgreSQL ignores directories in pg_wal, and base backups leave
//! pg_wal's contents out), and uploads the same numbers as the Archive
//! state record (`<server>/pitr/state/archive.json`, see [`crate::state`])
//! only now and then: at most once per interval (60 s by default), and at
//! once when archiving turns from succeeding to failing or back. So the
//! store sees one small PUT a minute at most, and none while nothing
//! changes within the interval.
//!
//! The fields mirror PostgreSQL's `pg_stat_archiver` (`archived_count`,
//! `last_archived_wal`, ...), so the two can be compared; `pitr metrics
//! --pgdata` reads the local file (always current), without it the record.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{fsync_dir, temp_beside};
use crate::repo::Repo;
use crate::state::{self, StateKind};

/// The directory beside the WAL files that holds pitr's local state.
pub const STATE_DIR: &str = ".pitr-state";
const FILE: &str = "archive.json";
const LOCK: &str = "archive.lock";

/// How often the Archive state record is uploaded at most, by default.
pub const DEFAULT_UPLOAD_INTERVAL: Duration = Duration::from_secs(60);
/// Attempts to upload are at least this far apart, even on a transition,
/// so a store that is down does not cost every failing push a request.
const MIN_ATTEMPT_GAP: Duration = Duration::from_secs(5);
/// An upload that takes longer is given up (tried again later): archiving
/// never waits long for its counters.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Archiving counters: the Archive state record, and the local file's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStats {
    /// WAL files PostgreSQL asked to archive that are stored (pushed, or
    /// found already archived with the same content, look-ahead included).
    pub archived_count: u64,
    /// Their size in bytes, as PostgreSQL wrote them (before compression).
    pub archived_bytes: u64,
    /// The newest of them, and when its archiving was answered.
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    /// Archive calls that failed (PostgreSQL retries them).
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// When counting began (the local file was created).
    pub stats_reset: Option<DateTime<Utc>>,
}

impl ArchiveStats {
    /// Whether the newest outcome is a failure.
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The local file: the counters, and what was last uploaded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Local {
    #[serde(flatten)]
    stats: ArchiveStats,
    uploaded_at: Option<DateTime<Utc>>,
    uploaded_failing: Option<bool>,
    upload_tried_at: Option<DateTime<Utc>>,
}

/// One archive call's outcome.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveOutcome<'a> {
    /// The file PostgreSQL asked for (`%p`).
    pub path: &'a Path,
    pub ok: bool,
}

/// The counters file of one pg_wal directory.
#[derive(Debug, Clone)]
pub struct StatsFile {
    dir: PathBuf,
}

impl StatsFile {
    /// The counters beside the WAL files in `pg_wal`.
    pub fn beside(pg_wal: &Path) -> StatsFile {
        StatsFile {
            dir: pg_wal.join(STATE_DIR),
        }
    }

    /// The counters of the cluster whose data directory is `pgdata`.
    pub fn of_pgdata(pgdata: &Path) -> StatsFile {
        Self::beside(&pgdata.join("pg_wal"))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn read_local(&self) -> Option<Local> {
        serde_json::from_slice(&fs::read(self.path()).ok()?).ok()
    }

    /// The counters, if this pg_wal has any.
    pub fn read(&self) -> Option<ArchiveStats> {
        self.read_local().map(|l| l.stats)
    }

    fn write_local(&self, local: &Local) -> io::Result<()> {
        let path = self.path();
        let temp = temp_beside(&path);
        fs::write(&temp, serde_json::to_vec(local).expect("stats serialise"))?;
        fs::rename(&temp, &path)?;
        fsync_dir(&self.dir)
    }

    /// Holds the lock of the counters while it lives (another process
    /// counting at the same time waits).
    fn lock(&self) -> io::Result<File> {
        fs::create_dir_all(&self.dir)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK))?;
        f.lock()?;
        Ok(f)
    }

    /// Counts `outcome` at `now`; returns the counters to upload when an
    /// upload is due under `interval` (and notes the attempt). Without
    /// `can_upload` (no repository) it only counts.
    pub fn record(
        &self,
        outcome: ArchiveOutcome<'_>,
        now: DateTime<Utc>,
        interval: Duration,
        can_upload: bool,
    ) -> io::Result<Option<ArchiveStats>> {
        let _lock = self.lock()?;
        let mut local = self.read_local().unwrap_or_default();
        let s = &mut local.stats;
        s.stats_reset.get_or_insert(now);
        let name = outcome
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if outcome.ok {
            s.archived_count += 1;
            s.archived_bytes += fs::metadata(outcome.path).map(|m| m.len()).unwrap_or(0);
            s.last_archived_wal = name;
            s.last_archived_time = Some(now);
        } else {
            s.failed_count += 1;
            s.last_failed_wal = name;
            s.last_failed_time = Some(now);
        }
        let due = can_upload && upload_due(&local, now, interval);
        if due {
            local.upload_tried_at = Some(now);
        }
        self.write_local(&local)?;
        Ok(due.then(|| local.stats.clone()))
    }

    /// Notes that `stats` were uploaded at `at`.
    fn uploaded(&self, stats: &ArchiveStats, at: DateTime<Utc>) -> io::Result<()> {
        let _lock = self.lock()?;
        let mut local = self.read_local().unwrap_or_default();
        if local.uploaded_at.is_none_or(|u| u < at) {
            local.uploaded_at = Some(at);
            local.uploaded_failing = Some(stats.failing());
        }
        self.write_local(&local)
    }
}

fn upload_due(local: &Local, now: DateTime<Utc>, interval: Duration) -> bool {
    let since = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).to_std().unwrap_or_default());
    if since(local.upload_tried_at).is_some_and(|d| d < MIN_ATTEMPT_GAP.min(interval)) {
        return false;
    }
    match since(local.uploaded_at) {
        None => true,
        Some(d) => d >= interval || local.uploaded_failing != Some(local.stats.failing()),
    }
}

/// The hook of every archive call: counts `outcome` in the file beside the
/// WAL and uploads the Archive state record into `repo` when due (without
/// a repository, when it could not be opened, it only counts). Never
/// fails the archive call: problems are logged (without secrets: the
/// messages name local paths and the repository only).
pub async fn note(repo: Option<&Repo>, outcome: ArchiveOutcome<'_>, interval: Duration) {
    let pg_wal = crate::fsutil::parent_dir(outcome.path);
    let file = StatsFile::beside(pg_wal);
    let now = Utc::now();
    let due = match file.record(outcome, now, interval, repo.is_some()) {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(
                "cannot count the archive outcome in {}: {e}",
                file.path().display()
            );
            return;
        }
    };
    let (Some(stats), Some(repo)) = (due, repo) else {
        return;
    };
    match tokio::time::timeout(
        UPLOAD_TIMEOUT,
        state::write(repo, StateKind::Archive, &stats),
    )
    .await
    {
        Ok(Ok(())) => {
            if let Err(e) = file.uploaded(&stats, now) {
                tracing::warn!("cannot update {}: {e}", file.path().display());
            }
        }
        Ok(Err(e)) => tracing::debug!(
            "the archive state record was not uploaded to {} (tried again later): {:?}",
            repo.describe(),
            e.kind()
        ),
        Err(_) => tracing::debug!(
            "the archive state record upload to {} timed out (tried again later)",
            repo.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::test_segments::{fs_repo, write_segment};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn counts_like_pg_stat_archiver_and_uploads_on_interval_or_transition() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_segment(dir.path(), 1, 3, 9);
        let file = StatsFile::beside(dir.path());
        let min = Duration::from_secs(60);
        let ok = ArchiveOutcome {
            path: &seg,
            ok: true,
        };
        let bad = ArchiveOutcome {
            path: &seg,
            ok: false,
        };
        // The first outcome is uploaded.
        let up = file.record(ok, at(0), min, true).unwrap().unwrap();
        file.uploaded(&up, at(0)).unwrap();
        assert_eq!(up.archived_count, 1);
        assert_eq!(up.archived_bytes, 1 << 20);
        // Within the interval, more successes stay local.
        assert_eq!(file.record(ok, at(10), min, true).unwrap(), None);
        assert_eq!(file.record(ok, at(20), min, true).unwrap(), None);
        // A failure is a transition: uploaded at once.
        let up = file.record(bad, at(30), min, true).unwrap().unwrap();
        assert!(up.failing());
        assert_eq!((up.archived_count, up.failed_count), (3, 1));
        assert_eq!(
            up.last_failed_wal.as_deref(),
            Some("000000010000000000000003")
        );
        // ... but if the upload failed, not again within the attempt gap.
        assert_eq!(file.record(bad, at(32), min, true).unwrap(), None);
        let up = file.record(bad, at(40), min, true).unwrap().unwrap();
        file.uploaded(&up, at(40)).unwrap();
        assert_eq!(file.record(bad, at(50), min, true).unwrap(), None);
        // Back to success: a transition again.
        let up = file.record(ok, at(60), min, true).unwrap().unwrap();
        file.uploaded(&up, at(60)).unwrap();
        assert!(!up.failing());
        // The interval passes; without a repository a due upload is only
        // counted, and no attempt noted.
        assert_eq!(file.record(ok, at(100), min, true).unwrap(), None);
        assert_eq!(file.record(ok, at(121), min, false).unwrap(), None);
        assert!(file.record(ok, at(122), min, true).unwrap().is_some());
        let s = file.read().unwrap();
        assert_eq!((s.archived_count, s.failed_count), (7, 4));
        assert_eq!(s.stats_reset, Some(at(0)));
        assert_eq!(s.last_archived_time, Some(at(122)));
        assert_eq!(s.last_failed_time, Some(at(50)));
    }

    #[tokio::test]
    async fn the_hook_uploads_the_archive_state_record() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(&dir.path().join("repo"));
        let wal = dir.path().join("pg_wal");
        fs::create_dir_all(&wal).unwrap();
        let seg = write_segment(&wal, 1, 7, 9);
        note(
            Some(&repo),
            ArchiveOutcome {
                path: &seg,
                ok: true,
            },
            Duration::ZERO,
        )
        .await;
        let rec: ArchiveStats = state::read(&repo, StateKind::Archive)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.archived_count, 1);
        assert_eq!(
            rec.last_archived_wal.as_deref(),
            Some("000000010000000000000007")
        );
        assert_eq!(StatsFile::beside(&wal).read().unwrap(), rec);
    }
}
