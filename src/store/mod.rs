//! Object stores: one interface, two drivers (S3 and a local directory).
//! Keys are `/`-separated paths built only by [`crate::layout`].

pub mod fs;
pub mod s3;
mod s3_error;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use crate::error::Result;

/// User metadata stored with an object (`x-amz-meta-*` on S3).
pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// Stored size in bytes (after compression and encryption).
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    /// Empty in listings; filled by `head` and `get`.
    pub metadata: Metadata,
}

pub type Body = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// What a ranged GET returned.
#[derive(Debug, Clone)]
pub struct RangeBytes {
    pub bytes: Bytes,
    /// Changes whenever the object is replaced (S3's ETag; a local file's
    /// modification time and size).
    pub version: Option<String>,
}

pub struct Object {
    pub info: ObjectInfo,
    pub body: Body,
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Store only if no object exists under the key (never overwrite). Such
    /// an object is written in one atomic step whatever its size (one
    /// conditional PUT on S3, a hard link on a local directory), and always
    /// carries its late metadata (checksum, size).
    pub if_absent: bool,
    pub metadata: Metadata,
    /// The most the stored object is expected to hold, if known (a WAL
    /// file's size, a base backup's estimate): bounds the writer's buffer,
    /// and raises the S3 part size above the default when the object would
    /// otherwise need more than S3's 10,000 parts.
    pub size_hint: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// `if_absent` was set and an object was already there; nothing changed.
    AlreadyExists,
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where this store is, for messages (never includes credentials).
    fn url(&self) -> String;
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    async fn get(&self, key: &str) -> Result<Option<Object>>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.list_each(prefix, None, &mut |o| out.push(o)).await?;
        Ok(out)
    }
    /// The objects whose key starts with `prefix` and sorts after
    /// `start_after`, in key order, handed to `each` as the listing pages
    /// arrive: nothing is collected, whatever the number of keys.
    async fn list_each(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<()>;
    /// The objects directly under `prefix`, not in a deeper "directory"
    /// (`prefix/dir/...`): one request however many keys lie deeper.
    async fn list_shallow(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// The "directories" directly under `prefix` (ending in `/`), sorted:
    /// one request however many keys they hold.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>>;
    /// Whether any object's key starts with `prefix` (one cheap request).
    async fn any_under(&self, prefix: &str) -> Result<bool> {
        Ok(!self.list(prefix).await?.is_empty())
    }
    /// `len` bytes of `key` from byte `start` (a ranged GET), read whole,
    /// with the object's version tag (S3's ETag) so that a reader of
    /// several ranges can tell they all come from one object. `None` when
    /// there is no object under `key`.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<RangeBytes>>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Deletes many objects, in as few requests as the store allows (S3
    /// DeleteObjects: up to 1,000 keys a request), in the order given
    /// batch by batch. Keys that are already gone are not an error. On a
    /// failure some keys may be deleted and others not: callers order their
    /// keys so that any prefix of the work leaves a consistent repository.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }
    /// Drops every unfinished upload under `prefix` (left by a process that
    /// was killed) and returns how many it dropped.
    async fn abort_unfinished(&self, prefix: &str) -> Result<usize>;
    /// Starts a streaming upload; nothing is visible under `key` until
    /// [`ObjectWriter::finish`] returns `Stored`.
    async fn writer(&self, key: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>>;

    /// Reads a small object whole (metadata files, not backups).
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let Some(mut obj) = self.get(key).await? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        obj.body.read_to_end(&mut body).await.map_err(|e| {
            crate::error::Error::Store(format!(
                "reading {key} from {} failed: {}",
                self.url(),
                crate::error::with_causes(&e)
            ))
        })?;
        Ok(Some(body))
    }

    /// Stores a small object in one call.
    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<PutOutcome> {
        let mut w = self.writer(key, opts).await?;
        w.write(data).await?;
        w.finish(Metadata::new()).await
    }
}

#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Completes the object. `late_metadata` (known only once all data is
    /// written, such as a checksum) is added where the driver can still do
    /// so: a single PUT (every `if_absent` object) or a local file; a
    /// multipart upload keeps only the metadata given at the start, so its
    /// writer records the checksum elsewhere (a backup's pitr.json).
    async fn finish(self: Box<Self>, late_metadata: Metadata) -> Result<PutOutcome>;
    /// Drops everything written; leaves no partial object or open upload.
    async fn abort(self: Box<Self>) -> Result<()>;
}
