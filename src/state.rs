//! pitr's state records: small JSON objects under `<server>/pitr/state/`,
//! one per kind of writer (`archive.json`, `backup.json`, `verify.json`,
//! `expire.json`, `drill.json`), that Barman's tools never see.
//!
//! Each kind has its own object so that writers of different kinds
//! (a `wal-push` and a `backup` running at once) never overwrite each
//! other's news; each record is written whole in one PUT, so a crash
//! leaves the old or the new version. `status` and `metrics` read these
//! instead of the whole listing; a record that is missing, or that does
//! not parse (a newer pitr's format, a damaged object), reads as absent,
//! and the reader falls back to the listing. State is a summary, never
//! the truth: nothing that decides what to keep or to restore trusts it.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::repo::Repo;
use crate::store::PutOptions;

/// Which writer a state record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// `wal-push`: archiving counters and the last segment stored.
    Archive,
    /// `backup`: the last backups' outcomes.
    Backup,
    /// `archive verify`: its last result and checkpoint.
    Verify,
    /// `expire`: what retention last removed or would remove.
    Expire,
    /// `drill`: the last restore drill's result.
    Drill,
}

impl StateKind {
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Archive => "archive",
            StateKind::Backup => "backup",
            StateKind::Verify => "verify",
            StateKind::Expire => "expire",
            StateKind::Drill => "drill",
        }
    }
}

/// Reads the record of `kind`; `None` when there is none or it cannot be
/// parsed (logged), so callers rebuild from the listing. Store errors are
/// errors: an unreachable store is not an empty state.
pub async fn read<T: DeserializeOwned>(repo: &Repo, kind: StateKind) -> Result<Option<T>> {
    let key = repo.layout.state_key(kind.name());
    let Some(body) = repo.store.get_bytes(&key).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&body) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            tracing::warn!("ignoring state record {key}: {e}");
            Ok(None)
        }
    }
}

/// Replaces the record of `kind` with `value`, in one PUT.
pub async fn write<T: Serialize>(repo: &Repo, kind: StateKind, value: &T) -> Result<()> {
    let key = repo.layout.state_key(kind.name());
    let body = serde_json::to_vec_pretty(value).expect("state records serialise");
    repo.store
        .put(&key, Bytes::from(body), PutOptions::default())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::test_segments::fs_repo;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        n: u32,
    }

    #[tokio::test]
    async fn records_round_trip_per_kind_and_garbage_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        assert_eq!(read::<Rec>(&repo, StateKind::Drill).await.unwrap(), None);
        write(&repo, StateKind::Drill, &Rec { n: 1 }).await.unwrap();
        write(&repo, StateKind::Verify, &Rec { n: 2 })
            .await
            .unwrap();
        write(&repo, StateKind::Drill, &Rec { n: 3 }).await.unwrap();
        assert_eq!(
            read::<Rec>(&repo, StateKind::Drill).await.unwrap(),
            Some(Rec { n: 3 })
        );
        assert_eq!(
            read::<Rec>(&repo, StateKind::Verify).await.unwrap(),
            Some(Rec { n: 2 })
        );
        let key = repo.layout.state_key("verify");
        repo.store
            .put(
                &key,
                Bytes::from_static(b"{not json"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(read::<Rec>(&repo, StateKind::Verify).await.unwrap(), None);
    }
}
