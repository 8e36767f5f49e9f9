//! `pitr wal-fetch`: bring one WAL file back for `restore_command`. The file
//! is written under a temporary name in the destination directory, verified
//! (gzip CRC, GCM tags, pitr's stored SHA-256), fsynced, then renamed, so
//! PostgreSQL never sees half a segment.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use super::history::TimelinePath;
use super::identity;
use super::locate;
use super::page_header::{LongPageHeader, LONG_HEADER_LEN};
use super::{Lsn, WalFileName};
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
    check_content(repo, name, &key, guard.path(), report.size)?;
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

/// Refuses an object whose decoded content is not what its name says,
/// though it decoded cleanly (an object with no stored checksum, Barman's
/// or planted): a segment must start with a long page header for the
/// segment its name gives and be as long as that header says segments are
/// (and as the archive's identity says, when already read); a timeline
/// history file must parse.
fn check_content(repo: &Repo, name: &WalFileName, key: &str, path: &Path, size: u64) -> Result<()> {
    let open = || {
        File::open(path).map_err(|e| Error::io(format!("cannot read back {}", path.display()), e))
    };
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            let mut head = Vec::with_capacity(LONG_HEADER_LEN);
            open()?
                .take(LONG_HEADER_LEN as u64)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(format!("cannot read back {}", path.display()), e))?;
            let header = LongPageHeader::parse(&head, key)?;
            let seg_size = u64::from(header.segment_size);
            if let Some(id) = repo.identity_cache.get() {
                if id.wal_segment_size != seg_size {
                    return Err(Error::Corrupt(format!(
                        "{key}: its page header says segments are {seg_size} bytes, but this \
                         archive's are {} (its identity.json): the object is damaged",
                        id.wal_segment_size
                    )));
                }
            }
            if size != seg_size {
                return Err(Error::Corrupt(format!(
                    "{key} decodes to {size} bytes, but its page header says segments are \
                     {seg_size} bytes: the object is truncated or damaged"
                )));
            }
            let expected = seg.start_lsn(seg_size);
            if header.page_address != expected {
                return Err(Error::Corrupt(format!(
                    "{key}: its first page is for LSN {}, but its name says it starts at {}: \
                     the object is not the segment its name claims",
                    Lsn(header.page_address),
                    Lsn(expected)
                )));
            }
        }
        WalFileName::TimelineHistory(tli) => {
            let mut text = Vec::new();
            open()?
                .take(1 << 24)
                .read_to_end(&mut text)
                .map_err(|e| Error::io(format!("cannot read back {}", path.display()), e))?;
            TimelinePath::parse(*tli, &String::from_utf8_lossy(&text), key)?;
        }
        WalFileName::BackupHistory { .. } => {}
    }
    Ok(())
}
