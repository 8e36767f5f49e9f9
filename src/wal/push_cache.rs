//! What a pg_wal directory remembers about the repository it archives
//! into, so that a push does not ask the store again for what it just
//! learned: the identity was checked (one GET of `identity.json` saved),
//! and the store honours conditional writes (so `If-None-Match: *` alone
//! answers whether a segment's name is taken, and the LIST of its hash
//! directory is saved).
//!
//! The record lives beside the look-ahead markers
//! (`pg_wal/.pitr-archived/.repository.json`), where PostgreSQL never
//! looks. It is trusted only for the same repository and server, the same
//! system identifier, segment size, compression and encryption setting,
//! and for [`TRUST_FOR`] after it was written; then the next push checks
//! everything again and rewrites it. A record that is missing, damaged or
//! from elsewhere only costs the full checks.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil::temp_beside;
use crate::repo::Repo;
use crate::store::{PutOptions, PutOutcome};

/// How long a verified record is trusted before the checks run again.
pub const TRUST_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

const FILE_NAME: &str = ".repository.json";

/// What one push verified, for the pushes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFacts {
    /// [`Repo::describe`] of the repository and server.
    pub source: String,
    /// Decimal, as in the identity record.
    pub system_identifier: String,
    pub segment_size: u64,
    /// The compression suffix pushes used (another compression may find a
    /// copy under another suffix, which only the LIST sees).
    pub suffix: String,
    /// Whether pushes had a client-side encryption key.
    pub encrypting: bool,
    /// Whether the store refused a second conditional PUT of one key.
    pub conditional_writes: bool,
    pub verified_at: DateTime<Utc>,
}

impl RepoFacts {
    /// The facts a push into `repo` of a segment from database system
    /// `system_identifier` would verify, stamped now.
    pub fn of(
        repo: &Repo,
        system_identifier: u64,
        segment_size: u64,
        conditional_writes: bool,
    ) -> RepoFacts {
        RepoFacts {
            source: repo.describe(),
            system_identifier: system_identifier.to_string(),
            segment_size,
            suffix: repo.codec.compression.suffix().to_string(),
            encrypting: repo.codec.key.is_some(),
            conditional_writes,
            verified_at: Utc::now(),
        }
    }

    /// Whether these facts, verified earlier, hold for a push of a segment
    /// of `system_identifier` with `segment_size` into `repo` at `now`.
    pub fn vouch_for(
        &self,
        repo: &Repo,
        system_identifier: u64,
        segment_size: u64,
        now: DateTime<Utc>,
    ) -> bool {
        let fresh = Self::of(
            repo,
            system_identifier,
            segment_size,
            self.conditional_writes,
        );
        self.source == fresh.source
            && self.system_identifier == fresh.system_identifier
            && self.segment_size == fresh.segment_size
            && self.suffix == fresh.suffix
            && self.encrypting == fresh.encrypting
            && self.verified_at <= now
            && now - self.verified_at < TRUST_FOR
    }
}

/// The record file of one pg_wal directory.
#[derive(Debug, Clone)]
pub struct PushCache {
    path: PathBuf,
}

impl PushCache {
    /// The record in `markers_dir` (the look-ahead markers' directory).
    pub fn in_dir(markers_dir: &Path) -> PushCache {
        PushCache {
            path: markers_dir.join(FILE_NAME),
        }
    }

    /// Whether `name`, in the markers' directory, is this record.
    pub fn is_its_file(name: &std::ffi::OsStr) -> bool {
        name == FILE_NAME
    }

    /// The recorded facts, if any can be read.
    pub fn load(&self) -> Option<RepoFacts> {
        serde_json::from_slice(&fs::read(&self.path).ok()?).ok()
    }

    /// Records `facts` (write, rename). A failure is only logged: the
    /// next push does the full checks again.
    pub fn store(&self, facts: &RepoFacts) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let temp = temp_beside(&self.path);
            fs::write(&temp, serde_json::to_vec(facts).expect("facts serialise"))?;
            fs::rename(&temp, &self.path)
        };
        if let Err(e) = write() {
            tracing::debug!("cannot record {}: {e}", self.path.display());
        }
    }
}

/// Whether the store refuses a conditional PUT (`If-None-Match: *`) of a
/// key that exists: one small PUT of a probe object under `pitr/` (two
/// the first time, when the probe is new). Stores that ignore the
/// condition get the LIST before every push.
pub async fn honours_conditional_writes(repo: &Repo) -> Result<bool> {
    let key = repo.layout.conditional_probe_key();
    let opts = PutOptions {
        if_absent: true,
        ..Default::default()
    };
    let body = Bytes::from_static(b"pitr checks that this store refuses to overwrite it\n");
    if repo.store.put(&key, body.clone(), opts.clone()).await? == PutOutcome::AlreadyExists {
        return Ok(true);
    }
    Ok(repo.store.put(&key, body, opts).await? == PutOutcome::AlreadyExists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::test_segments::fs_repo;

    #[tokio::test]
    async fn facts_vouch_only_for_the_same_setup_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(&dir.path().join("repo"));
        assert!(honours_conditional_writes(&repo).await.unwrap());
        assert!(honours_conditional_writes(&repo).await.unwrap());
        let facts = RepoFacts::of(&repo, 7, 16 << 20, true);
        let now = facts.verified_at;
        assert!(facts.vouch_for(&repo, 7, 16 << 20, now));
        assert!(!facts.vouch_for(&repo, 8, 16 << 20, now), "other system");
        assert!(!facts.vouch_for(&repo, 7, 64 << 20, now), "other size");
        assert!(
            !facts.vouch_for(&repo, 7, 16 << 20, now + TRUST_FOR),
            "stale"
        );
        assert!(
            !facts.vouch_for(&repo, 7, 16 << 20, now - chrono::TimeDelta::seconds(1)),
            "from the future (clock moved back)"
        );
        let mut other = facts.clone();
        other.suffix = ".zst".into();
        assert!(
            !other.vouch_for(&repo, 7, 16 << 20, now),
            "other compression"
        );
        let elsewhere = fs_repo(&dir.path().join("elsewhere"));
        assert!(
            !facts.vouch_for(&elsewhere, 7, 16 << 20, now),
            "other repository"
        );

        let cache = PushCache::in_dir(&dir.path().join("markers"));
        assert_eq!(cache.load(), None);
        cache.store(&facts);
        assert_eq!(cache.load(), Some(facts));
        fs::write(dir.path().join("markers/.repository.json"), "{garbage").unwrap();
        assert_eq!(cache.load(), None);
    }
}
