//! `pitr backup verify`: read a backup back from the store, decode it, and
//! check every file against the backup manifest the server sent with it,
//! naming any file that differs or is missing.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::catalog::{CatalogEntry, ObjectKind, StoredObject};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::tar_walk::{TarMember, TarVisitor, TarWalker};

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub files_checked: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "Files")]
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

impl ManifestFile {
    fn path(&self) -> String {
        match (&self.path, &self.encoded_path) {
            (Some(p), _) => p.clone(),
            (None, Some(hex_path)) => hex::decode(hex_path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| hex_path.clone()),
            (None, None) => String::new(),
        }
    }
}

/// What one member of a tar hashed to.
#[derive(Debug, Clone)]
struct Seen {
    size: u64,
    sha256: String,
}

/// A `Write` sink that walks the decoded tar and hashes each file.
struct TarDigest {
    walker: TarWalker<Hasher>,
    current: Arc<Mutex<Option<String>>>,
}

struct Hasher {
    prefix: String,
    name: Option<String>,
    size: u64,
    hash: Sha256,
    /// Shared so that what was read before a decoding error still counts.
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
}

impl TarVisitor for Hasher {
    fn start(&mut self, m: &TarMember) {
        self.name = m.is_file().then(|| format!("{}{}", self.prefix, m.name));
        self.size = m.size;
        self.hash = Sha256::new();
    }
    fn data(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
    }
    fn end(&mut self) {
        if let Some(name) = self.name.take() {
            let sha256 = hex::encode(std::mem::take(&mut self.hash).finalize());
            self.seen.lock().unwrap().insert(
                name,
                Seen {
                    size: self.size,
                    sha256,
                },
            );
        }
    }
}

impl Write for TarDigest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fed = self.walker.feed(buf);
        *self.current.lock().unwrap() = self.walker.current.clone();
        fed.map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ranged GETs in flight per object verified (each range is retried when
/// its body fails half way).
const VERIFY_JOBS: usize = 4;

async fn fetch_manifest(repo: &Repo, object: &StoredObject) -> Result<Manifest> {
    let (_, bytes) = repo
        .decode_backup_object(&object.key, VERIFY_JOBS, Vec::new())
        .await?
        .ok_or_else(|| Error::NotFound(format!("the backup manifest {} is missing", object.key)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{} is not a backup manifest: {e}", object.key)))
}

/// Checks every file of `entry` against its manifest.
pub async fn verify(repo: &Repo, entry: &CatalogEntry) -> Result<VerifyReport> {
    let id = &entry.info.backup_id;
    let details = entry.details.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "backup {id} was not taken by pitr (it has no pitr.json): there is no server \
             manifest to verify it against"
        ))
    })?;
    let manifest_obj = details
        .objects
        .iter()
        .find(|o| o.kind == ObjectKind::Manifest)
        .ok_or_else(|| Error::Config(format!("backup {id} was taken without a backup manifest")))?;
    let manifest = fetch_manifest(repo, manifest_obj).await?;

    let mut report = VerifyReport::default();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for object in details.objects.iter().filter(|o| o.kind.is_tar()) {
        let prefix = match object.tablespace_oid {
            Some(oid) => format!("pg_tblspc/{oid}/"),
            None => String::new(),
        };
        let current = Arc::new(Mutex::new(None));
        let hashed = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = TarDigest {
            walker: TarWalker::new(
                &object.key,
                Hasher {
                    prefix,
                    name: None,
                    size: 0,
                    hash: Sha256::new(),
                    seen: hashed.clone(),
                },
            ),
            current: current.clone(),
        };
        let outcome = match repo
            .decode_backup_object(&object.key, VERIFY_JOBS, sink)
            .await
        {
            Ok(Some(done)) => Ok(done),
            Ok(None) => {
                report
                    .problems
                    .push(format!("{} is missing from the store", object.key));
                continue;
            }
            Err(e) => Err(e),
        };
        seen.append(&mut hashed.lock().unwrap());
        let outcome = outcome.and_then(|(r, mut sink)| sink.walker.finish().map(|()| r));
        match outcome {
            Ok(r) => {
                if r.sha256 != object.sha256 {
                    report.problems.push(format!(
                        "{} decodes to SHA-256 {}, but {} was stored",
                        object.key, r.sha256, object.sha256
                    ));
                }
            }
            Err(e @ (Error::Corrupt(_) | Error::WrongKey(_))) => {
                let at = current.lock().unwrap().clone();
                report.problems.push(match at {
                    Some(file) => format!("{} is damaged inside file {file}: {e}", object.key),
                    // The tar walker's messages name the object themselves.
                    None if e.to_string().starts_with(&object.key) => e.to_string(),
                    None => format!("{} is damaged: {e}", object.key),
                });
            }
            Err(e) => return Err(e),
        }
    }

    for file in &manifest.files {
        let path = file.path();
        let Some(got) = seen.remove(&path) else {
            report.problems.push(format!(
                "file {path} is in the manifest but not in the backup"
            ));
            continue;
        };
        report.files_checked += 1;
        report.bytes += got.size;
        if got.size != file.size {
            report.problems.push(format!(
                "file {path} is {} bytes, the manifest says {}",
                got.size, file.size
            ));
        } else if file.algorithm.as_deref() == Some("SHA256")
            && !file
                .checksum
                .as_deref()
                .unwrap_or_default()
                .eq_ignore_ascii_case(&got.sha256)
        {
            report.problems.push(format!(
                "file {path} differs from the manifest (SHA-256 {}, expected {})",
                got.sha256,
                file.checksum.as_deref().unwrap_or_default()
            ));
        }
    }
    for path in seen.keys() {
        report.problems.push(format!(
            "file {path} is in the backup but not in the manifest"
        ));
    }
    Ok(report)
}
