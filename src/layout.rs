//! Where things live in the store: Barman's layout, and nothing else builds
//! keys.
//!
//! ```text
//! <prefix>/<server>/wals/<TLI><LOG>/<segment>[.gz]
//! <prefix>/<server>/wals/<TLI>.history[.gz]
//! <prefix>/<server>/base/<backup-id>/...
//! <prefix>/<server>/pitr/identity.json        pitr's own, ignored by Barman
//! ```

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
