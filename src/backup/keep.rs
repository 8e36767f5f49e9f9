//! Keeps: a backup marked to outlive the retention policy, stored exactly
//! where barman-cloud-backup-keep stores it (`base/<id>/annotations/keep`,
//! its body the recovery target), so that each tool honours the other's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;

use super::catalog;
use super::id::BackupId;
use super::info::BackupStatus;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::store::PutOptions;

/// What a kept backup must stay restorable to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepTarget {
    /// The backup and all WAL after it: a recovery to any later point.
    Full,
    /// The backup and only the WAL it needs to be consistent (begin to end).
    Standalone,
}

impl KeepTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepTarget::Full => "full",
            KeepTarget::Standalone => "standalone",
        }
    }

    /// The target an annotation's body names. Barman treats anything but
    /// exactly `standalone` as `full` ("for safety"); so does pitr.
    pub fn of_annotation(body: &[u8]) -> KeepTarget {
        // Barman reads the first line only.
        let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
        if first == b"standalone" && body.len() == first.len() {
            KeepTarget::Standalone
        } else {
            KeepTarget::Full
        }
    }
}

impl FromStr for KeepTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(KeepTarget::Full),
            "standalone" => Ok(KeepTarget::Standalone),
            other => Err(Error::Config(format!(
                "keep target '{other}' is not one pitr knows: use --target full (the backup and \
                 all WAL after it) or --target standalone (only the WAL the backup needs)"
            ))),
        }
    }
}

impl fmt::Display for KeepTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KeepTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The keep of one backup, if it has one.
pub async fn get(repo: &Repo, id: &BackupId) -> Result<Option<KeepTarget>> {
    let key = repo.layout.keep_annotation_key(id);
    Ok(repo
        .store
        .get_bytes(&key)
        .await?
        .map(|b| KeepTarget::of_annotation(&b)))
}

/// Every keep in the repository, from one listing of `base/`.
pub async fn list(repo: &Repo) -> Result<BTreeMap<BackupId, KeepTarget>> {
    let mut ids = Vec::new();
    for o in repo.store.list(&repo.layout.base_prefix()).await? {
        if let Some((id, _)) = repo.layout.parse_backup_key(&o.key) {
            if o.key == repo.layout.keep_annotation_key(&id) {
                ids.push(id);
            }
        }
    }
    let mut keeps = BTreeMap::new();
    for id in ids {
        if let Some(target) = get(repo, &id).await? {
            keeps.insert(id, target);
        }
    }
    Ok(keeps)
}

/// Keeps a backup with `target`, replacing any keep it had. Only DONE
/// backups can be kept, as barman-cloud-backup-keep insists.
pub async fn set(repo: &Repo, id: &BackupId, target: KeepTarget) -> Result<()> {
    let info = catalog::read_info(repo, id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no backup {id} in {} (see `pitr backup list`)",
            repo.describe()
        ))
    })?;
    if info.status != BackupStatus::Done {
        return Err(Error::Config(format!(
            "backup {id} has status {}: only DONE backups can be kept",
            info.status
        )));
    }
    repo.store
        .put(
            &repo.layout.keep_annotation_key(id),
            Bytes::from_static(target.as_str().as_bytes()),
            PutOptions::default(),
        )
        .await?;
    Ok(())
}

/// Releases a backup's keep; returns whether it had one. The backup then
/// falls under the retention policy again.
pub async fn release(repo: &Repo, id: &BackupId) -> Result<bool> {
    let key = repo.layout.keep_annotation_key(id);
    let had = repo.store.head(&key).await?.is_some();
    if had {
        repo.store.delete(&key).await?;
    }
    Ok(had)
}

/// Refuses to delete a kept backup by hand, as barman-cloud-backup-delete
/// does: the keep must be released first.
pub async fn refuse_if_kept(repo: &Repo, id: &BackupId) -> Result<()> {
    match get(repo, id).await? {
        None => Ok(()),
        Some(target) => Err(Error::Conflict(format!(
            "backup {id} is kept (target {target}): release the keep first with \
             `pitr backup keep {id} --release` if you really want to delete it"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::BackupInfo;
    use crate::wal::test_segments::fs_repo;

    #[test]
    fn annotation_bodies_read_as_barman_reads_them() {
        assert_eq!(
            KeepTarget::of_annotation(b"standalone"),
            KeepTarget::Standalone
        );
        assert_eq!(KeepTarget::of_annotation(b"full"), KeepTarget::Full);
        // Anything else is full, for safety.
        for body in [&b""[..], b"standalone\n", b"Standalone", b"x"] {
            assert_eq!(KeepTarget::of_annotation(body), KeepTarget::Full);
        }
        assert!("forever".parse::<KeepTarget>().is_err());
    }

    #[tokio::test]
    async fn keep_release_and_status_where_barman_looks() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let id: BackupId = "20261201T010203".parse().unwrap();
        let mut info = BackupInfo::new(id.clone(), "main");
        catalog::write_info(&repo, &info, false).await.unwrap();
        // STARTED: refused.
        let e = set(&repo, &id, KeepTarget::Full).await.unwrap_err();
        assert!(e.to_string().contains("only DONE"), "{e}");
        info.status = BackupStatus::Done;
        catalog::write_info(&repo, &info, false).await.unwrap();
        set(&repo, &id, KeepTarget::Standalone).await.unwrap();
        let key = repo.layout.keep_annotation_key(&id);
        assert!(
            key.ends_with("base/20261201T010203/annotations/keep"),
            "{key}"
        );
        assert_eq!(
            repo.store.get_bytes(&key).await.unwrap().unwrap(),
            b"standalone"
        );
        assert_eq!(
            list(&repo).await.unwrap().get(&id),
            Some(&KeepTarget::Standalone)
        );
        assert!(refuse_if_kept(&repo, &id).await.is_err());
        assert!(release(&repo, &id).await.unwrap());
        assert!(!release(&repo, &id).await.unwrap());
        assert_eq!(get(&repo, &id).await.unwrap(), None);
        refuse_if_kept(&repo, &id).await.unwrap();
        let other: BackupId = "20261201T010204".parse().unwrap();
        assert!(matches!(
            set(&repo, &other, KeepTarget::Full).await,
            Err(Error::NotFound(_))
        ));
    }
}
