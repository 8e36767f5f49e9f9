//! Reading what the metrics of one server are made of: a few small store
//! requests (the state records, the newest hash directory, the catalog)
//! and, given the PGDATA, local files only (the archive counters beside
//! the WAL, `archive_status/*.ready`, the WAL files' times).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::records::{DrillRecord, ExpireRecord, VerifyRecord};
use crate::backup::outcome::BackupState;
use crate::error::Result;
use crate::repo::Repo;
use crate::state::{self, StateKind};
use crate::status::{self, RepoStatus};
use crate::wal::archive_stats::{ArchiveStats, StatsFile};
use crate::wal::WalFileName;

/// What the store gave at the last read that reached it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub read_at: DateTime<Utc>,
    pub status: RepoStatus,
    /// The Archive state record (uploaded by wal-push now and then).
    pub archive: Option<ArchiveStats>,
    pub backup: Option<BackupState>,
    pub verify: Option<VerifyRecord>,
    pub expire: Option<ExpireRecord>,
    pub drill: Option<DrillRecord>,
}

/// What the local PGDATA shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalView {
    /// The archive counters beside the WAL (fresher than the record).
    pub archive: Option<ArchiveStats>,
    /// Files PostgreSQL has marked ready that are not archived yet.
    pub ready_files: u64,
    /// When PostgreSQL last wrote a WAL segment (the newest mtime).
    pub last_wal_write: Option<DateTime<Utc>>,
}

/// Everything the metrics of one server are made of.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub server: String,
    /// When this snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// Whether the store answered this time.
    pub store_up: bool,
    /// How long one small request (a state record's GET) took this time.
    pub store_latency_seconds: Option<f64>,
    /// The last read that reached the store (kept when it fails).
    pub store: Option<StoreView>,
    /// None without a PGDATA.
    pub local: Option<LocalView>,
    /// Reads of the store that failed, since the first snapshot.
    pub refresh_failures: u64,
}

impl Snapshot {
    /// The archive counters: the local file's when there is one, else the
    /// state record's.
    pub fn archive(&self) -> Option<&ArchiveStats> {
        self.local
            .as_ref()
            .and_then(|l| l.archive.as_ref())
            .or_else(|| self.store.as_ref().and_then(|s| s.archive.as_ref()))
    }
}

async fn read_store(repo: &Repo) -> Result<(StoreView, f64)> {
    let clock = Instant::now();
    let archive = state::read::<ArchiveStats>(repo, StateKind::Archive).await?;
    let latency = clock.elapsed().as_secs_f64();
    let (status, backup, verify, expire, drill) = tokio::try_join!(
        status::gather(repo),
        state::read::<BackupState>(repo, StateKind::Backup),
        state::read::<VerifyRecord>(repo, StateKind::Verify),
        state::read::<ExpireRecord>(repo, StateKind::Expire),
        state::read::<DrillRecord>(repo, StateKind::Drill),
    )?;
    let view = StoreView {
        read_at: Utc::now(),
        status,
        archive,
        backup,
        verify,
        expire,
        drill,
    };
    Ok((view, latency))
}

/// What the PGDATA at `pgdata` shows (nothing is written).
pub fn read_local(pgdata: &Path) -> LocalView {
    let pg_wal = pgdata.join("pg_wal");
    let ready_files = std::fs::read_dir(pg_wal.join("archive_status"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count() as u64
        })
        .unwrap_or(0);
    let last_wal_write = std::fs::read_dir(&pg_wal).ok().and_then(|d| {
        d.flatten()
            .filter(|e| {
                matches!(
                    e.file_name().to_string_lossy().parse::<WalFileName>(),
                    Ok(WalFileName::Segment(_))
                )
            })
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            .map(DateTime::<Utc>::from)
    });
    LocalView {
        archive: StatsFile::of_pgdata(pgdata).read(),
        ready_files,
        last_wal_write,
    }
}

/// Takes a snapshot of `server` in `repo` (and of `pgdata`, if given);
/// `previous` is the last one, whose store view stays when the store
/// cannot be read now. Errors are in the snapshot (`store_up`), and are
/// returned beside it for the caller to log.
pub async fn gather(
    repo: &Repo,
    server: &str,
    pgdata: Option<&PathBuf>,
    previous: Option<&Snapshot>,
) -> (Snapshot, Option<crate::Error>) {
    let local = pgdata.map(|p| read_local(p));
    let (store_up, latency, store, error, failures) = match read_store(repo).await {
        Ok((view, latency)) => (true, Some(latency), Some(view), None, 0),
        Err(e) => (
            false,
            None,
            previous.and_then(|p| p.store.clone()),
            Some(e),
            1,
        ),
    };
    let snapshot = Snapshot {
        server: server.to_string(),
        taken_at: Utc::now(),
        store_up,
        store_latency_seconds: latency,
        store,
        local,
        refresh_failures: previous.map_or(0, |p| p.refresh_failures) + failures,
    };
    (snapshot, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::archive_stats::{note, ArchiveOutcome};
    use crate::wal::push::push;
    use crate::wal::test_segments::{fs_repo, write_segment};
    use std::time::Duration;

    #[tokio::test]
    async fn reads_the_store_and_the_pgdata_and_keeps_the_store_view_when_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let repo = fs_repo(&root);
        let pgdata = dir.path().join("pgdata");
        let wal = pgdata.join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let seg = write_segment(&wal, 1, 1, 9);
        push(&repo, &seg).await.unwrap();
        note(
            Some(&repo),
            ArchiveOutcome {
                path: &seg,
                ok: true,
            },
            Duration::from_secs(60),
        )
        .await;
        write_segment(&wal, 1, 2, 9);
        std::fs::write(
            wal.join("archive_status/000000010000000000000002.ready"),
            "",
        )
        .unwrap();
        let (s, e) = gather(&repo, "main", Some(&pgdata), None).await;
        assert!(e.is_none(), "{e:?}");
        assert!(s.store_up);
        assert!(s.store_latency_seconds.is_some());
        let local = s.local.as_ref().unwrap();
        assert_eq!(local.ready_files, 1);
        assert!(local.last_wal_write.is_some());
        assert_eq!(s.archive().unwrap().archived_count, 1);
        let store = s.store.as_ref().unwrap();
        assert_eq!(
            store
                .status
                .last_archived
                .as_ref()
                .unwrap()
                .segment
                .to_string(),
            "000000010000000000000001"
        );
        assert_eq!(store.archive.as_ref().unwrap().archived_count, 1);

        // The store goes away: the last view stays, marked down.
        std::fs::rename(&root, dir.path().join("gone")).unwrap();
        std::fs::write(&root, "not a directory").unwrap();
        let (s2, e) = gather(&repo, "main", Some(&pgdata), Some(&s)).await;
        assert!(e.is_some());
        assert!(!s2.store_up);
        assert_eq!(s2.refresh_failures, 1);
        assert_eq!(s2.store.as_ref().unwrap().read_at, store.read_at);
    }
}
