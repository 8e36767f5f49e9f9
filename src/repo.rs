//! A repository: a store, the layout of keys in it, and the codec objects
//! are written with. Every command builds one and calls the library. The
//! store, layout and codec are private to the library: callers (the CLI,
//! the CNPG-I plugin) go through typed operations (`wal::push`,
//! `wal::restore_command`, `backup::catalog`, `restore::plan`, ...), so no
//! caller builds a key, picks a suffix or a compression itself; inside the
//! library, [`Repo::decode`] and [`OpenedObject`] read an object with the
//! compression detected once from its key.

use std::sync::Arc;

use crate::codec::Compression;
use crate::codec::{Codec, EncryptionKey};
use crate::config::{RepoConfig, RepoLocation};
use crate::error::Error;
use crate::error::Result;
use crate::layout::Layout;
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;
use crate::store::{Object, ObjectStore};
use crate::transfer::{self, DownloadReport};
use crate::wal::identity::RepoIdentity;
use crate::wal::WalFileName;

pub struct Repo {
    pub(crate) store: Box<dyn ObjectStore>,
    pub(crate) layout: Layout,
    pub(crate) codec: Codec,
    /// The identity record once read (see `wal::identity::cached`).
    pub(crate) identity_cache: tokio::sync::OnceCell<RepoIdentity>,
    /// Held by the push that verifies the repository for a pg_wal's push
    /// cache, so that concurrent pushes in one process verify it once.
    pub(crate) push_verification: tokio::sync::Mutex<()>,
}

impl Repo {
    /// Opens an existing repository: a local directory must exist. Every
    /// reader uses this, so a wrong path is an error, not an empty archive.
    pub fn open(cfg: &RepoConfig) -> Result<Repo> {
        Self::open_with(cfg, false)
    }

    /// Opens a repository, creating a local directory if needed: for the
    /// commands that write (wal-push, backup).
    pub fn create(cfg: &RepoConfig) -> Result<Repo> {
        Self::open_with(cfg, true)
    }

    fn open_with(cfg: &RepoConfig, create: bool) -> Result<Repo> {
        RepoConfig::validate_server_name(&cfg.server_name)?;
        let key = match &cfg.encryption_key_file {
            Some(path) => Some(Arc::new(EncryptionKey::load(path)?)),
            None => None,
        };
        let (store, prefix): (Box<dyn ObjectStore>, &str) = match &cfg.location {
            RepoLocation::S3 { bucket, prefix } => {
                (Box::new(S3Store::open(&cfg.s3, bucket)?), prefix)
            }
            RepoLocation::Fs { root } if create => (Box::new(FsStore::create(root)?), ""),
            RepoLocation::Fs { root } => (Box::new(FsStore::open(root)?), ""),
        };
        Ok(Repo {
            store,
            layout: Layout::new(prefix, &cfg.server_name),
            codec: Codec {
                compression: cfg.compression,
                key,
            },
            identity_cache: tokio::sync::OnceCell::new(),
            push_verification: tokio::sync::Mutex::new(()),
        })
    }

    /// Decodes `stored` into `sink` with this repository's key, verifying
    /// it (gzip CRC, GCM tags, pitr's checksum and size where recorded).
    /// Returns the sink so the caller can fsync it.
    pub async fn decode<W: std::io::Write + Send + 'static>(
        &self,
        stored: OpenedObject,
        sink: W,
    ) -> Result<(DownloadReport, W)> {
        transfer::download(
            stored.object,
            stored.compression,
            self.codec.key.clone(),
            sink,
        )
        .await
    }

    /// Downloads one of a backup's objects (a tar, the manifest) with
    /// ranged GETs, `jobs` in flight, and decodes it into `sink`, verifying
    /// it as [`Repo::decode`] does. A range whose body fails half way (a
    /// reset, a stall) is fetched again, which one long GET cannot do.
    /// `None` when there is no object under `key`.
    pub async fn decode_backup_object<W: std::io::Write + Send + 'static>(
        &self,
        key: &str,
        jobs: usize,
        sink: W,
    ) -> Result<Option<(DownloadReport, W)>> {
        use crate::transfer::ranged;
        // The HEAD gives the metadata (checksum, size) a GET would carry.
        let Some(info) = self.store.head(key).await? else {
            return Ok(None);
        };
        let (obj, feed) = ranged::open(self.store.as_ref(), info, jobs.max(1), ranged::RANGE_SIZE);
        let (decoded, fed) = tokio::join!(
            self.decode(OpenedObject::of_backup_object(self, obj)?, sink),
            feed
        );
        // A failed feed is the cause of the decoder's read error: report it.
        fed?;
        decoded.map(Some)
    }

    /// The repository and server, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({})",
            self.store.url(),
            self.layout.server_root().trim_end_matches('/')
        )
    }
}

/// An object opened for reading, with the compression its key says it was
/// stored with, detected once.
pub struct OpenedObject {
    pub object: Object,
    pub compression: Compression,
}

impl OpenedObject {
    /// A WAL object: compression from its suffix after `name`.
    pub fn of_wal(repo: &Repo, name: &WalFileName, object: Object) -> Result<OpenedObject> {
        let key = &object.info.key;
        let suffix = repo
            .layout
            .wal_suffix_of(name, key)
            .ok_or_else(|| Error::Corrupt(format!("{key} is not a stored copy of {name}")))?;
        let compression = Compression::for_suffix(suffix, key)?;
        Ok(OpenedObject {
            object,
            compression,
        })
    }

    /// One of a backup's objects (a tar or the manifest).
    pub fn of_backup_object(repo: &Repo, object: Object) -> Result<OpenedObject> {
        let key = &object.info.key;
        let compression = Compression::for_suffix(repo.layout.backup_object_suffix(key), key)?;
        Ok(OpenedObject {
            object,
            compression,
        })
    }

    pub fn key(&self) -> &str {
        &self.object.info.key
    }
}
