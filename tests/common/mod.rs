//! Test support: real servers only. The S3 server is the throw-away Ceph RGW
//! that `tests/run.sh` starts (its settings arrive as PITR_TEST_S3_*);
//! PostgreSQL clusters are made here, one directory and socket per test, and
//! run as the `postgres` OS user when the tests run as root.

#![allow(dead_code)]

pub mod pg;
pub mod s3;
pub mod stop_point;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The pitr binary under test. Cargo names it only to the root package's
/// tests; other workspace members (the CNPG-I plugin) that include this
/// module find it beside their own binaries, or at PITR_TEST_PITR_BIN.
pub fn pitr_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_pitr") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("PITR_TEST_PITR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/pitr
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("pitr"))
        .expect("the test binary lives in target/<profile>/deps")
}

/// True when the tests run as root (then PostgreSQL runs as `postgres`).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A unique, short name for buckets, directories and server names.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff
    )
}

/// A temporary directory the `postgres` user can use; removed on drop
/// unless PITR_TEST_KEEP is set.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let path = PathBuf::from(format!("/tmp/pitr-t-{}", unique(tag)));
        std::fs::create_dir_all(&path).unwrap();
        if running_as_root() {
            chown_postgres(&path);
        }
        TestDir { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("PITR_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "chown postgres {}", path.display());
}

/// A command run as the `postgres` OS user when we are root.
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The result of one pitr run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stderr: String,
    pub stdout: String,
}

/// A pitr command with a clean environment: only what the test sets.
pub fn pitr() -> Command {
    let mut c = Command::new(pitr_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PITR_") || k.starts_with("AWS_") || k.starts_with("S3_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// The first WAL segment of a freshly initialised cluster (no server is
/// started): a real segment with a real system identifier, copied to `dir`.
pub fn fresh_segment(dir: &TestDir, name: &str) -> PathBuf {
    let data = dir.join(format!("initdb-{name}"));
    pg::initdb(&data);
    let src = data.join("pg_wal/000000010000000000000001");
    let dst_dir = dir.join(format!("seg-{name}"));
    std::fs::create_dir_all(&dst_dir).unwrap();
    let dst = dst_dir.join("000000010000000000000001");
    std::fs::copy(&src, &dst).unwrap();
    dst
}

/// The barman-cloud venv that tests/run.sh prepared.
pub fn barman_venv() -> String {
    std::env::var("PITR_TEST_BARMAN_VENV").unwrap_or_else(|_| {
        panic!("PITR_TEST_BARMAN_VENV is not set: run the tests with `bash tests/run.sh`")
    })
}
