//! The throw-away PostgreSQL a drill starts on its restored copy: its own
//! Unix socket directory inside the scratch directory (mode 0700), no TCP
//! listener, no archiving, trust authentication on that private socket
//! only. It never talks to the live server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::error::{Error, Result};

pub struct ScratchServer {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    user: String,
    log: PathBuf,
    running: bool,
}

/// What one psql run printed.
#[derive(Debug)]
pub struct PsqlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ScratchServer {
    /// Prepares the restored `data` to run as a scratch server: settings
    /// appended to postgresql.auto.conf (they win over the backup's), and
    /// a pg_hba.conf that allows only the private socket.
    pub fn prepare(bin: &Path, data: &Path, scratch: &Path, user: &str) -> Result<ScratchServer> {
        let socket_dir = scratch.join("run");
        let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
        std::fs::create_dir_all(&socket_dir).map_err(|e| io("cannot create", &socket_dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("cannot chmod", &socket_dir, e))?;
        }
        let mut rnd = [0u8; 2];
        let _ = getrandom::fill(&mut rnd);
        let port = 20000 + u16::from_le_bytes(rnd) % 40000;
        let settings = format!(
            "\n# pitr drill: a throw-away copy\nport = {port}\nlisten_addresses = ''\n\
             unix_socket_directories = '{}'\nunix_socket_permissions = 0700\n\
             archive_mode = off\narchive_command = ''\nhot_standby = on\n\
             logging_collector = off\ncluster_name = 'pitr-drill'\n",
            socket_dir.display().to_string().replace('\'', "''")
        );
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&settings);
        std::fs::write(&auto, conf).map_err(|e| io("cannot write", &auto, e))?;
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# pitr drill: only the private socket\nlocal all all trust\n",
        )
        .map_err(|e| io("cannot write", &hba, e))?;
        Ok(ScratchServer {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            socket_dir,
            port,
            user: user.to_string(),
            log: scratch.join("server.log"),
            running: false,
        })
    }

    /// Starts the server (recovery runs in the background).
    pub async fn start(&mut self) -> Result<()> {
        let out = Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-W", "start"])
            .output()
            .await
            .map_err(|e| {
                Error::io(
                    format!("cannot run {}", self.bin.join("pg_ctl").display()),
                    e,
                )
            })?;
        if !out.status.success() {
            return Err(Error::Postgres(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            )));
        }
        self.running = true;
        Ok(())
    }

    /// Waits until the server accepts connections as a primary (recovery
    /// finished and it promoted), or fails when it stops or `timeout`
    /// passes.
    pub async fn wait_primary(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut seen_running = false;
        loop {
            let r = self.psql(&["-c", "select pg_is_in_recovery()"]).await?;
            if r.ok && r.stdout.trim() == "f" {
                return Ok(());
            }
            // The postmaster writes its pid file a moment after pg_ctl
            // returns: stopped means it was there and is gone, or never
            // came.
            let running = self.data.join("postmaster.pid").exists();
            seen_running |= running;
            let never_came = !seen_running && started.elapsed() > Duration::from_secs(60);
            if (seen_running && !running) || never_came {
                return Err(Error::Postgres(format!(
                    "the restored server stopped during recovery{}",
                    self.log_tail()
                )));
            }
            if started.elapsed() > timeout {
                return Err(Error::Postgres(format!(
                    "recovery did not finish within {} s (--timeout){}",
                    timeout.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs psql on database `postgres` with `args`, unaligned and tuples
    /// only, stopping at the first error.
    pub async fn psql(&self, args: &[&str]) -> Result<PsqlOutput> {
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
                "-d",
                "postgres",
            ])
            .args(args)
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .output()
            .await
            .map_err(|e| Error::io(format!("cannot run {}", psql.display()), e))?;
        Ok(PsqlOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs one of PostgreSQL's client programs (pg_amcheck) against the
    /// server, if `bin` has it.
    pub async fn client(&self, program: &str, args: &[&str]) -> Option<Result<PsqlOutput>> {
        let path = self.bin.join(program);
        if !path.exists() {
            return None;
        }
        let out = Command::new(&path)
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", &self.user])
            .args(args)
            .output()
            .await;
        Some(
            out.map(|o| PsqlOutput {
                ok: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            })
            .map_err(|e| Error::io(format!("cannot run {}", path.display()), e)),
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
        match tail.is_empty() {
            true => String::new(),
            false => format!("; the server's log ends with:\n  {tail}"),
        }
    }

    /// Stops the server at once (nothing of it is kept).
    pub async fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = Command::new(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .await;
        self.running = false;
    }
}
