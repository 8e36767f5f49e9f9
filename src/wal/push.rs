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
use super::push_cache::{honours_conditional_writes, PushCache, RepoFacts};
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
        /// Hex SHA-256 of the file as stored.
        sha256: String,
    },
    /// An identical copy was already in the archive.
    AlreadyArchived {
        key: String,
        /// Hex SHA-256 of the file (the same as the stored copy's).
        sha256: String,
    },
}

/// Archives the file at `path`; its file name must be a WAL file name.
pub async fn push(repo: &Repo, path: &Path) -> Result<PushOutcome> {
    push_remembering(repo, path, None).await
}

/// [`push`], with what earlier pushes from the same pg_wal verified: while
/// `cache` vouches for this repository and database system, the identity
/// is not read again and, on a store that honours conditional writes, a
/// segment goes up in one conditional PUT without the LIST of its hash
/// directory (the LIST stays for history, backup-label and partial files,
/// whose copies may exist under another name or compression).
pub async fn push_remembering(
    repo: &Repo,
    path: &Path,
    cache: Option<&PushCache>,
) -> Result<PushOutcome> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name: WalFileName = file_name.parse()?;
    let what = path.display().to_string();
    let mut file = File::open(path).map_err(|e| Error::io(format!("cannot open {what}"), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {what}"), e))?
        .len();
    let mut skip_lookup = false;
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
        if len != seg_size {
            return Err(Error::Corrupt(format!(
                "{what} is {len} bytes, but its segment size is {seg_size}: refusing a truncated segment"
            )));
        }
        let vouched = || {
            cache.and_then(|c| c.load()).filter(|f| {
                f.vouch_for(repo, header.system_identifier, seg_size, chrono::Utc::now())
            })
        };
        // Concurrent pushes (look-ahead) verify once: the others wait, then
        // find the record the first one wrote.
        let _verifying = match (vouched(), cache) {
            (None, Some(_)) => Some(repo.push_verification.lock().await),
            _ => None,
        };
        match vouched() {
            Some(facts) => {
                skip_lookup = facts.conditional_writes && matches!(name, WalFileName::Segment(_))
            }
            None => {
                identity::ensure(repo, header.system_identifier, seg_size, &what).await?;
                if let Some(cache) = cache {
                    let conditional = honours_conditional_writes(repo).await?;
                    cache.store(&RepoFacts::of(
                        repo,
                        header.system_identifier,
                        seg_size,
                        conditional,
                    ));
                }
            }
        }
        file = File::open(path).map_err(|e| Error::io(format!("cannot open {what}"), e))?;
    }

    let existing = match skip_lookup {
        true => None,
        false => locate::stored_copies(repo, &name).await?.into_iter().next(),
    };
    if let Some(existing) = existing {
        let local = sha256_of_file(path)?;
        return compare(repo, &name, &existing, &local, &what).await;
    }

    let key = repo.layout.wal_key(&name, repo.codec.compression.suffix());
    let opts = PutOptions {
        if_absent: true,
        // Compressed WAL is smaller; encryption adds a little per chunk.
        size_hint: Some(len as usize + len as usize / 64 + 4096),
        ..Default::default()
    };
    crate::fault_point::reached("push-before-upload", &key);
    let report =
        transfer::upload(repo.store.as_ref(), &key, &repo.codec, file, opts, &what).await?;
    match report.outcome {
        PutOutcome::Stored => {
            crate::fault_point::reached("push-stored", &key);
            Ok(PushOutcome::Stored {
                key,
                plain_size: report.plain_size,
                stored_size: report.stored_size,
                sha256: report.sha256,
            })
        }
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

pub(crate) fn sha256_of_file(path: &Path) -> Result<String> {
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
            sha256: local.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::wal::test_segments::write_segment;

    fn repo(dir: &Path) -> Repo {
        crate::wal::test_segments::fs_repo(&dir.join("repo"))
    }

    #[tokio::test]
    async fn same_bytes_again_succeed_different_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        let seg = write_segment(&wal, 1, 3, 11);
        let first = push(&repo, &seg).await.unwrap();
        let PushOutcome::Stored { key, .. } = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            push(&repo, &seg).await.unwrap(),
            PushOutcome::AlreadyArchived {
                key: key.clone(),
                sha256: sha256_of_file(&seg).unwrap()
            }
        );
        let stored = std::fs::read(dir.path().join("repo").join(&key)).unwrap();

        // The same name with other bytes (a record in the middle changed).
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[100_000] ^= 0xFF;
        let other_dir = dir.path().join("other");
        std::fs::create_dir_all(&other_dir).unwrap();
        let other = other_dir.join(seg.file_name().unwrap());
        std::fs::write(&other, bytes).unwrap();
        let e = push(&repo, &other).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("repo").join(&key)).unwrap(),
            stored,
            "the stored object is left alone"
        );
    }

    #[tokio::test]
    async fn a_push_vouched_for_by_the_cache_still_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        let cache = PushCache::in_dir(&wal.join(".pitr-archived"));
        let first = push_remembering(&repo, &write_segment(&wal, 1, 1, 11), Some(&cache))
            .await
            .unwrap();
        assert!(matches!(first, PushOutcome::Stored { .. }), "{first:?}");
        let facts = cache
            .load()
            .expect("the first push records what it verified");
        assert!(facts.conditional_writes);

        // Vouched for: no identity read, no lookup; the conditional PUT
        // alone decides, and the rules hold.
        let seg = write_segment(&wal, 1, 2, 11);
        let PushOutcome::Stored { key, .. } =
            push_remembering(&repo, &seg, Some(&cache)).await.unwrap()
        else {
            panic!("not stored")
        };
        let again = push_remembering(&repo, &seg, Some(&cache)).await.unwrap();
        assert!(
            matches!(again, PushOutcome::AlreadyArchived { .. }),
            "{again:?}"
        );
        let stored = std::fs::read(dir.path().join("repo").join(&key)).unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[200_000] ^= 0xFF;
        let other_dir = dir.path().join("other");
        std::fs::create_dir_all(&other_dir).unwrap();
        let other = other_dir.join(seg.file_name().unwrap());
        std::fs::write(&other, bytes).unwrap();
        let e = push_remembering(&repo, &other, Some(&cache))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("repo").join(&key)).unwrap(),
            stored
        );

        // Another database system is not vouched for: the identity check
        // runs and refuses it.
        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        let e = push_remembering(&repo, &write_segment(&foreign, 1, 3, 12), Some(&cache))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert!(e.to_string().contains("database system 12"), "{e}");
    }

    #[tokio::test]
    async fn another_systems_wal_and_lying_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        push(&repo, &write_segment(&wal, 1, 1, 11)).await.unwrap();
        let id = identity::load(&repo).await.unwrap().unwrap();
        assert_eq!(id.system_identifier, "11");
        assert!(!id.encrypted());

        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        let e = push(&repo, &write_segment(&foreign, 1, 2, 12))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert!(e.to_string().contains("database system 12"), "{e}");

        // A segment whose first page is for another position.
        let liar = write_segment(&wal, 1, 5, 11);
        let renamed = wal.join("000000010000000000000006");
        std::fs::rename(&liar, &renamed).unwrap();
        let e = push(&repo, &renamed).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(
            e.to_string().contains("not the segment its name claims"),
            "{e}"
        );

        // A truncated segment.
        let short = write_segment(&wal, 1, 7, 11);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&short)
            .unwrap();
        f.set_len(4096 * 3).unwrap();
        let e = push(&repo, &short).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

        // A page header that lies about the segment size: 2 MiB claimed by
        // a 1 MiB file, and 1 GiB (a size the header may hold).
        for claimed in [2u32 << 20, 1 << 30] {
            let liar = write_segment(&wal, 1, 8, 11);
            let mut bytes = std::fs::read(&liar).unwrap();
            bytes[32..36].copy_from_slice(&claimed.to_le_bytes());
            std::fs::write(&liar, bytes).unwrap();
            let e = push(&repo, &liar).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("000000010000000000000008"), "{e}");
        }

        // Not a WAL file name at all.
        let odd = wal.join("notes.txt");
        std::fs::write(&odd, "x").unwrap();
        assert_eq!(
            push(&repo, &odd).await.unwrap_err().kind(),
            ErrorKind::Config
        );
        // Nothing of the refused files was stored.
        let stored = repo.store.list(&repo.layout.wals_prefix()).await.unwrap();
        assert_eq!(stored.len(), 1, "{stored:?}");
    }
}
