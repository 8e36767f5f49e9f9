//! `pitr wal-push`: archive one file PostgreSQL hands to `archive_command`.
//!
//! Success means the object is stored. The same content pushed again
//! succeeds without a new upload; different content under the same name is
//! refused and the stored object left alone.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::identity;
use super::locate;
use super::page_header::{LongPageHeader, LONG_HEADER_LEN};
use super::WalFileName;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::store::{ObjectInfo, PutOptions, PutOutcome};
use crate::transfer::{self, meta};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Stored {
        key: String,
        plain_size: u64,
        stored_size: u64,
    },
    /// An identical copy was already in the archive.
    AlreadyArchived { key: String },
}

/// Archives the file at `path`; its file name must be a WAL file name.
pub async fn push(repo: &Repo, path: &Path) -> Result<PushOutcome> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name: WalFileName = file_name.parse()?;
    let what = path.display().to_string();
    let mut file = File::open(path).map_err(|e| Error::io(format!("cannot open {what}"), e))?;
    if let WalFileName::Segment(seg) | WalFileName::Partial(seg) = name {
        let header = read_header(&mut file, &what)?;
        let seg_size = u64::from(header.segment_size);
        let expected = seg.start_lsn(seg_size);
        if header.page_address != expected {
            return Err(Error::Corrupt(format!(
                "{what}: its first page is for LSN {}, but its name says it starts at {}: \
                 the file is not the segment its name claims",
                super::Lsn(header.page_address),
                super::Lsn(expected)
            )));
        }
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {what}"), e))?
            .len();
        if len != seg_size {
            return Err(Error::Corrupt(format!(
                "{what} is {len} bytes, but its segment size is {seg_size}: refusing a truncated segment"
            )));
        }
        identity::ensure(repo, header.system_identifier, seg_size, &what).await?;
        file = File::open(path).map_err(|e| Error::io(format!("cannot open {what}"), e))?;
    }

    if let Some(existing) = locate::stored_copies(repo, &name).await?.into_iter().next() {
        let local = sha256_of_file(path)?;
        return compare(repo, &name, &existing, &local, &what).await;
    }

    let key = repo.layout.wal_key(&name, repo.codec.compression.suffix());
    let opts = PutOptions {
        if_absent: true,
        ..Default::default()
    };
    let report =
        transfer::upload(repo.store.as_ref(), &key, &repo.codec, file, opts, &what).await?;
    match report.outcome {
        PutOutcome::Stored => Ok(PushOutcome::Stored {
            key,
            plain_size: report.plain_size,
            stored_size: report.stored_size,
        }),
        PutOutcome::AlreadyExists => {
            // Another push won a race for this name: compare with it.
            let existing = repo.store.head(&key).await?.ok_or_else(|| {
                Error::Store(format!("{key} was reported to exist but cannot be found"))
            })?;
            compare(repo, &name, &existing, &report.sha256, &what).await
        }
    }
}

fn read_header(file: &mut File, what: &str) -> Result<LongPageHeader> {
    let mut buf = [0u8; LONG_HEADER_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Error::io(format!("cannot read {what}"), e)),
        }
    }
    LongPageHeader::parse(&buf[..filled], what)
}

fn sha256_of_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Same content: fine. Different content: refuse, and leave it alone.
async fn compare(
    repo: &Repo,
    name: &WalFileName,
    existing: &ObjectInfo,
    local: &str,
    what: &str,
) -> Result<PushOutcome> {
    let stored = stored_sha256(repo, name, existing).await?;
    if stored.eq_ignore_ascii_case(local) {
        return Ok(PushOutcome::AlreadyArchived {
            key: existing.key.clone(),
        });
    }
    Err(Error::Conflict(format!(
        "{name} is already archived in {} as {} with different content (SHA-256 {stored}, \
         {what} has {local}): refusing to overwrite it. Two clusters may be archiving under one \
         server name, or this server's WAL diverged: check --server-name / PITR_SERVER_NAME",
        repo.describe(),
        existing.key
    )))
}

/// The SHA-256 of an archived file's content: from pitr's metadata, or (for
/// objects Barman wrote, which carry none) by reading it back.
async fn stored_sha256(repo: &Repo, name: &WalFileName, existing: &ObjectInfo) -> Result<String> {
    let info = match existing.metadata.is_empty() {
        true => repo.store.head(&existing.key).await?,
        false => Some(existing.clone()),
    };
    if let Some(sha) = info.as_ref().and_then(|i| i.metadata.get(meta::SHA256)) {
        return Ok(sha.clone());
    }
    let obj = locate::open_copy(repo, name, existing)
        .await?
        .ok_or_else(|| Error::Store(format!("{} vanished while being compared", existing.key)))?;
    let (report, _) = repo.decode(obj, std::io::sink()).await?;
    Ok(report.sha256)
}
