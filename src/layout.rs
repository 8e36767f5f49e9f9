//! Where things live in the store: Barman's layout, and nothing else builds
//! keys.
//!
//! ```text
//! <prefix>/<server>/wals/<TLI><LOG>/<segment>[.gz]
//! <prefix>/<server>/wals/<TLI>.history[.gz]
//! <prefix>/<server>/base/<backup-id>/backup.info
//! <prefix>/<server>/base/<backup-id>/data.tar[.gz]
//! <prefix>/<server>/base/<backup-id>/<tablespace-oid>.tar[.gz]
//! <prefix>/<server>/base/<backup-id>/annotations/keep       Barman's keep: "full" or "standalone"
//! <prefix>/<server>/pitr/identity.json                      pitr's own, ignored by Barman
//! <prefix>/<server>/pitr/backups/<backup-id>/backup_manifest.gz, pitr.json
//! <prefix>/<server>/pitr/state/<kind>.json                  pitr's state records (crate::state)
//! ```

use crate::backup::BackupId;
use crate::codec::compression::KNOWN_SUFFIXES;
use crate::wal::{SegmentName, WalFileName};

/// A WAL object's key, parsed: which WAL file it holds, under which of
/// Barman's compression suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalKey {
    pub name: WalFileName,
    pub suffix: &'static str,
}

/// What an object in a backup's directory (`base/<id>/`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackupFile {
    /// `backup.info`, Barman's metadata.
    Info,
    /// PGDATA's tar: `data.tar[suffix]`, or Barman's further parts
    /// `data_NNNN.tar[suffix]` (split past `--max-archive-size`).
    Data { part: u32, suffix: &'static str },
    /// A tablespace's tar: `<oid>.tar[suffix]`.
    Tablespace { oid: u32, suffix: &'static str },
    /// Anything else (Barman's `annotations/keep`, ...).
    Other,
}

impl BackupFile {
    /// Whether this is one of the backup's tars.
    pub fn is_tar(&self) -> bool {
        matches!(
            self,
            BackupFile::Data { .. } | BackupFile::Tablespace { .. }
        )
    }

    /// The compression suffix of a tar ("" for anything else).
    pub fn suffix(&self) -> &'static str {
        match self {
            BackupFile::Data { suffix, .. } | BackupFile::Tablespace { suffix, .. } => suffix,
            _ => "",
        }
    }
}

/// Splits `file` into a stem and one of Barman's suffixes after `.tar`.
fn tar_stem(file: &str) -> Option<(&str, &'static str)> {
    let (stem, rest) = file.split_once(".tar")?;
    let suffix = KNOWN_SUFFIXES.iter().find(|s| **s == rest)?;
    Some((stem, suffix))
}

/// The WAL file named by `file` under one of Barman's suffixes (the empty
/// suffix last: `X.history.gz` is not `X.history`).
fn wal_file_with_suffix(file: &str) -> Option<WalKey> {
    KNOWN_SUFFIXES.iter().rev().find_map(|suffix| {
        let name = file.strip_suffix(suffix)?.parse().ok()?;
        Some(WalKey { name, suffix })
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `prefix/server/` (or `server/` without a prefix).
    root: String,
}

impl Layout {
    pub fn new(prefix: &str, server: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            format!("{server}/")
        } else {
            format!("{prefix}/{server}/")
        };
        Layout { root }
    }

    /// The server name (the last component of the root).
    pub fn server_name(&self) -> &str {
        self.root
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }

    pub fn server_root(&self) -> &str {
        &self.root
    }

    pub fn wals_prefix(&self) -> String {
        format!("{}wals/", self.root)
    }

    /// The key of a WAL file stored with the given compression suffix.
    pub fn wal_key(&self, name: &WalFileName, suffix: &str) -> String {
        match name.hash_dir() {
            Some(dir) => format!("{}wals/{dir}/{name}{suffix}", self.root),
            None => format!("{}wals/{name}{suffix}", self.root),
        }
    }

    /// If `key` holds `name` under one of Barman's compression suffixes,
    /// returns that suffix.
    pub fn wal_suffix_of<'k>(&self, name: &WalFileName, key: &'k str) -> Option<&'k str> {
        let base = self.wal_key(name, "");
        let suffix = key.strip_prefix(base.as_str())?;
        KNOWN_SUFFIXES.contains(&suffix).then_some(suffix)
    }

    /// The key prefix of one hash directory of WAL (`wals/<TLI><LOG>/`),
    /// the one that holds `segment`.
    pub fn wal_dir_prefix(&self, segment: &SegmentName) -> String {
        format!("{}wals/{}/", self.root, segment.hash_dir())
    }

    /// Parses a key under `wals/`: the WAL file it holds and its suffix.
    /// Keys that are not WAL files, or that sit in the wrong hash directory
    /// for their name, are `None`.
    pub fn parse_wal_key(&self, key: &str) -> Option<WalKey> {
        let rest = key
            .strip_prefix(self.root.as_str())?
            .strip_prefix("wals/")?;
        let (dir, file) = match rest.split_once('/') {
            Some((dir, file)) => (Some(dir), file),
            None => (None, rest),
        };
        let parsed = wal_file_with_suffix(file)?;
        (parsed.name.hash_dir().as_deref() == dir).then_some(parsed)
    }

    /// The backup directory a key under `base/` belongs to, and what the
    /// object is.
    pub fn parse_backup_key(&self, key: &str) -> Option<(BackupId, BackupFile)> {
        let rest = key
            .strip_prefix(self.root.as_str())?
            .strip_prefix("base/")?;
        let (id, file) = rest.split_once('/')?;
        let id: BackupId = id.parse().ok()?;
        let kind = if file == "backup.info" {
            BackupFile::Info
        } else if let Some((stem, suffix)) = tar_stem(file) {
            if stem == "data" {
                BackupFile::Data { part: 0, suffix }
            } else if let Some(part) = stem
                .strip_prefix("data_")
                .filter(|p| p.len() == 4)
                .and_then(|p| p.parse().ok())
            {
                BackupFile::Data { part, suffix }
            } else if let Ok(oid) = stem.parse() {
                BackupFile::Tablespace { oid, suffix }
            } else {
                BackupFile::Other
            }
        } else {
            BackupFile::Other
        };
        Some((id, kind))
    }

    /// The compression suffix of one of a backup's objects: a tar under
    /// `base/<id>/`, or the manifest under `pitr/backups/<id>/`.
    pub fn backup_object_suffix(&self, key: &str) -> &'static str {
        if let Some((_, file)) = self.parse_backup_key(key) {
            return file.suffix();
        }
        let manifest = key
            .strip_prefix(self.root.as_str())
            .and_then(|r| r.strip_prefix("pitr/backups/"))
            .and_then(|r| r.split_once('/'))
            .and_then(|(_, file)| file.strip_prefix("backup_manifest"));
        manifest
            .and_then(|rest| KNOWN_SUFFIXES.iter().find(|s| **s == rest))
            .copied()
            .unwrap_or("")
    }

    /// Where backups live: `<server>/base/`.
    pub fn base_prefix(&self) -> String {
        format!("{}base/", self.root)
    }

    /// Barman's metadata of one backup.
    pub fn backup_info_key(&self, id: &BackupId) -> String {
        format!("{}base/{id}/backup.info", self.root)
    }

    /// PGDATA's tar (Barman names it `data.tar[.gz]`).
    pub fn backup_data_key(&self, id: &BackupId, suffix: &str) -> String {
        format!("{}base/{id}/data.tar{suffix}", self.root)
    }

    /// A tablespace's tar, members relative to the tablespace directory.
    pub fn backup_tablespace_key(&self, id: &BackupId, oid: u32, suffix: &str) -> String {
        format!("{}base/{id}/{oid}.tar{suffix}", self.root)
    }

    /// Barman's keep annotation of one backup (barman-cloud-backup-keep):
    /// its body is the recovery target, `full` or `standalone`.
    pub fn keep_annotation_key(&self, id: &BackupId) -> String {
        format!("{}base/{id}/annotations/keep", self.root)
    }

    /// Everything of one backup in Barman's part of the layout.
    pub fn backup_prefix(&self, id: &BackupId) -> String {
        format!("{}base/{id}/", self.root)
    }

    /// pitr's own objects for one backup (manifest, details), outside
    /// `base/` so that Barman's tools never see them.
    pub fn pitr_backup_prefix(&self, id: &BackupId) -> String {
        format!("{}pitr/backups/{id}/", self.root)
    }

    /// Where pitr's own objects of every backup live: `pitr/backups/`.
    pub fn pitr_backups_prefix(&self) -> String {
        format!("{}pitr/backups/", self.root)
    }

    /// The backup a key under `pitr/backups/` belongs to.
    pub fn parse_pitr_backup_key(&self, key: &str) -> Option<BackupId> {
        let rest = key
            .strip_prefix(self.root.as_str())?
            .strip_prefix("pitr/backups/")?;
        rest.split_once('/')?.0.parse().ok()
    }

    /// The server's backup manifest, as it sent it.
    pub fn backup_manifest_key(&self, id: &BackupId, suffix: &str) -> String {
        format!("{}backup_manifest{suffix}", self.pitr_backup_prefix(id))
    }

    /// pitr's details of a backup (objects, sizes, checksums, encoding).
    pub fn backup_details_key(&self, id: &BackupId) -> String {
        format!("{}pitr.json", self.pitr_backup_prefix(id))
    }

    /// The small object `wal-push` writes twice to learn whether the store
    /// refuses to overwrite (see `wal::push_cache`).
    pub fn conditional_probe_key(&self) -> String {
        format!("{}pitr/conditional-put-probe", self.root)
    }

    /// One of pitr's state records (see [`crate::state`]).
    pub fn state_key(&self, kind: &str) -> String {
        format!("{}pitr/state/{kind}.json", self.root)
    }

    /// A short-lived object `pitr check` writes, reads and deletes.
    pub fn check_key(&self, token: &str) -> String {
        format!("{}pitr/check-{token}", self.root)
    }

    /// pitr's record of which database system this repository belongs to.
    pub fn identity_key(&self) -> String {
        format!("{}pitr/identity.json", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barman_keys() {
        let l = Layout::new("/pg/", "main");
        let seg: WalFileName = "000000010000000A000000FE".parse().unwrap();
        assert_eq!(
            l.wal_key(&seg, ".gz"),
            "pg/main/wals/000000010000000A/000000010000000A000000FE.gz"
        );
        let hist: WalFileName = "00000002.history".parse().unwrap();
        assert_eq!(l.wal_key(&hist, ""), "pg/main/wals/00000002.history");
        assert_eq!(
            Layout::new("", "main").identity_key(),
            "main/pitr/identity.json"
        );
    }

    #[test]
    fn parses_every_wal_key_and_nothing_else() {
        let l = Layout::new("pg", "main");
        let parse = |k: &str| l.parse_wal_key(k).map(|w| (w.name.to_string(), w.suffix));
        let seg = "pg/main/wals/0000000100000000/000000010000000000000002";
        assert_eq!(
            parse(&format!("{seg}.gz")),
            Some((seg[30..].to_string(), ".gz"))
        );
        assert_eq!(parse(seg), Some((seg[30..].to_string(), "")));
        assert_eq!(
            parse("pg/main/wals/00000002.history.gz"),
            Some(("00000002.history".into(), ".gz"))
        );
        assert_eq!(
            parse(&format!("{seg}.00000028.backup.zst")),
            Some(("000000010000000000000002.00000028.backup".into(), ".zst"))
        );
        assert_eq!(
            parse(&format!("{seg}.partial")),
            Some(("000000010000000000000002.partial".into(), ""))
        );
        // Wrong hash directory, history inside a directory, foreign files,
        // another server.
        assert_eq!(
            parse("pg/main/wals/0000000100000001/000000010000000000000002"),
            None
        );
        assert_eq!(
            parse("pg/main/wals/0000000100000000/00000002.history"),
            None
        );
        assert_eq!(parse("pg/main/wals/0000000100000000/notes.txt"), None);
        assert_eq!(parse(&format!("{seg}.gz.tmp")), None);
        assert_eq!(
            parse("pg/other/wals/0000000100000000/000000010000000000000002"),
            None
        );
    }

    #[test]
    fn parses_backup_objects() {
        let l = Layout::new("", "s");
        let id: BackupId = "20261201T101010".parse().unwrap();
        let kind = |f: &str| l.parse_backup_key(&format!("s/base/20261201T101010/{f}"));
        assert_eq!(kind("backup.info"), Some((id.clone(), BackupFile::Info)));
        assert_eq!(
            kind("data.tar.gz"),
            Some((
                id.clone(),
                BackupFile::Data {
                    part: 0,
                    suffix: ".gz"
                }
            ))
        );
        assert_eq!(
            kind("data_0002.tar"),
            Some((
                id.clone(),
                BackupFile::Data {
                    part: 2,
                    suffix: ""
                }
            ))
        );
        assert_eq!(
            kind("16385.tar.gz"),
            Some((
                id.clone(),
                BackupFile::Tablespace {
                    oid: 16385,
                    suffix: ".gz"
                }
            ))
        );
        assert_eq!(
            kind("annotations/keep"),
            Some((id.clone(), BackupFile::Other))
        );
        assert_eq!(
            kind("data.tar.gz.part"),
            Some((id.clone(), BackupFile::Other))
        );
        assert_eq!(l.parse_backup_key("s/base/not-an-id/backup.info"), None);
        assert_eq!(
            l.backup_object_suffix(&l.backup_manifest_key(&id, ".gz")),
            ".gz"
        );
        assert_eq!(l.backup_object_suffix(&l.backup_manifest_key(&id, "")), "");
        assert_eq!(
            l.backup_object_suffix(&l.backup_tablespace_key(&id, 7, ".gz")),
            ".gz"
        );
        assert_eq!(
            l.backup_data_key(&id, ".gz"),
            "s/base/20261201T101010/data.tar.gz"
        );
    }

    #[test]
    fn suffix_detection_ignores_neighbours() {
        let l = Layout::new("p", "s");
        let seg: WalFileName = "000000010000000000000002".parse().unwrap();
        let base = l.wal_key(&seg, "");
        assert_eq!(l.wal_suffix_of(&seg, &format!("{base}.gz")), Some(".gz"));
        assert_eq!(l.wal_suffix_of(&seg, &base), Some(""));
        assert_eq!(
            l.wal_suffix_of(&seg, &format!("{base}.00000028.backup.gz")),
            None
        );
        assert_eq!(l.wal_suffix_of(&seg, &format!("{base}.partial")), None);
    }
}
