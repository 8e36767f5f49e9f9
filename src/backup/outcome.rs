//! The Backup state record (`<server>/pitr/state/backup.json`): the last
//! backup that ended DONE and the last that FAILED, written by every
//! `backup::take::take` (the CLI's `pitr backup` and the CNPG-I sidecar's
//! Backup). Unlike the catalog, it also knows about backups that failed
//! before they had a backup.info (the server unreachable, archive_mode
//! off), so "the last backup failed" can be alerted on even then.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::CatalogEntry;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::state::{self, StateKind};

/// One backup's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// None when it failed before it got an id.
    pub backup_id: Option<String>,
    pub backup_name: Option<String>,
    pub begin_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Bytes stored for its tars (DONE backups).
    pub size_bytes: Option<u64>,
    /// What kind of failure it was (`Postgres`, `Store`, ...): never the
    /// message, which backup.info keeps for the backups that have one.
    pub error_kind: Option<String>,
}

/// The Backup state record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupState {
    pub last_done: Option<BackupOutcome>,
    pub last_failed: Option<BackupOutcome>,
}

/// Records the outcome of a backup that began at `begin`. Best effort:
/// the backup's own result matters more, so a failure here is logged.
pub async fn record(repo: &Repo, begin: DateTime<Utc>, result: &Result<CatalogEntry>) {
    let end = Utc::now();
    let outcome = |entry: Option<&CatalogEntry>, error: Option<&Error>| BackupOutcome {
        backup_id: entry.map(|e| e.info.backup_id.to_string()),
        backup_name: entry.and_then(|e| e.info.backup_name.clone()),
        begin_time: entry
            .and_then(|e| e.info.begin_time)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(begin),
        end_time: entry
            .and_then(|e| e.info.end_time)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(end),
        duration_seconds: (end - begin).num_milliseconds() as f64 / 1000.0,
        size_bytes: entry.and_then(|e| e.info.size),
        error_kind: error.map(|e| format!("{:?}", e.kind())),
    };
    let write = async {
        let mut s: BackupState = state::read(repo, StateKind::Backup)
            .await?
            .unwrap_or_default();
        match result {
            Ok(entry) => s.last_done = Some(outcome(Some(entry), None)),
            Err(e) => s.last_failed = Some(outcome(None, Some(e))),
        }
        state::write(repo, StateKind::Backup, &s).await
    };
    if let Err(e) = write.await {
        tracing::warn!(
            "the backup state record in {} was not updated: {:?}",
            repo.describe(),
            e.kind()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::{BackupInfo, BackupStatus};
    use crate::wal::test_segments::fs_repo;

    #[tokio::test]
    async fn done_and_failed_backups_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let begin = Utc::now() - chrono::TimeDelta::seconds(30);
        let mut info = BackupInfo::new("20261101T000000".parse().unwrap(), "main");
        info.status = BackupStatus::Done;
        info.size = Some(1234);
        info.begin_time = Some(begin.fixed_offset());
        info.end_time = Some(Utc::now().fixed_offset());
        let entry = CatalogEntry {
            info,
            details: None,
        };
        record(&repo, begin, &Ok(entry)).await;
        record(
            &repo,
            begin,
            &Err(Error::Postgres("connection refused".into())),
        )
        .await;
        let s: BackupState = state::read(&repo, StateKind::Backup)
            .await
            .unwrap()
            .unwrap();
        let done = s.last_done.unwrap();
        assert_eq!(done.backup_id.as_deref(), Some("20261101T000000"));
        assert_eq!(done.size_bytes, Some(1234));
        assert!(done.duration_seconds >= 30.0);
        let failed = s.last_failed.unwrap();
        assert_eq!(failed.backup_id, None);
        assert_eq!(failed.error_kind.as_deref(), Some("Postgres"));
        assert!(failed.end_time >= done.end_time);
    }
}
