//! A repository in a local directory: same keys as on S3. Objects are
//! written to a temporary name, fsynced, and linked into place, so a reader
//! never sees half an object and `if_absent` never overwrites. Metadata lives
//! beside the data under `.pitr-meta/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::debug;

use super::{
    Metadata, Object, ObjectInfo, ObjectStore, ObjectWriter, PutOptions, PutOutcome, RangeBytes,
};
use crate::error::{Error, Result};
use crate::fsutil::{fsync_dir, temp_beside};

const META_DIR: &str = ".pitr-meta";

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens an existing repository directory. Readers use this: a
    /// mistyped path or an archive that is not mounted is an error, never an
    /// empty repository (which would read as "the end of the archive").
    pub fn open(root: &Path) -> Result<Self> {
        match fs::metadata(root) {
            Ok(md) if md.is_dir() => Ok(FsStore {
                root: root.to_path_buf(),
            }),
            Ok(_) => Err(Error::Config(format!(
                "repository {} (--repo / PITR_REPO) is not a directory",
                root.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Config(format!(
                "repository directory {} (--repo / PITR_REPO) does not exist: check the path, \
                 and that the archive is mounted (only wal-push and backup create it)",
                root.display()
            ))),
            Err(e) => Err(Error::Config(format!(
                "cannot open repository directory {} (--repo / PITR_REPO): {e}",
                root.display()
            ))),
        }
    }

    /// Opens a repository directory, creating it if needed (writers).
    pub fn create(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| {
            Error::Config(format!(
                "cannot create repository directory {} (--repo / PITR_REPO): {e}",
                root.display()
            ))
        })?;
        Self::open(root)
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::Config(format!("invalid object key '{key}'")));
        }
        Ok(self.root.join(rel))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.json"))
    }

    fn read_meta(&self, key: &str) -> Metadata {
        fs::read(self.meta_path(key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn info(&self, key: &str, md: &fs::Metadata, metadata: Metadata) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: md.len(),
            last_modified: md.modified().ok().map(DateTime::<Utc>::from),
            metadata,
        }
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue; // temporary files and the metadata directory
            }
            let path = entry.path();
            let key = path
                .strip_prefix(&self.root)
                .expect("walk stays under root")
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let md = entry.metadata()?;
            if md.is_dir() {
                if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                    self.walk(&path, prefix, out)?;
                }
            } else if key.starts_with(prefix) {
                out.push(self.info(&key, &md, Metadata::new()));
            }
        }
        Ok(())
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

#[async_trait]
impl ObjectStore for FsStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        debug!("store request: HEAD {key}");
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(md) if md.is_file() => Ok(Some(self.info(key, &md, self.read_meta(key)))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot stat", &path, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        debug!("store request: GET {key}");
        let path = self.path(key)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot open", &path, e)),
        };
        let md = file
            .metadata()
            .map_err(|e| io_err("cannot stat", &path, e))?;
        let info = self.info(key, &md, self.read_meta(key));
        Ok(Some(Object {
            info,
            body: Box::pin(tokio::fs::File::from_std(file)),
        }))
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<RangeBytes>> {
        use std::os::unix::fs::FileExt;
        debug!("store request: GET {key} (bytes {start}+{len})");
        let path = self.path(key)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot open", &path, e)),
        };
        tokio::task::spawn_blocking(move || {
            let md = file
                .metadata()
                .map_err(|e| io_err("cannot stat", &path, e))?;
            let end = (start + len).min(md.len());
            let mut buf = vec![0u8; end.saturating_sub(start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| io_err("cannot read", &path, e))?;
            let modified = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            Ok(Some(RangeBytes {
                bytes: Bytes::from(buf),
                version: Some(format!("{modified}-{}", md.len())),
            }))
        })
        .await
        .map_err(|e| Error::Store(format!("reading {key} failed: {e}")))?
    }

    async fn list_each(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<()> {
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut out = Vec::new();
        self.walk(&start, prefix, &mut out)
            .map_err(|e| io_err("cannot list", &start, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        let after = |o: &ObjectInfo| start_after.is_none_or(|a| o.key.as_str() > a);
        let mut n = 0;
        for o in out.into_iter().filter(after) {
            n += 1;
            each(o);
        }
        debug!(
            "store request: LIST {prefix} (after {}): {n} keys",
            start_after.unwrap_or("-")
        );
        Ok(())
    }

    async fn list_shallow(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let Some(dir_key) = prefix.strip_suffix('/') else {
            let mut out = Vec::new();
            self.list_each(prefix, None, &mut |o| {
                if !o.key[prefix.len()..].contains('/') {
                    out.push(o)
                }
            })
            .await?;
            return Ok(out);
        };
        let dir = self.path(dir_key)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let md = entry
                .metadata()
                .map_err(|e| io_err("cannot stat", &entry.path(), e))?;
            if !name.starts_with('.') && md.is_file() {
                out.push(self.info(&format!("{prefix}{name}"), &md, Metadata::new()));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        debug!("store request: LIST {prefix} (shallow): {} keys", out.len());
        Ok(out)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let Some(dir_key) = prefix.strip_suffix('/') else {
            return Err(Error::Config(format!(
                "list_dirs needs a prefix ending in '/', not '{prefix}'"
            )));
        };
        let dir = self.path(dir_key)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                out.push(format!("{prefix}{name}/"));
            }
        }
        out.sort();
        debug!(
            "store request: LIST {prefix} (directories): {} directories",
            out.len()
        );
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        for p in [path, self.meta_path(key)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot delete", &p, e)),
            }
        }
        Ok(())
    }

    async fn abort_unfinished(&self, prefix: &str) -> Result<usize> {
        // Unfinished objects are hidden temporary files beside their key.
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut removed = 0;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if e.file_name().to_string_lossy().contains(".pitr-tmp-")
                    && fs::remove_file(&path).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn writer(&self, key: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create directory", &dir, e))?;
        let temp = temp_beside(&path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_err("cannot create", &temp, e))?;
        Ok(Box::new(FsWriter {
            file: Some(file),
            temp,
            path,
            meta_path: self.meta_path(key),
            opts,
        }))
    }
}

struct FsWriter {
    file: Option<File>,
    temp: PathBuf,
    path: PathBuf,
    meta_path: PathBuf,
    opts: PutOptions,
}

impl FsWriter {
    fn write_meta(&self, metadata: &Metadata) -> io::Result<()> {
        let dir = self.meta_path.parent().expect("has parent");
        fs::create_dir_all(dir)?;
        let temp = temp_beside(&self.meta_path);
        fs::write(
            &temp,
            serde_json::to_vec(metadata).expect("metadata serialises"),
        )?;
        fs::rename(&temp, &self.meta_path)
    }
}

#[async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let file = self.file.as_mut().expect("writer not finished");
        file.write_all(&data)
            .map_err(|e| io_err("cannot write", &self.temp, e))
    }

    async fn finish(mut self: Box<Self>, late_metadata: Metadata) -> Result<PutOutcome> {
        let file = self.file.take().expect("writer not finished");
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", &self.temp, e))?;
        drop(file);
        let placed = if self.opts.if_absent {
            fs::hard_link(&self.temp, &self.path)
        } else {
            fs::rename(&self.temp, &self.path)
        };
        let _ = fs::remove_file(&self.temp);
        match placed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => return Err(io_err("cannot store", &self.path, e)),
        }
        let dir = self.path.parent().expect("has parent");
        fsync_dir(dir).map_err(|e| io_err("cannot fsync", dir, e))?;
        let mut metadata = std::mem::take(&mut self.opts.metadata);
        metadata.extend(late_metadata);
        if !metadata.is_empty() {
            self.write_meta(&metadata)
                .map_err(|e| io_err("cannot write metadata", &self.meta_path, e))?;
        }
        Ok(PutOutcome::Stored)
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        let _ = fs::remove_file(&self.temp);
        Ok(())
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_get_list_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::create(dir.path()).unwrap();
        let opts = PutOptions {
            if_absent: true,
            metadata: [("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let k = "srv/wals/0000000100000000/000000010000000000000001.gz";
        assert_eq!(
            store
                .put(k, Bytes::from_static(b"one"), opts.clone())
                .await
                .unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            store
                .put(k, Bytes::from_static(b"two"), opts)
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        let mut obj = store.get(k).await.unwrap().unwrap();
        let mut body = Vec::new();
        obj.body.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"one");
        assert_eq!(obj.info.metadata.get("a").map(String::as_str), Some("1"));
        let listed = store
            .list("srv/wals/0000000100000000/00000001")
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store
            .list("srv/wals/0000000100000000/00000002")
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .list("srv/")
            .await
            .unwrap()
            .iter()
            .all(|o| !o.key.contains(".pitr")));
        store.delete(k).await.unwrap();
        assert!(store.head(k).await.unwrap().is_none());
        assert!(store.path("../escape").is_err());
    }
}
