//! The backups in a repository: Barman's backup.info files under `base/`,
//! and pitr's details beside them under `pitr/backups/`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::id::BackupId;
use super::info::{BackupInfo, BackupStatus};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::store::{PutOptions, PutOutcome};

/// What one stored object of a backup holds (`"kind"` in pitr.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// PGDATA's tar.
    Data,
    /// One tablespace's tar.
    Tablespace,
    /// The server's backup manifest.
    Manifest,
}

impl ObjectKind {
    pub fn is_tar(self) -> bool {
        self != ObjectKind::Manifest
    }
}

/// One object of a backup, as pitr stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: String,
    pub kind: ObjectKind,
    pub tablespace_oid: Option<u32>,
    pub plain_size: u64,
    pub stored_size: u64,
    pub sha256: String,
}

/// pitr's own facts about a backup (pitr.json), which Barman never reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDetails {
    pub pitr_version: String,
    pub system_identifier: String,
    pub compression: String,
    pub encryption: Option<String>,
    pub objects: Vec<StoredObject>,
    /// Every WAL segment from begin_wal to end_wal was found in the archive.
    pub wal_verified: bool,
}

/// A backup as the catalog sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogEntry {
    pub info: BackupInfo,
    pub details: Option<BackupDetails>,
}

/// The segment size of backups that do not record one (PostgreSQL's default).
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

impl CatalogEntry {
    /// The cluster's WAL segment size, as backup.info records it.
    pub fn segment_size(&self) -> u64 {
        self.info.xlog_segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE)
    }

    /// Usable for a restore: DONE (pitr writes DONE only once its tars,
    /// metadata and WAL from start to end are all in the store).
    pub fn usable(&self) -> bool {
        self.info.status == BackupStatus::Done
            && self.details.as_ref().is_none_or(|d| d.wal_verified)
    }
}

pub async fn read_info(repo: &Repo, id: &BackupId) -> Result<Option<BackupInfo>> {
    let key = repo.layout.backup_info_key(id);
    match repo.store.get_bytes(&key).await? {
        None => Ok(None),
        Some(body) => {
            BackupInfo::parse(id.clone(), &String::from_utf8_lossy(&body), &key).map(Some)
        }
    }
}

/// Writes backup.info (plain text: Barman must read it). With `if_absent`,
/// refuses to replace an existing one.
pub async fn write_info(repo: &Repo, info: &BackupInfo, if_absent: bool) -> Result<PutOutcome> {
    let key = repo.layout.backup_info_key(&info.backup_id);
    let opts = PutOptions {
        if_absent,
        ..Default::default()
    };
    repo.store
        .put(&key, Bytes::from(info.to_barman_text()), opts)
        .await
}

pub async fn read_details(repo: &Repo, id: &BackupId) -> Result<Option<BackupDetails>> {
    let key = repo.layout.backup_details_key(id);
    match repo.store.get_bytes(&key).await? {
        None => Ok(None),
        Some(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{key} is not valid: {e}"))),
    }
}

pub async fn write_details(repo: &Repo, id: &BackupId, details: &BackupDetails) -> Result<()> {
    let body = serde_json::to_vec_pretty(details).expect("details serialise");
    repo.store
        .put(
            &repo.layout.backup_details_key(id),
            Bytes::from(body),
            PutOptions::default(),
        )
        .await?;
    Ok(())
}

/// The ids of every backup directory under `base/`, oldest first.
pub async fn list_ids(repo: &Repo) -> Result<Vec<BackupId>> {
    let prefix = repo.layout.base_prefix();
    let mut ids: Vec<BackupId> = repo
        .store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| repo.layout.parse_backup_key(&o.key).map(|(id, _)| id))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Every backup with a readable backup.info, oldest first. Directories
/// without one (a delete cut short) are skipped.
pub async fn list(repo: &Repo) -> Result<Vec<CatalogEntry>> {
    use futures::{StreamExt, TryStreamExt};
    let read = |id: BackupId| async move {
        let (info, details) = tokio::try_join!(read_info(repo, &id), read_details(repo, &id))?;
        Ok::<_, Error>(info.map(|info| CatalogEntry { info, details }))
    };
    let entries: Vec<Option<CatalogEntry>> = futures::stream::iter(list_ids(repo).await?)
        .map(read)
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    Ok(entries.into_iter().flatten().collect())
}

/// backup.info and pitr.json files read at once when listing the catalog.
const CONCURRENT_READS: usize = 8;

/// Resolves `latest` / `last`, `oldest` / `first`, a backup id, or a
/// backup name (`--name`) to one backup.
pub async fn resolve(repo: &Repo, spec: &str) -> Result<CatalogEntry> {
    let all = list(repo).await?;
    let usable = || all.iter().filter(|e| e.usable());
    let found = match spec {
        "latest" | "last" => usable().next_back(),
        "oldest" | "first" => usable().next(),
        _ => match spec.parse::<BackupId>() {
            Ok(id) => all.iter().find(|e| e.info.backup_id == id),
            Err(_) => all
                .iter()
                .rev()
                .find(|e| e.info.backup_name.as_deref() == Some(spec)),
        },
    };
    found.cloned().ok_or_else(|| {
        let known: Vec<String> = all.iter().map(|e| e.info.backup_id.to_string()).collect();
        Error::NotFound(format!(
            "no backup '{spec}' in {}{}",
            repo.describe(),
            if known.is_empty() {
                ": the repository holds no backups".to_string()
            } else {
                format!(" (backups: {})", known.join(", "))
            }
        ))
    })
}

/// Deletes one backup: backup.info first (so it is never listed as usable
/// while half deleted), then its tars, then pitr's details. WAL is kept.
/// Returns the keys deleted.
pub async fn delete(repo: &Repo, id: &BackupId) -> Result<Vec<String>> {
    let info_key = repo.layout.backup_info_key(id);
    let mut keys: Vec<String> = repo
        .store
        .list(&repo.layout.backup_prefix(id))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.extend(
        repo.store
            .list(&repo.layout.pitr_backup_prefix(id))
            .await?
            .into_iter()
            .map(|o| o.key),
    );
    if keys.is_empty() {
        return Err(Error::NotFound(format!(
            "no backup {id} in {}",
            repo.describe()
        )));
    }
    keys.sort_by_key(|k| (k != &info_key, k.clone()));
    for k in &keys {
        repo.store.delete(k).await?;
    }
    // Parts of an upload a killed backup left open.
    repo.store
        .abort_unfinished(&repo.layout.backup_prefix(id))
        .await?;
    Ok(keys)
}
