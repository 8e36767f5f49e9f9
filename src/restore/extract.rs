//! Extracting a backup's tar into a directory as it streams, refusing any
//! member that would land outside it: absolute names, `..`, and links that
//! leave the directory. Each file is fsynced as it is closed; the
//! directories written into are collected for one fsync each at the end.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Error;
use crate::tar_walk::{TarMember, TarVisitor, TarWalker};

/// `name` as a path inside the target, or why it is unsafe.
fn safe_relative(name: &str) -> Result<PathBuf, String> {
    if name.contains('\0') {
        return Err("has an invalid name".into());
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute name".into()),
            Component::ParentDir => return Err("has '..' in its name".into()),
        }
    }
    Ok(out)
}

/// Where a relative link at `at` (inside the target) points, if it stays inside.
fn link_stays_inside(at: &Path, link: &str) -> bool {
    if Path::new(link).is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> =
        at.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for c in Path::new(link).components() {
        match c {
            Component::Normal(p) => depth.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

pub struct Extractor {
    root: PathBuf,
    archive: String,
    /// The file being written, and where.
    file: Option<(File, PathBuf)>,
    pub error: Option<Error>,
    pub files: u64,
    pub bytes: Arc<AtomicU64>,
    /// Every directory created or written into (the root included), to
    /// fsync once the restore is complete.
    pub dirs: BTreeSet<PathBuf>,
    /// A member written under another name (`writing_as`).
    renamed: Option<(PathBuf, PathBuf)>,
    /// Every symbolic link created, checked again once the archive is
    /// whole (a link that looked inside can leave through a later one).
    links: Vec<(String, PathBuf)>,
}

impl Extractor {
    pub fn new(root: &Path, archive: &str, bytes: Arc<AtomicU64>) -> Self {
        Extractor {
            root: root.to_path_buf(),
            archive: archive.to_string(),
            file: None,
            error: None,
            files: 0,
            bytes,
            dirs: BTreeSet::new(),
            renamed: None,
            links: Vec::new(),
        }
    }

    /// Writes the member named `name` (relative to the root) as `as_name`.
    pub fn writing_as(mut self, name: &str, as_name: &str) -> Self {
        self.renamed = Some((PathBuf::from(name), PathBuf::from(as_name)));
        self
    }

    fn refuse(&self, m: &TarMember, why: &str) -> Error {
        Error::Corrupt(format!(
            "{}: member '{}' {why}: refusing to restore it (it could land outside {})",
            self.archive,
            m.name,
            self.root.display()
        ))
    }

    /// Refuses `rel` (a path inside the target, for member `m`) if any of
    /// its directories, or itself when `last`, is a symbolic link already
    /// there: nothing is written through a link, which could lead anywhere.
    fn no_link_on_the_way(&self, m: &TarMember, rel: &Path, last: bool) -> Result<(), Error> {
        let parts: Vec<_> = rel.components().collect();
        let upto = if last {
            parts.len()
        } else {
            parts.len().saturating_sub(1)
        };
        let mut at = self.root.clone();
        for (i, c) in parts.iter().take(upto).enumerate() {
            at.push(c);
            if fs::symlink_metadata(&at).is_ok_and(|md| md.file_type().is_symlink()) {
                let link: PathBuf = parts[..=i].iter().collect();
                return Err(self.refuse(
                    m,
                    &format!("would be written through the link '{}'", link.display()),
                ));
            }
        }
        Ok(())
    }

    /// Checks, once every member is in place, that each symbolic link the
    /// archive made resolves inside the target (or nowhere).
    pub fn check_links(&self) -> Result<(), Error> {
        let root = fs::canonicalize(&self.root).map_err(|e| self.io("resolve", &self.root, e))?;
        for (name, path) in &self.links {
            if let Ok(to) = fs::canonicalize(path) {
                if !to.starts_with(&root) {
                    return Err(Error::Corrupt(format!(
                        "{}: link '{name}' resolves to {}, outside {}: the archive is hostile \
                         or damaged; do not start a server on {}",
                        self.archive,
                        to.display(),
                        self.root.display(),
                        self.root.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Notes `dir` and its ancestors up to the root as written into.
    fn note_dir(&mut self, dir: &Path) {
        let mut at = Some(dir);
        while let Some(d) = at {
            if !d.starts_with(&self.root) || !self.dirs.insert(d.to_path_buf()) {
                return; // outside, or noted before (with its ancestors)
            }
            at = d.parent();
        }
    }

    /// Closes the file being written, fsynced.
    fn close(&mut self) -> Result<(), Error> {
        match self.file.take() {
            Some((f, path)) => f.sync_all().map_err(|e| self.io("fsync", &path, e)),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) {
        self.file = None;
        self.error.get_or_insert(e);
    }

    fn io(&self, what: &str, path: &Path, e: io::Error) -> Error {
        Error::io(
            format!(
                "restoring {}: cannot {what} {}",
                self.archive,
                path.display()
            ),
            e,
        )
    }

    fn create(&mut self, m: &TarMember) -> Result<(), Error> {
        let rel = safe_relative(&m.name).map_err(|why| {
            Error::Corrupt(format!(
                "{}: member '{}' {why}: refusing to restore it (it would land outside {})",
                self.archive,
                m.name,
                self.root.display()
            ))
        })?;
        if rel.as_os_str().is_empty() {
            // "." or "./": the target directory itself (Barman's tars start with it).
            return match m.kind {
                b'5' => Ok(()),
                _ => Err(Error::Corrupt(format!(
                    "{}: member '{}' has no name: refusing to restore it",
                    self.archive, m.name
                ))),
            };
        }
        let rel = match &self.renamed {
            Some((from, to)) if *from == rel => to.clone(),
            _ => rel,
        };
        // Directories may be there already (from the archive or the
        // target); files and links are replaced, never written through.
        self.no_link_on_the_way(m, &rel, true)?;
        let path = self.root.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| self.io("create", parent, e))?;
            self.note_dir(parent);
        }
        match m.kind {
            b'5' => {
                fs::create_dir_all(&path).map_err(|e| self.io("create", &path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| self.io("chmod", &path, e))?;
                self.note_dir(&path);
            }
            b'2' | b'1' => {
                let inside = match m.kind {
                    b'2' => link_stays_inside(&rel, &m.link),
                    _ => match safe_relative(&m.link) {
                        Ok(to) => {
                            self.no_link_on_the_way(m, &to, true)?;
                            true
                        }
                        Err(_) => false,
                    },
                };
                if !inside {
                    return Err(Error::Corrupt(format!(
                        "{}: link '{}' -> '{}' leaves {}: refusing to restore it",
                        self.archive,
                        m.name,
                        m.link,
                        self.root.display()
                    )));
                }
                let _ = fs::remove_file(&path);
                if m.kind == b'2' {
                    symlink(&m.link, &path).map_err(|e| self.io("link", &path, e))?;
                    self.links.push((m.name.clone(), path));
                } else {
                    fs::hard_link(self.root.join(&m.link), &path)
                        .map_err(|e| self.io("link", &path, e))?;
                }
            }
            _ if m.is_file() => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| self.io("create", &path, e))?;
                self.files += 1;
                if self.files == 20 {
                    crate::fault_point::reached("restore-extracting", &self.archive);
                }
                self.file = Some((file, path));
            }
            other => {
                return Err(Error::Corrupt(format!(
                    "{}: member '{}' has type '{}', which a PostgreSQL backup never holds",
                    self.archive, m.name, other as char
                )))
            }
        }
        Ok(())
    }
}

impl TarVisitor for Extractor {
    fn start(&mut self, m: &TarMember) {
        if self.error.is_none() {
            if let Err(e) = self.create(m) {
                self.fail(e);
            }
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Some((f, _)) = &mut self.file {
            if let Err(e) = f.write_all(bytes) {
                let err = Error::io(format!("restoring {}: cannot write", self.archive), e);
                self.fail(err);
                return;
            }
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }

    fn end(&mut self) {
        if let Err(e) = self.close() {
            self.fail(e);
        }
    }
}

/// The `Write` end the download pipes decoded bytes into.
pub struct ExtractSink {
    pub walker: TarWalker<Extractor>,
}

impl ExtractSink {
    /// Called at the end of the stream: the archive ended properly and no
    /// link it made leads outside the target.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.walker.finish()?;
        self.walker.visitor.check_links()
    }
}

impl Write for ExtractSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fed = self.walker.feed(buf);
        if let Some(e) = self.walker.visitor.error.take() {
            return Err(io::Error::other(e));
        }
        fed.map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar_walk::tests::{end_marker, header, member, symlink as link_member};

    /// Extracts `tar` into `root`, as restore does: the directories written
    /// into, or the error.
    fn extract(tar: &[u8], root: &Path) -> Result<BTreeSet<PathBuf>, Error> {
        let mut sink = ExtractSink {
            walker: TarWalker::new(
                "test.tar",
                Extractor::new(root, "test.tar", Arc::new(AtomicU64::new(0))),
            ),
        };
        sink.write_all(tar)
            .map_err(|e| Error::from_pipeline("x", e))?;
        sink.finish()?;
        Ok(sink.walker.visitor.dirs)
    }

    #[test]
    fn extracts_files_dirs_and_inside_links() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = header("./", 0, b'5');
        tar.extend(header("base", 0, b'5'));
        tar.extend(member("base/1/1", b"page"));
        tar.extend(link_member("base/link", "1/1"));
        tar.extend(member("PG_VERSION", b"15\n"));
        tar.extend(end_marker());
        let dirs = extract(&tar, dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("base/1/1")).unwrap(), b"page");
        assert_eq!(fs::read(dir.path().join("base/link")).unwrap(), b"page");
        let mode = fs::metadata(dir.path().join("base/1/1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "no group or other access");
        // Every directory written into is there to be fsynced, and only those.
        let expected: BTreeSet<PathBuf> = ["", "base", "base/1"]
            .iter()
            .map(|d| dir.path().join(d).components().collect())
            .collect();
        let dirs: BTreeSet<PathBuf> = dirs.iter().map(|d| d.components().collect()).collect();
        assert_eq!(dirs, expected);
    }

    #[test]
    fn a_member_can_be_written_under_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(member("base/PG_VERSION", b"15\n"));
        tar.extend(end_marker());
        let mut sink = ExtractSink {
            walker: TarWalker::new(
                "test.tar",
                Extractor::new(dir.path(), "test.tar", Arc::new(AtomicU64::new(0)))
                    .writing_as("PG_VERSION", "PG_VERSION.held"),
            ),
        };
        sink.write_all(&tar).unwrap();
        sink.walker.finish().unwrap();
        assert!(!dir.path().join("PG_VERSION").exists());
        assert_eq!(
            fs::read(dir.path().join("PG_VERSION.held")).unwrap(),
            b"15\n"
        );
        // Only that member: a database's PG_VERSION keeps its name.
        assert_eq!(
            fs::read(dir.path().join("base/PG_VERSION")).unwrap(),
            b"15\n"
        );
    }

    #[test]
    fn a_truncated_tar_is_an_error_not_a_short_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(member("base/1/1", &[3u8; 3000]));
        let e = extract(&tar[..2048], dir.path()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
        assert!(e.to_string().contains("inside member 'base/1/1'"), "{e}");
        let e = extract(&tar, dir.path()).unwrap_err().to_string();
        assert!(e.contains("without the end-of-archive marker"), "{e}");
    }

    #[test]
    fn refuses_members_that_leave_the_target() {
        for (tar, what) in [
            (member("../evil", b"x"), "'..'"),
            (member("/etc/evil", b"x"), "absolute"),
            (link_member("up", "../../etc"), "leaves"),
            (link_member("abs", "/etc/passwd"), "leaves"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("pgdata");
            fs::create_dir(&root).unwrap();
            let e = extract(&tar, &root).unwrap_err().to_string();
            assert!(
                e.contains("refusing to restore it") && e.contains(what),
                "{e}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    fn hard_link_member(name: &str, target: &str) -> Vec<u8> {
        let mut h = header(name, 0, b'1');
        h[157..157 + target.len()].copy_from_slice(target.as_bytes());
        crate::tar_walk::tests::seal(&mut h);
        h
    }

    /// Each tar is refused with an error naming the member, and nothing
    /// lands outside the target, nor is anything outside linked into it.
    fn refused(tar: Vec<u8>, expect: &str) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pgdata");
        fs::create_dir(&root).unwrap();
        fs::write(dir.path().join("outside"), b"secret").unwrap();
        let mut tar = tar;
        tar.extend(end_marker());
        let e = extract(&tar, &root).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{e}");
        let e = e.to_string();
        assert!(e.contains("test.tar") && e.contains(expect), "{e}");
        assert!(!dir.path().join("evil").exists(), "{e}");
        assert_eq!(fs::read(dir.path().join("outside")).unwrap(), b"secret");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "nothing new beside the target: {names:?}");
    }

    #[test]
    fn refuses_writing_through_a_link_even_one_that_looks_inside() {
        // "s" -> "." is inside, and so, lexically, is "t" -> "s/s/.." ; but
        // s/s is the target itself, so t is its parent.
        let mut tar = link_member("s", ".");
        tar.extend(link_member("t", "s/s/.."));
        tar.extend(member("t/evil", b"x"));
        refused(tar, "'t/evil'");
        // A directory link, then a file written through it.
        let mut tar = link_member("s", ".");
        tar.extend(member("s/PG_VERSION", b"15"));
        refused(tar, "'s/PG_VERSION'");
        // A hard link whose target passes through a link.
        let mut tar = link_member("s", ".");
        tar.extend(link_member("t", "s/s/.."));
        tar.extend(hard_link_member("pw", "t/outside"));
        refused(tar, "'pw'");
        // A file member written onto a link that is already there.
        let mut tar = link_member("f", "s/s/../outside");
        tar.extend(link_member("s", "."));
        tar.extend(member("f", b"overwritten"));
        refused(tar, "'f'");
        // Links alone, in an order where each looked inside when it was
        // made: caught once the archive is whole.
        let mut tar = link_member("t", "s/s/..");
        tar.extend(link_member("s", "."));
        refused(tar, "link 't' resolves to");
    }

    #[test]
    fn refuses_devices_fifos_and_huge_claims() {
        for kind in [b'3', b'4', b'6'] {
            refused(
                header("dev", 0, kind),
                "which a PostgreSQL backup never holds",
            );
        }
        // A member that claims 8 GiB and ends after a block: truncated, named.
        let dir = tempfile::tempdir().unwrap();
        let mut tar = header("base/1/1", 0, b'0');
        tar[124..136].copy_from_slice(b"77777777777\0");
        crate::tar_walk::tests::seal(&mut tar[..512]);
        tar.extend([7u8; 512]);
        let e = extract(&tar, dir.path()).unwrap_err().to_string();
        assert!(e.contains("'base/1/1'") && e.contains("truncated"), "{e}");
    }
}
