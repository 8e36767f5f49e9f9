//! A repository: a store, the layout of keys in it, and the codec objects
//! are written with. Every command builds one and calls the library.

use std::sync::Arc;

use crate::codec::{Codec, EncryptionKey};
use crate::config::{RepoConfig, RepoLocation};
use crate::error::Result;
use crate::layout::Layout;
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;
use crate::store::ObjectStore;
use crate::wal::identity::RepoIdentity;

pub struct Repo {
    pub store: Box<dyn ObjectStore>,
    pub layout: Layout,
    pub codec: Codec,
    /// The identity record once read (see `wal::identity::cached`).
    pub(crate) identity_cache: tokio::sync::OnceCell<RepoIdentity>,
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
        })
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
