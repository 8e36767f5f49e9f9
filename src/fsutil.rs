//! Local-file helpers for writing atomically: a hidden temporary name in the
//! same directory, fsync, rename, fsync of the directory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Makes a rename or link in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary name beside `path`, hidden from listings (leading dot).
pub fn temp_beside(path: &Path) -> PathBuf {
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.pitr-tmp-{}-{}",
        std::process::id(),
        hex::encode(rnd)
    ))
}

/// Removes the temporary files [`temp_beside`] made for `path` whose
/// process is gone (killed before it could rename or remove them); those
/// of a live process are left alone. Returns how many it removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let prefix = format!(".{name}.pitr-tmp-");
    let Ok(entries) = std::fs::read_dir(parent_dir(path)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes a temporary file when dropped, unless it was persisted.
pub struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    pub fn new(path: PathBuf) -> Self {
        TempGuard { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `dest` and makes the rename durable.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.armed = false;
        fsync_dir(parent_dir(dest))
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_dead_processes_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let mine = temp_beside(&dest);
        std::fs::write(&mine, "in progress").unwrap();
        // A pid above the kernel's maximum is never alive.
        let dead = dir.path().join(".RECOVERYXLOG.pitr-tmp-99999999-abcdef");
        std::fs::write(&dead, "half a segment").unwrap();
        let other = dir.path().join(".OTHER.pitr-tmp-99999999-abcdef");
        std::fs::write(&other, "another file's").unwrap();
        assert_eq!(remove_stale_temps(&dest), 1);
        assert!(!dead.exists());
        assert!(mine.exists(), "this process's own temp stays");
        assert!(other.exists(), "only temps of this destination");
    }
}
