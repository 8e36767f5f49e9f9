//! Freezing a pitr process at a named stop point (src/fault_point.rs, debug
//! builds) to kill it there or let it go on: the test waits for the stop
//! file the process writes before it stops itself, never for a time.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A directory where stopped processes leave their stop files.
pub struct StopPoints {
    pub dir: PathBuf,
}

/// A process frozen at a stop point.
#[derive(Debug)]
pub struct Stopped {
    pub pid: String,
    /// What the process was doing (a key, a segment name).
    pub detail: String,
    file: PathBuf,
}

impl StopPoints {
    /// Stop files go into `dir` (created; the postgres user may write there).
    pub fn new(dir: PathBuf) -> StopPoints {
        std::fs::create_dir_all(&dir).unwrap();
        if super::running_as_root() {
            super::chown_postgres(&dir);
        }
        StopPoints { dir }
    }

    /// The environment that makes a pitr process stop at `point`.
    pub fn env(&self, point: &str) -> Vec<(String, String)> {
        vec![
            ("PITR_TEST_STOP_AT".into(), point.into()),
            ("PITR_TEST_STOP_DIR".into(), self.dir.display().to_string()),
        ]
    }

    /// `PITR_TEST_STOP_AT=... PITR_TEST_STOP_DIR=...`, to prefix a shell
    /// command such as an archive_command.
    pub fn shell_prefix(&self, point: &str) -> String {
        format!(
            "PITR_TEST_STOP_AT={point} PITR_TEST_STOP_DIR={}",
            self.dir.display()
        )
    }

    /// The stop files present now, oldest name first.
    fn found(&self, point: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(&format!("{point}."))
                    && p.extension().and_then(|x| x.to_str()) != Some("tmp")
            })
            .collect();
        files.sort();
        files
    }

    /// Waits until `n` processes are stopped at `point`; panics naming the
    /// point after `timeout`, or at once if `alive` says the process(es)
    /// ended instead.
    pub fn wait_n(
        &self,
        point: &str,
        n: usize,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Vec<Stopped> {
        let deadline = Instant::now() + timeout;
        loop {
            let files = self.found(point);
            if files.len() >= n {
                return files
                    .into_iter()
                    .map(|file| Stopped {
                        pid: file.extension().unwrap().to_string_lossy().into_owned(),
                        detail: std::fs::read_to_string(&file).unwrap(),
                        file,
                    })
                    .collect();
            }
            assert!(alive(), "the process ended before it reached {point}");
            assert!(
                Instant::now() < deadline,
                "no process reached the stop point {point} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for one process stopped at `point`.
    pub fn wait(&self, point: &str, timeout: Duration) -> Stopped {
        self.wait_n(point, 1, timeout, || true).remove(0)
    }

    /// Runs `cmd` (its output discarded) until it stops at `point`, then
    /// kills it there with SIGKILL and reaps it.
    pub fn kill_at(&self, cmd: &mut std::process::Command, point: &str, timeout: Duration) {
        let mut child = cmd
            .envs(self.env(point))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.wait_child(point, &mut child, timeout).kill();
        child.wait().unwrap();
    }

    /// Waits for `child` to stop at `point`.
    pub fn wait_child(
        &self,
        point: &str,
        child: &mut std::process::Child,
        timeout: Duration,
    ) -> Stopped {
        self.wait_n(point, 1, timeout, || child.try_wait().unwrap().is_none())
            .remove(0)
    }
}

impl Stopped {
    fn signal(&self, sig: &str) {
        let r = super::run(Command::new("kill").args([sig, &self.pid]));
        assert_eq!(r.code, 0, "kill {sig} {}: {r:?}", self.pid);
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(self) {
        self.signal("-KILL");
        let _ = std::fs::remove_file(&self.file);
    }

    /// Lets the process go on from where it stopped.
    pub fn resume(self) {
        let _ = std::fs::remove_file(&self.file);
        self.signal("-CONT");
    }
}
