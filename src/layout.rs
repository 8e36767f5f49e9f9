//! Where things live in the store: Barman's layout, and nothing else builds
//! keys.
//!
//! ```text
//! <prefix>/<server>/wals/<TLI><LOG>/<segment>[.gz]
//! <prefix>/<server>/wals/<TLI>.history[.gz]
//! <prefix>/<server>/base/<backup-id>/backup.info
//! <prefix>/<server>/base/<backup-id>/data.tar[.gz]
//! <prefix>/<server>/base/<backup-id>/<tablespace-oid>.tar[.gz]
//! <prefix>/<server>/pitr/identity.json                      pitr's own, ignored by Barman
//! <prefix>/<server>/pitr/backups/<backup-id>/backup_manifest.gz, pitr.json
//! ```

use crate::backup::BackupId;
use crate::codec::compression::KNOWN_SUFFIXES;
use crate::wal::WalFileName;

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

    /// Everything of one backup in Barman's part of the layout.
    pub fn backup_prefix(&self, id: &BackupId) -> String {
        format!("{}base/{id}/", self.root)
    }

    /// pitr's own objects for one backup (manifest, details), outside
    /// `base/` so that Barman's tools never see them.
    pub fn pitr_backup_prefix(&self, id: &BackupId) -> String {
        format!("{}pitr/backups/{id}/", self.root)
    }

    /// The server's backup manifest, as it sent it.
    pub fn backup_manifest_key(&self, id: &BackupId, suffix: &str) -> String {
        format!("{}backup_manifest{suffix}", self.pitr_backup_prefix(id))
    }

    /// pitr's details of a backup (objects, sizes, checksums, encoding).
    pub fn backup_details_key(&self, id: &BackupId) -> String {
        format!("{}pitr.json", self.pitr_backup_prefix(id))
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
