//! Which database system a repository belongs to. The first WAL push records
//! the system identifier from the segment's page header; every later push is
//! checked against it, so two clusters never mix WAL under one server name.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::store::{PutOptions, PutOutcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoIdentity {
    /// Decimal, as `pg_controldata` prints it (JSON numbers lose u64 precision).
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub created_by: String,
    pub created_at: String,
}

/// Reads the identity record, if the repository has one.
pub async fn load(repo: &Repo) -> Result<Option<RepoIdentity>> {
    let key = repo.layout.identity_key();
    let Some(body) = repo.store.get_bytes(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("{key} is not a valid pitr identity record: {e}")))
}

/// Records `system_identifier` as the repository's, or checks it against
/// the one already recorded. `what` names the file being archived.
pub async fn ensure(
    repo: &Repo,
    system_identifier: u64,
    segment_size: u64,
    what: &str,
) -> Result<()> {
    let recorded = match load(repo).await? {
        Some(id) => id,
        None => {
            let id = RepoIdentity {
                system_identifier: system_identifier.to_string(),
                wal_segment_size: segment_size,
                created_by: format!("pitr {}", env!("CARGO_PKG_VERSION")),
                created_at: chrono::Utc::now().to_rfc3339(),
            };
            let body = serde_json::to_vec_pretty(&id).expect("identity serialises");
            let opts = PutOptions {
                if_absent: true,
                ..Default::default()
            };
            match repo
                .store
                .put(&repo.layout.identity_key(), Bytes::from(body), opts)
                .await?
            {
                PutOutcome::Stored => return Ok(()),
                // Another push recorded one first: check against it.
                PutOutcome::AlreadyExists => load(repo).await?.ok_or_else(|| {
                    Error::Store(format!(
                        "{} vanished while being read",
                        repo.layout.identity_key()
                    ))
                })?,
            }
        }
    };
    if recorded.system_identifier != system_identifier.to_string() {
        return Err(Error::Conflict(format!(
            "{what} belongs to database system {system_identifier}, but {} holds WAL of database \
             system {}: this is another cluster's repository. Give this cluster its own \
             --server-name / PITR_SERVER_NAME (or repository), or, if the old cluster is gone for \
             good, move its data away first",
            repo.describe(),
            recorded.system_identifier
        )));
    }
    if recorded.wal_segment_size != segment_size {
        return Err(Error::Conflict(format!(
            "{what} has {segment_size}-byte segments, but {} was created for {}-byte segments",
            repo.describe(),
            recorded.wal_segment_size
        )));
    }
    Ok(())
}
