//! `pitr wal-fetch`: bring one WAL file back for `restore_command`. The file
//! is written under a temporary name in the destination directory, verified
//! (gzip CRC, GCM tags, pitr's stored SHA-256), fsynced, then renamed, so
//! PostgreSQL never sees half a segment.

use std::fs::OpenOptions;
use std::path::Path;

use super::identity;
use super::locate;
use super::WalFileName;
use crate::error::{Error, Result};
use crate::fsutil::{remove_stale_temps, temp_beside, TempGuard};
use crate::repo::Repo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    pub key: String,
    pub size: u64,
    /// True when pitr's stored checksum was present and matched.
    pub checksum_verified: bool,
}

/// Fetches `name` into `dest`. `Err(Error::NotFound)` when the archive does
/// not have it; nothing is left at `dest` on any error.
pub async fn fetch(repo: &Repo, name: &WalFileName, dest: &Path) -> Result<FetchOutcome> {
    let obj = locate::open(repo, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{name} is not in {}", repo.describe())))?;
    let key = obj.key().to_string();

    // A fetch killed before its rename left its temporary file here.
    let stale = remove_stale_temps(dest);
    if stale > 0 {
        tracing::info!(
            "removed {stale} temporary file(s) an interrupted fetch of {} left",
            dest.display()
        );
    }
    let guard = TempGuard::new(temp_beside(dest));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(guard.path())
        .map_err(|e| Error::io(format!("cannot create {}", guard.path().display()), e))?;
    let (report, file) = repo.decode(obj, file).await?;
    if !report.encrypted && repo.codec.key.is_some() {
        if let Some(id) = identity::cached(repo).await?.filter(|id| id.encrypted()) {
            return Err(Error::WrongKey(format!(
                "{key} is not encrypted, but {} holds client-side encrypted WAL (its identity \
                 says {}): refusing a file that someone without the key may have put there",
                repo.describe(),
                id.client_side_encryption.as_deref().unwrap_or_default()
            )));
        }
    }
    file.sync_all()
        .map_err(|e| Error::io(format!("cannot fsync {}", guard.path().display()), e))?;
    drop(file);
    crate::fault_point::reached("fetch-before-rename", &name.to_string());
    guard.persist(dest).map_err(|e| {
        Error::io(
            format!("cannot move {name} into place at {}", dest.display()),
            e,
        )
    })?;
    crate::fault_point::reached("fetch-after-rename", &name.to_string());
    Ok(FetchOutcome {
        key,
        size: report.size,
        checksum_verified: report.checksum_verified,
    })
}
