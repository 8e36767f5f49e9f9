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
    /// Set when the repository was created with client-side encryption
    /// (`aes-256-gcm`): then a WAL file that is not encrypted is refused on
    /// fetch, so someone who can write to the bucket but lacks the key
    /// cannot substitute WAL, and a push without the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_side_encryption: Option<String>,
}

/// The value of `client_side_encryption` pitr records.
pub const CSE_AES_256_GCM: &str = "aes-256-gcm";

impl RepoIdentity {
    pub fn encrypted(&self) -> bool {
        self.client_side_encryption.is_some()
    }
}

/// The identity record, read once per [`Repo`] (it is never rewritten, so
/// a record once found stays true; a missing one is looked for again).
pub async fn cached(repo: &Repo) -> Result<Option<&RepoIdentity>> {
    if let Some(id) = repo.identity_cache.get() {
        return Ok(Some(id));
    }
    match load(repo).await? {
        Some(id) => Ok(Some(repo.identity_cache.get_or_init(|| async { id }).await)),
        None => Ok(None),
    }
}

/// Refuses to go on without the key when the repository is encrypted.
pub fn check_key(repo: &Repo, id: &RepoIdentity, what: &str) -> Result<()> {
    if id.encrypted() && repo.codec.key.is_none() {
        return Err(Error::WrongKey(format!(
            "{} was created with client-side encryption, but no key is configured for {what}: \
             set --encryption-key-file / PITR_ENCRYPTION_KEY_FILE",
            repo.describe()
        )));
    }
    Ok(())
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
    let recorded = match cached(repo).await? {
        Some(id) => id.clone(),
        None => {
            let id = RepoIdentity {
                system_identifier: system_identifier.to_string(),
                wal_segment_size: segment_size,
                created_by: format!("pitr {}", env!("CARGO_PKG_VERSION")),
                created_at: chrono::Utc::now().to_rfc3339(),
                client_side_encryption: repo.codec.key.as_ref().map(|_| CSE_AES_256_GCM.into()),
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
    check_key(repo, &recorded, what)?;
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
