//! Plugin test support: a running sidecar (`pitr-cnpg instance`) on a
//! socket in a per-test directory, and the test instance manager
//! (`cnpg-instance-manager`) that PostgreSQL runs as archive_command and
//! restore_command. Include beside `common` (tests/common of the root
//! package).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{as_postgres, running_as_root, TestDir};

pub const PLUGIN_NAME: &str = "pitr.cnpg.io";

pub fn sidecar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pitr-cnpg"))
}

pub fn manager_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cnpg-instance-manager"))
}

/// A sidecar process serving `<dir>/plugins/pitr.cnpg.io`, run as the
/// `postgres` OS user (as in a Pod, the sidecar has PostgreSQL's UID).
pub struct Sidecar {
    pub plugin_path: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Sidecar {
    pub fn start(dir: &TestDir, role: &str, env: &[(String, String)]) -> Sidecar {
        let plugin_path = dir.join("plugins");
        std::fs::create_dir_all(&plugin_path).unwrap();
        if running_as_root() {
            crate::common::chown_postgres(&plugin_path);
        }
        let log = dir.join(format!("sidecar-{role}.log"));
        // setpriv execs the sidecar itself (runuser would stand between and
        // delay SIGTERM), so the test stops it the way the kubelet does.
        let mut cmd = if running_as_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(sidecar_bin());
            c
        } else {
            Command::new(sidecar_bin())
        };
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("PITR_") || k.starts_with("AWS_") || k.starts_with("S3_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg(role)
            .env("PLUGIN_PATH", &plugin_path)
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Sidecar {
            plugin_path,
            log,
            child,
        };
        let sock = s.socket();
        let start = Instant::now();
        // Answering, not merely present: a stale socket may be there.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the sidecar does not answer on {}:\n{}",
                sock.display(),
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn socket(&self) -> PathBuf {
        self.plugin_path.join(PLUGIN_NAME)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Environment for the test instance manager (and so for PostgreSQL,
    /// whose archive_command and restore_command run it).
    pub fn manager_env(&self, cluster_json: &Path, pgdata: &Path) -> Vec<(String, String)> {
        vec![
            (
                "CNPG_CLUSTER_JSON".into(),
                cluster_json.display().to_string(),
            ),
            (
                "CNPG_PLUGIN_PATH".into(),
                self.plugin_path.display().to_string(),
            ),
            ("PGDATA".into(), pgdata.display().to_string()),
        ]
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SIGTERM: the sidecar shuts down cleanly and removes its socket.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Cluster as CloudNativePG 1.30 sends it (trimmed to what matters),
/// with this plugin's entry and `parameters`.
pub fn cluster_json(name: &str, parameters: Value) -> Value {
    serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "default", "uid": "0b7e7a4c-2d1f-4f57-9c55-6c1d3c2f9a01"},
        "spec": {
            "instances": 1,
            "imageName": "ghcr.io/cloudnative-pg/postgresql:15",
            "plugins": [{"name": PLUGIN_NAME, "isWALArchiver": true, "parameters": parameters}]
        },
        "status": {"currentPrimary": format!("{name}-1"), "targetPrimary": format!("{name}-1")}
    })
}

pub fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    if running_as_root() {
        crate::common::chown_postgres(path);
    }
}

/// Runs the test instance manager as the `postgres` user.
pub fn manager(env: &[(String, String)], args: &[&str]) -> crate::common::Run {
    let mut cmd = as_postgres(manager_bin());
    cmd.env_remove("CNPG_CHECK_EMPTY")
        .envs(env.iter().cloned())
        .args(args);
    crate::common::run(&mut cmd)
}
