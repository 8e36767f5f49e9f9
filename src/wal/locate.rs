//! Finding a WAL file in the archive whatever compression it was stored
//! with (Barman may have written `.gz`, `.bz2`, ... or nothing).

use crate::error::Result;
use crate::layout::WalKey;
use crate::repo::OpenedObject;
use crate::repo::Repo;
use crate::store::ObjectInfo;
use crate::wal::{SegmentName, WalFileName};

/// Every stored object for `name` (normally one), by key.
pub async fn stored_copies(repo: &Repo, name: &WalFileName) -> Result<Vec<ObjectInfo>> {
    let prefix = repo.layout.wal_key(name, "");
    let listed = repo.store.list(&prefix).await?;
    Ok(listed
        .into_iter()
        .filter(|o| repo.layout.wal_suffix_of(name, &o.key).is_some())
        .collect())
}

/// Opens the stored object for `name`, its compression read from its
/// suffix once: first under the suffix this repository writes (one
/// request), else whatever a listing finds.
pub async fn open(repo: &Repo, name: &WalFileName) -> Result<Option<OpenedObject>> {
    let preferred = repo.layout.wal_key(name, repo.codec.compression.suffix());
    if let Some(obj) = repo.store.get(&preferred).await? {
        return OpenedObject::of_wal(repo, name, obj).map(Some);
    }
    for info in stored_copies(repo, name).await? {
        if let Some(obj) = open_copy(repo, name, &info).await? {
            return Ok(Some(obj));
        }
    }
    Ok(None)
}

/// Opens one listed copy of `name`.
pub async fn open_copy(
    repo: &Repo,
    name: &WalFileName,
    copy: &ObjectInfo,
) -> Result<Option<OpenedObject>> {
    match repo.store.get(&copy.key).await? {
        Some(obj) => OpenedObject::of_wal(repo, name, obj).map(Some),
        None => Ok(None),
    }
}

/// Whether the repository holds an archive for its server at all: pitr's
/// identity record (one request), or else any WAL (Barman's repositories
/// have no identity). False means a wrong repository or server name, never
/// an archive that ends here.
pub async fn archive_exists(repo: &Repo) -> Result<bool> {
    if repo
        .store
        .head(&repo.layout.identity_key())
        .await?
        .is_some()
    {
        return Ok(true);
    }
    any_wal(repo).await
}

/// Whether the repository holds any WAL file for its server (the identity
/// record alone does not count): the question CloudNativePG's
/// empty-archive check asks before a new cluster's first push.
pub async fn any_wal(repo: &Repo) -> Result<bool> {
    repo.store.any_under(&repo.layout.wals_prefix()).await
}

/// A later segment on the same timeline than `segment`, if the archive has
/// one: then a missing `segment` is a gap in the archive, not its end.
/// Looks in the segment's hash directory and the next one.
pub async fn later_on_same_timeline(
    repo: &Repo,
    segment: &SegmentName,
) -> Result<Option<SegmentName>> {
    let mut dirs = vec![repo.layout.wal_dir_prefix(segment)];
    if let Some(log) = segment.log.checked_add(1) {
        let next = SegmentName {
            log,
            seg: 0,
            ..*segment
        };
        dirs.push(repo.layout.wal_dir_prefix(&next));
    }
    for prefix in dirs {
        for o in repo.store.list(&prefix).await? {
            let found = match repo.layout.parse_wal_key(&o.key) {
                Some(WalKey {
                    name: WalFileName::Segment(s),
                    ..
                }) => s,
                _ => continue,
            };
            if found.timeline == segment.timeline && found > *segment {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::config::{RepoConfig, RepoLocation, S3Settings};
    use crate::wal::push::push;
    use crate::wal::test_segments::write_segment;

    #[tokio::test]
    async fn any_wal_counts_wal_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RepoConfig {
            location: RepoLocation::Fs {
                root: dir.path().join("repo"),
            },
            server_name: "main".into(),
            s3: S3Settings::default(),
            compression: Compression::Gzip { level: 1 },
            encryption_key_file: None,
        };
        let repo = Repo::create(&cfg).unwrap();
        assert!(!any_wal(&repo).await.unwrap());
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        push(&repo, &write_segment(&wal, 1, 1, 42)).await.unwrap();
        assert!(any_wal(&repo).await.unwrap());
        // Another server in the same repository still has none.
        let other = Repo::open(&RepoConfig {
            server_name: "other".into(),
            ..cfg
        })
        .unwrap();
        assert!(!any_wal(&other).await.unwrap());
    }
}
