//! A restore that was cut short (killed, the machine lost power) must not
//! leave a data directory PostgreSQL would start from, and a rerun must be
//! able to replace it. While a restore runs:
//!
//! - every target directory (PGDATA, each tablespace's, `--waldir`) holds
//!   [`MARKER`], a note saying what was being restored and how to retry;
//! - PGDATA's `PG_VERSION` is extracted as [`HELD_BACK`]: without
//!   `PG_VERSION`, PostgreSQL refuses the directory ("is not a valid data
//!   directory"), so a partial PGDATA cannot be started by mistake.
//!
//! [`complete`] undoes both, in an order where a crash at any point leaves
//! either a directory a rerun replaces, or a complete restore.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;

/// The note in every target directory of a restore that has not finished.
pub const MARKER: &str = "pitr-restore-incomplete";

/// The name PGDATA's `PG_VERSION` is extracted under until the restore is complete.
pub const HELD_BACK: &str = "PG_VERSION.pitr-incomplete";

/// Whether `dir` holds what an unfinished pitr restore left, and nothing a
/// server could run from: the marker, and (for PGDATA) no `PG_VERSION`.
/// Such a directory is replaced by the next restore without `--force`.
pub fn interrupted(dir: &Path, is_pgdata: bool) -> bool {
    dir.join(MARKER).is_file() && !(is_pgdata && dir.join("PG_VERSION").exists())
}

/// Writes the marker into `dir` (which exists), fsynced with its directory.
pub fn mark(dir: &Path, backup_id: &str, pgdata: &Path) -> Result<()> {
    let note = format!(
        "pitr restore of backup {backup_id} into {} started at {} and has not finished.\n\
         This directory is incomplete and PostgreSQL must not run from it.\n\
         To retry, run the same `pitr restore` again: it replaces what is here.\n",
        pgdata.display(),
        Utc::now().to_rfc3339()
    );
    let path = dir.join(MARKER);
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&path)?;
        io::Write::write_all(&mut f, note.as_bytes())?;
        f.sync_all()?;
        fsync_dir(dir)
    };
    write().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Finishes a restore whose content is all written and fsynced: removes the
/// other directories' markers, puts `PG_VERSION` in place, then removes
/// PGDATA's marker. A crash before `PG_VERSION` is in place leaves PGDATA
/// marked and unstartable (a rerun replaces it); after, PGDATA is complete.
pub fn complete(pgdata: &Path, others: &[PathBuf]) -> Result<()> {
    let io = |what: &str, path: &Path, e: io::Error| {
        Error::io(format!("cannot {what} {}", path.display()), e)
    };
    for d in others {
        let m = d.join(MARKER);
        fs::remove_file(&m).map_err(|e| io("remove", &m, e))?;
        fsync_dir(d).map_err(|e| io("fsync", d, e))?;
    }
    let held = pgdata.join(HELD_BACK);
    if held.exists() {
        let version = pgdata.join("PG_VERSION");
        fs::rename(&held, &version).map_err(|e| io("rename", &held, e))?;
        fsync_dir(pgdata).map_err(|e| io("fsync", pgdata, e))?;
    }
    let m = pgdata.join(MARKER);
    fs::remove_file(&m).map_err(|e| io("remove", &m, e))?;
    fsync_dir(pgdata).map_err(|e| io("fsync", pgdata, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_directory_is_interrupted_until_complete() {
        let root = tempfile::tempdir().unwrap();
        let pgdata = root.path().join("pgdata");
        let ts = root.path().join("ts");
        fs::create_dir(&pgdata).unwrap();
        fs::create_dir(&ts).unwrap();
        assert!(!interrupted(&pgdata, true), "no marker: not pitr's");
        mark(&pgdata, "20261202T010203", &pgdata).unwrap();
        mark(&ts, "20261202T010203", &pgdata).unwrap();
        fs::write(pgdata.join(HELD_BACK), "15\n").unwrap();
        let note = fs::read_to_string(pgdata.join(MARKER)).unwrap();
        assert!(
            note.contains("20261202T010203") && note.contains("run the same `pitr restore` again")
        );
        assert!(interrupted(&pgdata, true) && interrupted(&ts, false));

        complete(&pgdata, std::slice::from_ref(&ts)).unwrap();
        assert_eq!(
            fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
            "15\n"
        );
        assert!(!pgdata.join(HELD_BACK).exists());
        assert!(!interrupted(&pgdata, true) && !interrupted(&ts, false));
    }

    #[test]
    fn a_marker_beside_pg_version_is_not_replaced_silently() {
        // A crash between putting PG_VERSION in place and removing the
        // marker leaves a complete PGDATA: a rerun must not wipe it unasked.
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join(MARKER), "x").unwrap();
        fs::write(root.path().join("PG_VERSION"), "15\n").unwrap();
        assert!(!interrupted(root.path(), true));
        assert!(interrupted(root.path(), false));
    }
}
