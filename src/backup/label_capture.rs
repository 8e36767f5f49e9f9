//! Watches PGDATA's tar go by during a backup: captures backup_label for
//! backup.info, and drops the `pg_tblspc/<oid>` symbolic links.

use std::collections::BTreeMap;

use crate::tar_walk::{TarMember, TarVisitor};

/// Members larger than this are never captured.
const MAX_CAPTURE: u64 = 1 << 20;

pub struct Capture {
    wanted: Vec<String>,
    capturing: Option<String>,
    pub captured: BTreeMap<String, Vec<u8>>,
}

impl Capture {
    pub fn new(wanted: &[&str]) -> Self {
        Capture {
            wanted: wanted.iter().map(|s| s.to_string()).collect(),
            capturing: None,
            captured: BTreeMap::new(),
        }
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.captured
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

impl TarVisitor for Capture {
    /// Drops the `pg_tblspc/<oid>` symbolic links: restores create them from
    /// backup.info's tablespace list (where they can be relocated), as
    /// Barman's own backups expect; a link already in the tar would make
    /// barman-cloud-restore fail and would point at the original location.
    fn keep(&self, m: &TarMember) -> bool {
        !(m.kind == b'2' && m.name.starts_with("pg_tblspc/"))
    }

    fn start(&mut self, m: &TarMember) {
        self.capturing = (m.is_file() && m.size <= MAX_CAPTURE && self.wanted.contains(&m.name))
            .then(|| {
                self.captured.insert(m.name.clone(), Vec::new());
                m.name.clone()
            });
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Some(name) = &self.capturing {
            self.captured
                .get_mut(name)
                .expect("started")
                .extend_from_slice(bytes);
        }
    }

    fn end(&mut self) {
        self.capturing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar_walk::tests::{end_marker, member, symlink};
    use crate::tar_walk::TarWalker;

    #[test]
    fn captures_the_label_and_drops_tablespace_links() {
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(symlink("pg_tblspc/16384", "/srv/ts"));
        tar.extend(member("backup_label", b"START WAL LOCATION: 0/2000028\n"));
        tar.extend(end_marker());
        let mut w = TarWalker::new("base.tar", Capture::new(&["backup_label"]));
        let out: Vec<u8> = w.filter(&bytes::Bytes::from(tar)).unwrap().concat();
        w.finish().unwrap();
        assert_eq!(
            w.visitor.text("backup_label").as_deref(),
            Some("START WAL LOCATION: 0/2000028\n")
        );
        let mut check = TarWalker::new("filtered", Capture::new(&[]));
        check.feed(&out).unwrap();
        check.finish().unwrap();
        assert!(
            !out.windows(15).any(|w| w == b"pg_tblspc/16384"),
            "link dropped"
        );
    }
}
