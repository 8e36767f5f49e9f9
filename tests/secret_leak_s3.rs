//! Secrets never leak: every command runs with known, distinctive secret
//! values (the S3 access and secret keys, a client-side encryption key, a
//! PostgreSQL password given through PGPASSWORD to a server that asks for
//! it), through success and through failures (a wrong secret key, an
//! unreachable endpoint, a wrong password, a wrong encryption key, a
//! corrupt object), at the most verbose log level; and no secret appears in
//! stdout, stderr, the server's log (where archive_command's output goes),
//! the restored data directory, a running pitr's process arguments and
//! title, or any object in the bucket. Against Ceph RGW over HTTPS.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::stop_point::StopPoints;
use common::{as_postgres, chown_postgres, pitr, pitr_bin, run, Run, TestDir};

const PG_PASSWORD: &str = "pgpw-Zq81xVt-SECRET";
const WRONG_PASSWORD: &str = "wrongpw-Kk27Lm-SECRET";
const WRONG_S3_SECRET: &str = "wrongs3-Yh55Pq0wErTy-SECRET";
/// 32 bytes as hex: the repository's encryption key, and a wrong one.
const KEY_HEX: &str = "6a1f9c2e7b3d4a5f8e0c1b2a39485766a1f9c2e7b3d4a5f8e0c1b2a394857ff1";
const WRONG_KEY_HEX: &str = "0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e";

type Env = Vec<(String, String)>;

/// Everything that must never be seen, with a label for the message.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn check(&self, place: &str, bytes: &[u8]) {
        for (what, s) in &self.0 {
            let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!found, "the {what} appears in {place}");
            // Also the key as raw bytes (a key file's content decoded).
            if what.contains("encryption key") {
                let raw = hex::decode(s).unwrap();
                assert!(
                    !bytes.windows(raw.len()).any(|w| w == raw.as_slice()),
                    "the raw {what} appears in {place}"
                );
            }
        }
    }

    fn check_run(&self, label: &str, r: &Run) {
        self.check(&format!("{label}'s stdout"), r.stdout.as_bytes());
        self.check(
            &format!("{label}'s stderr ({})", r.stderr),
            r.stderr.as_bytes(),
        );
    }

    /// Every regular file under `dir`.
    fn check_tree(&self, place: &str, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_file() {
                    let bytes = std::fs::read(e.path()).unwrap();
                    self.check(&format!("{place}: {}", e.path().display()), &bytes);
                }
            }
        }
    }
}

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

/// `env` with `key` set to `value` (replaced or added).
fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut e: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    e.push((key.into(), value.into()));
    e
}

#[test]
fn no_secret_in_output_logs_process_titles_or_objects() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("secrets");
    let dir = TestDir::new("secrets");
    let key_file = dir.join("repo.key");
    std::fs::write(&key_file, KEY_HEX).unwrap();
    let wrong_key_file = dir.join("wrong.key");
    std::fs::write(&wrong_key_file, WRONG_KEY_HEX).unwrap();
    for f in [&key_file, &wrong_key_file] {
        chown_postgres(f);
    }
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push((
        "PITR_ENCRYPTION_KEY_FILE".into(),
        key_file.display().to_string(),
    ));
    env.push(("PITR_LOG_LEVEL".into(), "trace".into()));
    let secrets = Secrets(vec![
        ("S3 access key", rgw.access_key.clone()),
        ("S3 secret key", rgw.secret_key.clone()),
        ("wrong S3 secret key", WRONG_S3_SECRET.into()),
        ("PostgreSQL password", PG_PASSWORD.into()),
        ("wrong PostgreSQL password", WRONG_PASSWORD.into()),
        ("encryption key", KEY_HEX.into()),
        ("wrong encryption key", WRONG_KEY_HEX.into()),
    ]);

    // A primary archiving through pitr, and a role that must give a
    // password (scram-sha-256) for SQL and replication.
    let pg = Pg::archiving(dir.join("primary"), &env);
    pg.sql(&format!(
        "create role pitrbk superuser replication login password '{PG_PASSWORD}'"
    ));
    let hba = pg.data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("local all pitrbk scram-sha-256\nlocal replication pitrbk scram-sha-256\n{old}"),
    )
    .unwrap();
    pg.sql("select pg_reload_conf()");
    pg.sql("create table t as select generate_series(1, 1000) as id");
    let conninfo = format!(
        "host={} port={} user=pitrbk dbname=postgres",
        pg.sock.display(),
        pg.port
    );
    let pg_env = with(&env, "PGPASSWORD", PG_PASSWORD);
    let record = |label: &str, r: Run| -> Run {
        secrets.check_run(label, &r);
        r
    };

    // Success.
    let b = record("backup", pitr_run(&pg_env, &["backup", "-d", &conninfo]));
    assert_eq!(b.code, 0, "{b:?}");
    let id = b.stdout.trim().to_string();
    pg.sql("insert into t select generate_series(1, 1000)");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));
    let pg_wal = dir.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let dest = dest.to_str().unwrap();
    let segment = "000000010000000000000001";
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    chown_postgres(&scratch);
    let restored = dir.join("restored");
    let ok: Vec<(&str, Env, Vec<&str>)> = vec![
        ("backup list", env.clone(), vec!["backup", "list"]),
        ("backup show", env.clone(), vec!["backup", "show", &id]),
        ("backup verify", env.clone(), vec!["backup", "verify", &id]),
        ("status", env.clone(), vec!["status"]),
        (
            "archive verify",
            env.clone(),
            vec!["archive", "verify", "--deep", "--full"],
        ),
        ("check", pg_env.clone(), vec!["check", "-d", &conninfo]),
        ("metrics", env.clone(), vec!["metrics"]),
        ("wal-fetch", env.clone(), vec!["wal-fetch", segment, dest]),
        (
            "restore",
            env.clone(),
            vec!["restore", "--pgdata", restored.to_str().unwrap()],
        ),
        (
            "expire",
            env.clone(),
            vec!["expire", "-r", "REDUNDANCY 1", "--dry-run"],
        ),
    ];
    for (label, e, args) in ok {
        let r = record(label, pitr_run(&e, &args));
        assert_eq!(r.code, 0, "{label}: {r:?}");
    }
    // The drill starts PostgreSQL, so it runs as the PostgreSQL OS user.
    let mut drill = as_postgres(pitr_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PITR_") || k.starts_with("AWS_") || k.starts_with("S3_") {
            drill.env_remove(k);
        }
    }
    let r = record(
        "drill",
        run(drill.envs(env.iter().cloned()).args([
            "drill",
            "--scratch",
            scratch.to_str().unwrap(),
            "--keep",
        ])),
    );
    assert_eq!(r.code, 0, "drill: {r:?}");
    let _ = std::fs::remove_file(dest);

    // Failures.
    let wrong_s3 = with(&env, "S3_SECRET_ACCESS_KEY", WRONG_S3_SECRET);
    let unreachable = with(&env, "PITR_ENDPOINT_URL", "https://127.0.0.1:9");
    let wrong_key = with(
        &env,
        "PITR_ENCRYPTION_KEY_FILE",
        wrong_key_file.to_str().unwrap(),
    );
    let wrong_pw = with(&env, "PGPASSWORD", WRONG_PASSWORD);
    let restore_to = |n: &str| dir.join(format!("restore-{n}")).display().to_string();
    let (r1, r2, r3) = (restore_to("s3"), restore_to("net"), restore_to("key"));
    let failing: Vec<(&str, &Env, Vec<&str>)> = vec![
        ("wrong S3 secret: status", &wrong_s3, vec!["status"]),
        (
            "wrong S3 secret: backup list",
            &wrong_s3,
            vec!["backup", "list"],
        ),
        (
            "wrong S3 secret: wal-fetch",
            &wrong_s3,
            vec!["wal-fetch", segment, dest, "--retries", "0"],
        ),
        (
            "wrong S3 secret: restore",
            &wrong_s3,
            vec!["restore", "--pgdata", &r1],
        ),
        (
            "wrong S3 secret: archive verify",
            &wrong_s3,
            vec!["archive", "verify"],
        ),
        ("wrong S3 secret: check", &wrong_s3, vec!["check"]),
        (
            "wrong S3 secret: expire",
            &wrong_s3,
            vec!["expire", "-r", "REDUNDANCY 1"],
        ),
        ("unreachable: status", &unreachable, vec!["status"]),
        (
            "unreachable: wal-fetch",
            &unreachable,
            vec!["wal-fetch", segment, dest, "--retries", "0"],
        ),
        (
            "unreachable: restore",
            &unreachable,
            vec!["restore", "--pgdata", &r2],
        ),
        (
            "unreachable: backup verify",
            &unreachable,
            vec!["backup", "verify", &id],
        ),
        (
            "wrong key: wal-fetch",
            &wrong_key,
            vec!["wal-fetch", segment, dest, "--retries", "0"],
        ),
        (
            "wrong key: restore",
            &wrong_key,
            vec!["restore", "--pgdata", &r3],
        ),
        (
            "wrong key: backup verify",
            &wrong_key,
            vec!["backup", "verify", &id],
        ),
        (
            "wrong password: backup",
            &wrong_pw,
            vec!["backup", "-d", &conninfo],
        ),
        (
            "wrong password: check",
            &wrong_pw,
            vec!["check", "-d", &conninfo],
        ),
    ];
    for (label, e, args) in failing {
        let r = record(label, pitr_run(e, &args));
        assert_ne!(r.code, 0, "{label} should fail: {r:?}");
    }
    // metrics answers (exit 0) with pitr_store_up 0 when the store refuses.
    let r = record(
        "wrong S3 secret: metrics",
        pitr_run(&wrong_s3, &["metrics"]),
    );
    assert!(
        r.stdout.contains("pitr_store_up{server=\"main\"} 0"),
        "{r:?}"
    );
    // A wrong password in the connection string itself (not PGPASSWORD):
    // the error must not echo the string.
    let in_conninfo = format!("{conninfo} password={WRONG_PASSWORD}");
    let r = record(
        "wrong password in conninfo: backup",
        pitr_run(&env, &["backup", "-d", &in_conninfo]),
    );
    assert_ne!(r.code, 0, "{r:?}");

    // A corrupt object.
    let seg_key = format!("pg/main/wals/0000000100000000/{segment}.gz");
    let mut bytes = rgw.get(&bucket, &seg_key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    rgw.put_raw(&bucket, &seg_key, bytes);
    for (label, args) in [
        (
            "corrupt: wal-fetch",
            vec!["wal-fetch", segment, dest, "--retries", "0"],
        ),
        (
            "corrupt: archive verify",
            vec!["archive", "verify", "--deep", "--full"],
        ),
    ] {
        let r = record(label, pitr_run(&env, &args));
        assert_ne!(r.code, 0, "{label}: {r:?}");
    }

    // Running pitr processes' arguments and titles, frozen at stop points:
    // a fetch, a restore, and a backup given the password in its
    // connection string on the command line (pitr hides it from ps).
    let stops = StopPoints::new(dir.join("stops"));
    let with_password = format!("{conninfo} password={PG_PASSWORD}");
    let frozen_restore = dir.join("restored-frozen");
    let running: Vec<(&str, Vec<&str>)> = vec![
        (
            "fetch-before-rename",
            vec!["wal-fetch", "000000010000000000000002", dest],
        ),
        ("backup-streaming", vec!["backup", "-d", &with_password]),
        (
            "restore-extracting",
            vec!["restore", "--pgdata", frozen_restore.to_str().unwrap()],
        ),
    ];
    for (point, args) in running {
        let mut child = pitr()
            .envs(env.iter().cloned())
            .envs(stops.env(point))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let frozen = stops.wait_child(point, &mut child, Duration::from_secs(60));
        let pid = &frozen.pid;
        for f in ["cmdline", "comm", "stat"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap();
            secrets.check(
                &format!("/proc/{pid}/{f} of {} at {point}", args[0]),
                &bytes,
            );
        }
        let ps = std::process::Command::new("ps")
            .args(["-ww", "-o", "args=", "-p", pid])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&ps.stdout).into_owned();
        assert!(shown.contains(args[0]), "{ps:?}");
        secrets.check(&format!("ps output of {} ({shown})", args[0]), &ps.stdout);
        frozen.kill();
        child.wait().unwrap();
    }

    // Logs and files: the primary's log (archive_command's stderr), the
    // drill's kept scratch cluster, the restored data directory.
    secrets.check("the primary's log", pg.log().as_bytes());
    secrets.check_tree("the drill's scratch", &scratch);
    secrets.check_tree("the restored PGDATA", &restored);

    // Every object in the bucket.
    let keys = rgw.keys(&bucket, "");
    assert!(keys.len() > 5, "{keys:?}");
    for key in keys {
        let body = rgw.get(&bucket, &key);
        secrets.check(&format!("object {key}"), &body);
        secrets.check(&format!("the name of object {key}"), key.as_bytes());
    }
}
