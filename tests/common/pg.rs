//! Throw-away PostgreSQL clusters (Debian's PostgreSQL 15 by default;
//! PITR_TEST_PG_BIN points elsewhere, and `Pg::init_with` runs one cluster's
//! server programs from another bin directory). Each listens only on a Unix
//! socket in its own directory, so tests never collide.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{as_postgres, pitr_bin, run_ok};

pub fn bin_dir() -> PathBuf {
    std::env::var_os("PITR_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

pub fn tool(name: &str) -> Command {
    as_postgres(bin_dir().join(name))
}

/// initdb with trust authentication (the socket is private to the test).
pub fn initdb(data: &Path) {
    initdb_with(&bin_dir(), data);
}

/// initdb from the server programs in `bin`.
pub fn initdb_with(bin: &Path, data: &Path) {
    initdb_args(bin, data, &[]);
}

/// initdb of a cluster with WAL segments of `mib` MiB.
pub fn initdb_segsize(data: &Path, mib: u32) {
    initdb_args(&bin_dir(), data, &["--wal-segsize", &mib.to_string()]);
}

fn initdb_args(bin: &Path, data: &Path, extra: &[&str]) {
    let mut initdb = as_postgres(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .args(extra);
    run_ok(&mut initdb);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Pg {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    /// Where initdb, pg_ctl and postgres come from (client programs such as
    /// psql always come from `bin_dir()`).
    pub bin: PathBuf,
    env: Vec<(String, String)>,
    running: bool,
    /// Where the log of the latest start begins (a data directory may be
    /// started several times, and the log file grows).
    log_start: usize,
}

impl Pg {
    /// A new cluster in `data` (initdb).
    pub fn init(data: PathBuf) -> Pg {
        initdb(&data);
        Pg::existing(data)
    }

    /// A new cluster in `data`, made and run by the server programs in `bin`
    /// (another PostgreSQL version).
    pub fn init_with(bin: &Path, data: PathBuf) -> Pg {
        initdb_with(bin, &data);
        Pg::existing_with(bin, data)
    }

    /// A cluster whose data directory already exists (a copy, a restore).
    pub fn existing(data: PathBuf) -> Pg {
        Pg::existing_with(&bin_dir(), data)
    }

    /// An existing data directory, run by the server programs in `bin`.
    pub fn existing_with(bin: &Path, data: PathBuf) -> Pg {
        let sock = data.with_extension("sock");
        std::fs::create_dir_all(&sock).unwrap();
        if super::running_as_root() {
            super::chown_postgres(&sock);
        }
        let port = free_port();
        let pg = Pg {
            data,
            sock,
            port,
            bin: bin.to_path_buf(),
            env: Vec::new(),
            running: false,
            log_start: 0,
        };
        pg.conf(&format!(
            "listen_addresses = ''\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n\
             log_min_messages = info\n",
            pg.port,
            pg.sock.display()
        ));
        pg
    }

    fn pg_ctl(&self) -> Command {
        as_postgres(self.bin.join("pg_ctl"))
    }

    /// A connection string for `pitr backup -d`, as the `postgres` role.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres",
            self.sock.display(),
            self.port
        )
    }

    /// Appends settings to postgresql.conf.
    pub fn conf(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        writeln!(f, "\n{lines}").unwrap();
    }

    /// Starts the server with `env` in its environment (which is what
    /// archive_command and restore_command see) and waits until it accepts
    /// connections.
    pub fn start(&mut self, env: &[(String, String)]) {
        self.pg_ctl_start(env, &["-w", "-t", "120"]);
    }

    /// Starts a server that will run recovery; does not wait for it to accept connections.
    pub fn start_nowait(&mut self, env: &[(String, String)]) {
        self.pg_ctl_start(env, &["-W"]);
    }

    fn pg_ctl_start(&mut self, env: &[(String, String)], wait: &[&str]) {
        self.env = env.to_vec();
        self.log_start = self.log().len();
        let out = self
            .pg_ctl()
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(wait)
            .arg("start")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            run_ok(
                self.pg_ctl()
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "fast", "-w", "stop"]),
            );
            self.running = false;
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the server logged since it was last started.
    pub fn log_since_start(&self) -> String {
        self.log()
            .get(self.log_start..)
            .unwrap_or_default()
            .to_string()
    }

    /// A client program pointed at this server as the `postgres` role.
    fn client(&self, program: &str) -> Command {
        let mut c = tool(program);
        c.arg("-h")
            .arg(&self.sock)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"]);
        c
    }

    fn psql_cmd(&self, sql: &str) -> Command {
        let mut c = self.client("psql");
        c.args([
            "-d",
            "postgres",
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        c
    }

    /// Runs SQL and returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.psql_cmd(sql).output().unwrap();
        if !out.status.success() {
            panic!(
                "psql {sql:?} failed: {}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs SQL; None if it fails (server not up yet).
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let out = self.psql_cmd(sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs pgbench against this server.
    pub fn pgbench(&self, args: &[&str]) {
        run_ok(self.client("pgbench").args(args).arg("postgres"));
    }

    /// A base backup without WAL (everything must come from the archive).
    pub fn basebackup_without_wal(&self, dest: &Path) {
        run_ok(
            self.client("pg_basebackup")
                .args(["-X", "none", "-c", "fast", "--no-sync", "-D"])
                .arg(dest),
        );
    }

    /// Switches to a new WAL segment and returns the name of the one closed.
    /// pg_switch_wal() returns the start of the next segment, which
    /// pg_walfile_name() names as the closed one before PostgreSQL 17 and as
    /// the next one since: the byte before it is in the closed one on all.
    pub fn switch_wal(&self) -> String {
        self.sql("select pg_walfile_name(pg_switch_wal() - 1)")
    }

    /// Waits until the archiver has archived `segment` (or later).
    pub fn wait_archived(&self, segment: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let last = self.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
            if last.len() == 24 && last.as_str() >= segment {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{segment} was not archived within {timeout:?} (last archived: {last:?}); stats: {}\n--- server log ---\n{}",
                    self.sql("select * from pg_stat_archiver"),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True while the postmaster is alive.
    pub fn is_running(&self) -> bool {
        self.pg_ctl()
            .arg("-D")
            .arg(&self.data)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Waits until recovery has ended and the server accepts writes; panics
    /// with the server log if the server dies or time runs out.
    pub fn wait_promoted(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.try_sql("select pg_is_in_recovery()").as_deref() == Some("f") {
                return;
            }
            // pg_ctl -W returns before postmaster.pid exists: give it time.
            let stopped = self
                .log_since_start()
                .contains("database system is shut down")
                || (start.elapsed() > Duration::from_secs(5) && !self.is_running());
            if stopped {
                self.running = false;
                panic!(
                    "the server stopped during recovery\n--- server log ---\n{}",
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "recovery did not complete within {timeout:?}\n--- server log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .pg_ctl()
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Starts a data directory that `pitr restore` (or a hand restore) prepared,
/// with `extra` settings appended, and waits until recovery has finished and
/// the server promoted.
pub fn start_restored(data: &Path, env: &[(String, String)], extra: &str) -> Pg {
    start_restored_with(&bin_dir(), data, env, extra)
}

/// `start_restored` with the server programs in `bin`.
pub fn start_restored_with(bin: &Path, data: &Path, env: &[(String, String)], extra: &str) -> Pg {
    if super::running_as_root() {
        super::chown_postgres(data);
    }
    let mut pg = Pg::existing_with(bin, data.to_path_buf());
    pg.conf(extra);
    if super::running_as_root() {
        super::chown_postgres(data);
    }
    pg.start_nowait(env);
    pg.wait_promoted(Duration::from_secs(180));
    pg
}

impl Pg {
    /// A started primary whose archive_command is `pitr wal-push %p`, into
    /// the repository `env` configures.
    pub fn archiving(data: PathBuf, env: &[(String, String)]) -> Pg {
        let mut pg = Pg::init(data);
        pg.conf(&format!(
            "archive_mode = on\narchive_command = '{} wal-push %p'\n",
            pitr_bin().display()
        ));
        pg.start(env);
        pg
    }

    /// A started primary with 1 MiB segments (small on disk) and a backlog
    /// of `segments` `.ready` files: archive_mode on with no command, so
    /// PostgreSQL keeps them. Returns it and the newest segment's name.
    pub fn with_ready_backlog(
        data: PathBuf,
        env: &[(String, String)],
        segments: usize,
    ) -> (Pg, String) {
        initdb_segsize(&data, 1);
        let mut pg = Pg::existing(data);
        pg.conf(
            "archive_mode = on\narchive_command = ''\nwal_keep_size = '1GB'\nmax_wal_size = '1GB'\n",
        );
        pg.start(env);
        pg.sql("create table t (id int)");
        let mut last = String::new();
        for i in 0..segments {
            pg.sql(&format!("insert into t values ({i})"));
            last = pg.switch_wal();
        }
        (pg, last)
    }

    /// A base backup that carries the WAL it needs to become consistent
    /// (pg_basebackup's default), so a copy can start without any archive.
    pub fn basebackup_with_wal(&self, dest: &Path) {
        run_ok(
            self.client("pg_basebackup")
                .args(["-X", "fetch", "-c", "fast", "--no-sync", "-D"])
                .arg(dest),
        );
    }

    /// Starts a server that must stop during recovery (restore_command
    /// failed above 125) and waits until it has: returns the log it wrote
    /// in this run. Panics if it promotes or is still running at `timeout`.
    pub fn start_expecting_stop(&mut self, env: &[(String, String)], timeout: Duration) -> String {
        self.pg_ctl_start(env, &["-W"]);
        let start = Instant::now();
        loop {
            let new = self.log_since_start();
            if new.contains("database system is shut down") {
                self.running = false;
                return new;
            }
            if self.try_sql("select pg_is_in_recovery()").as_deref() == Some("f") {
                panic!("the server promoted instead of stopping\n--- server log ---\n{new}");
            }
            if start.elapsed() > timeout {
                panic!("the server did not stop within {timeout:?}\n--- server log ---\n{new}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
