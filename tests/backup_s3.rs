//! Base backups over the replication protocol into Ceph RGW over HTTPS:
//! verified against the server's manifest, restorable by hand and by
//! barman-cloud-restore, listed by barman-cloud-backup-list, and never
//! listed as usable when killed midway.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::Pg;
use common::s3::Rgw;
use common::{chown_postgres, pitr, pitr_bin, run, run_ok, running_as_root, Run, TestDir};

/// A primary archiving into `bucket`, with a tablespace `ts1` holding a
/// table, and pgbench data in the default tablespace.
fn primary(dir: &TestDir, env: &[(String, String)]) -> Pg {
    let pg = Pg::archiving(dir.join("primary"), env);
    let ts = dir.join("ts1");
    std::fs::create_dir_all(&ts).unwrap();
    if running_as_root() {
        chown_postgres(&ts);
    }
    pg.sql(&format!(
        "create tablespace ts1 location '{}'",
        ts.display()
    ));
    pg.sql("create table in_ts (id int primary key, v text) tablespace ts1");
    pg.sql("insert into in_ts select g, md5(g::text) from generate_series(1, 20000) g");
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    pg
}

fn backup(env: &[(String, String)], pg: &Pg, extra: &[&str]) -> Run {
    run(pitr()
        .envs(env.iter().cloned())
        .args(["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"])
        .args(extra))
}

fn pitr_cmd(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

fn state(pg: &Pg) -> String {
    pg.sql("select (select count(*) || ':' || sum(abalance) from pgbench_accounts) || '/' || (select count(*) from in_ts)")
}

/// Starts a restored data directory with `restore_command` and waits until
/// it has replayed the archive and promoted.
fn recover(data: &Path, restore_command: &str, env: &[(String, String)]) -> Pg {
    if running_as_root() {
        chown_postgres(data);
    }
    let mut pg = Pg::existing(data.to_path_buf());
    pg.conf(&format!(
        "archive_mode = off\nrestore_command = '{restore_command}'\n"
    ));
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    if running_as_root() {
        chown_postgres(data);
    }
    pg.start_nowait(env);
    pg.wait_promoted(Duration::from_secs(180));
    pg
}

fn extract(archive: &[u8], dest: &Path, gzip: bool) {
    std::fs::create_dir_all(dest).unwrap();
    let file = dest.with_extension("tar-in");
    std::fs::write(&file, archive).unwrap();
    run_ok(
        Command::new("tar")
            .arg(if gzip { "-xzf" } else { "-xf" })
            .arg(&file)
            .arg("-C")
            .arg(dest),
    );
    std::fs::remove_file(&file).unwrap();
    run_ok(Command::new("chmod").arg("700").arg(dest));
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn backup_verifies_and_restores_by_hand() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("bk");
    let dir = TestDir::new("bk");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);

    let r = backup(&env, &pg, &["--name", "nightly"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 15, "prints the backup id: {r:?}");

    let listed = json(&pitr_cmd(&env, &["backup", "list", "--format", "json"]).stdout);
    let b = &listed["backups"][0];
    assert_eq!(b["backup_id"], id.as_str());
    assert_eq!(b["status"], "DONE");
    assert_eq!(b["usable"], true);
    assert_eq!(b["backup_name"], "nightly");
    assert_eq!(b["tablespaces"][0]["name"], "ts1");
    let oid = b["tablespaces"][0]["oid"].as_u64().unwrap();
    assert!(b["backup_label"]
        .as_str()
        .unwrap()
        .contains("START WAL LOCATION"));

    let v = pitr_cmd(&env, &["backup", "verify", &id]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.starts_with("OK"), "{v:?}");

    // Changes after the backup, archived.
    pg.sql("insert into in_ts select g, 'after' from generate_series(20001, 20500) g");
    pg.pgbench(&["-t", "200", "-n"]);
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));
    let expected = state(&pg);

    // `pitr status` sees the backup and the newest archived segment.
    let st = pitr_cmd(&env, &["status", "--format", "json"]);
    assert_eq!(st.code, 0, "{st:?}");
    let st = json(&st.stdout);
    assert_eq!(st["last_backup"]["backup_id"], id.as_str());
    assert_eq!(st["usable_backups"], 1);
    assert_eq!(st["last_archived"]["segment"], last.as_str());
    assert!(st["first_recoverability_point"].is_string(), "{st}");

    // Restore by hand: the tars from the bucket, the tablespace where we
    // want it, WAL through pitr.
    let data = dir.join("restored");
    extract(
        &rgw.get(&bucket, &format!("pg/main/base/{id}/data.tar.gz")),
        &data,
        true,
    );
    let ts_new = dir.join("ts1-restored");
    extract(
        &rgw.get(&bucket, &format!("pg/main/base/{id}/{oid}.tar.gz")),
        &ts_new,
        true,
    );
    assert!(
        std::fs::symlink_metadata(data.join(format!("pg_tblspc/{oid}"))).is_err(),
        "the data tar must not carry the tablespace link"
    );
    std::os::unix::fs::symlink(&ts_new, data.join(format!("pg_tblspc/{oid}"))).unwrap();
    if running_as_root() {
        chown_postgres(&ts_new);
    }
    let restored = recover(
        &data,
        &format!("{} wal-fetch %f %p", pitr_bin().display()),
        &env,
    );
    assert_eq!(state(&restored), expected);
}

#[test]
fn verify_names_a_damaged_file() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("bk-verify");
    let dir = TestDir::new("bk-verify");
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push(("PITR_COMPRESSION".into(), "none".into()));
    let pg = primary(&dir, &env);
    let r = backup(&env, &pg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim().to_string();
    assert_eq!(pitr_cmd(&env, &["backup", "verify", "latest"]).code, 0);

    // Flip one byte inside PG_VERSION's content in the stored tar.
    let key = format!("pg/main/base/{id}/data.tar");
    let mut tar = rgw.get(&bucket, &key);
    let header = tar
        .chunks(512)
        .position(|block| block.starts_with(b"PG_VERSION\0"))
        .expect("PG_VERSION in the tar");
    tar[(header + 1) * 512] ^= 0x01;
    rgw.put_raw(&bucket, &key, tar);

    let v = pitr_cmd(&env, &["backup", "verify", &id]);
    assert_eq!(v.code, 3, "{v:?}");
    assert!(v.stdout.starts_with("FAILED"), "{v:?}");
    assert!(
        v.stderr
            .contains("file PG_VERSION differs from the manifest"),
        "{}",
        v.stderr
    );

    // A damaged gzip object is reported too (default compression).
    env.retain(|(k, _)| k != "PITR_COMPRESSION");
    let r = backup(&env, &pg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let gz_id = r.stdout.trim().to_string();
    let gz_key = format!("pg/main/base/{gz_id}/data.tar.gz");
    let mut gz = rgw.get(&bucket, &gz_key);
    let mid = gz.len() / 2;
    gz[mid] ^= 0xFF;
    rgw.put_raw(&bucket, &gz_key, gz);
    let v = pitr_cmd(&env, &["backup", "verify", &gz_id]);
    assert_eq!(v.code, 3, "{v:?}");
    assert!(v.stderr.contains(&gz_key), "{}", v.stderr);
}

#[test]
fn barman_lists_and_restores_a_pitr_backup_and_pitr_lists_barmans() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("bk-barman");
    let dir = TestDir::new("bk-barman");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);
    let r = backup(&env, &pg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim().to_string();
    pg.sql("insert into in_ts values (99999, 'after the backup')");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));
    let expected = state(&pg);

    let url = format!("s3://{bucket}/pg");
    let listed = run(rgw.barman("barman-cloud-backup-list").args([
        "--endpoint-url",
        &rgw.endpoint,
        "--format",
        "json",
        &url,
        "main",
    ]));
    assert_eq!(listed.code, 0, "{listed:?}");
    let list = json(&listed.stdout);
    let found = list["backups_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup_id"] == id.as_str())
        .unwrap_or_else(|| panic!("barman does not list {id}: {}", listed.stdout));
    assert_eq!(found["status"], "DONE");

    let data = dir.join("barman-restored");
    let ts_new = dir.join("ts1-barman");
    let restored = run(rgw.barman("barman-cloud-restore").args([
        "--endpoint-url",
        &rgw.endpoint,
        "--tablespace",
        &format!("ts1:{}", ts_new.display()),
        &url,
        "main",
        &id,
        data.to_str().unwrap(),
    ]));
    assert_eq!(restored.code, 0, "{restored:?}");
    run_ok(Command::new("chmod").arg("700").arg(&data));
    if running_as_root() {
        chown_postgres(&ts_new);
    }
    let venv = common::barman_venv();
    let restore_command = format!(
        "{venv}/bin/barman-cloud-wal-restore --endpoint-url {} {url} main %f %p",
        rgw.endpoint
    );
    let recovered = recover(&data, &restore_command, &rgw.barman_env());
    assert_eq!(state(&recovered), expected);

    // And the other way: a backup barman-cloud-backup takes is in pitr's list.
    let b = run(rgw.barman("barman-cloud-backup").args([
        "--endpoint-url",
        &rgw.endpoint,
        "-h",
        pg.sock.to_str().unwrap(),
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
        "--name",
        "from-barman",
        &url,
        "main",
    ]));
    assert_eq!(b.code, 0, "{b:?}");
    let listed = json(&pitr_cmd(&env, &["backup", "list", "--format", "json"]).stdout);
    let theirs = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup_name"] == "from-barman")
        .unwrap_or_else(|| panic!("pitr does not list barman's backup: {listed}"));
    assert_eq!(theirs["status"], "DONE");
    assert_eq!(theirs["usable"], true);
    let shown = pitr_cmd(&env, &["backup", "show", "from-barman"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("DONE"), "{}", shown.stdout);

    // pitr restores Barman's backup (its tars, its tablespace list) and the
    // server recovers to the end of the archive.
    pg.sql("insert into in_ts values (99998, 'after barman backup')");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));
    let expected = state(&pg);
    let data = dir.join("pitr-from-barman");
    let ts_map = format!(
        "{oid}={}",
        dir.join("ts1-pitr-from-barman").display(),
        oid = theirs["tablespaces"][0]["oid"]
    );
    let r = pitr_cmd(
        &env,
        &[
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--backup-id",
            "from-barman",
            "--tablespace-map",
            &ts_map,
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    if running_as_root() {
        chown_postgres(&dir.join("ts1-pitr-from-barman"));
    }
    let restored = common::pg::start_restored(&data, &env, "archive_mode = off\n");
    assert_eq!(state(&restored), expected);
}

#[test]
fn a_backup_killed_midway_is_never_usable() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("bk-kill");
    let dir = TestDir::new("bk-kill");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);
    // Uncompressed, in 5 MiB parts, at 2 MB/s: the backup is surely midway,
    // with a multipart upload open, when it is killed.
    let mut slow = env.clone();
    slow.push(("PITR_COMPRESSION".into(), "none".into()));
    slow.push(("PITR_S3_PART_SIZE".into(), "5".into()));
    let mut child = pitr()
        .envs(slow.iter().cloned())
        .args(["backup", "-d", &pg.conninfo(), "--max-rate", "2048"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while rgw.open_uploads(&bucket, "pg/main/base/").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no upload ever opened"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let listed = json(&pitr_cmd(&env, &["backup", "list", "--format", "json"]).stdout);
    let b = &listed["backups"][0];
    assert_eq!(b["status"], "STARTED");
    assert_eq!(b["usable"], false);
    let latest = pitr_cmd(&env, &["backup", "show", "latest"]);
    assert_eq!(latest.code, 4, "no usable backup: {latest:?}");
    assert!(
        latest.stderr.contains("no backup 'latest'"),
        "{}",
        latest.stderr
    );
    let text = pitr_cmd(&env, &["backup", "list"]);
    assert!(
        text.stdout.contains("STARTED") && text.stdout.contains(" no "),
        "{}",
        text.stdout
    );

    // The killed process left its multipart upload open; deleting the
    // backup drops it, and nothing of the backup remains.
    let id = b["backup_id"].as_str().unwrap().to_string();
    let prefix = format!("pg/main/base/{id}/");
    assert!(
        !rgw.open_uploads(&bucket, &prefix).is_empty(),
        "a killed upload is open"
    );
    let d = pitr_cmd(&env, &["backup", "delete", &id]);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(
        rgw.open_uploads(&bucket, &prefix).is_empty(),
        "open uploads dropped"
    );
    assert!(rgw.keys(&bucket, &prefix).is_empty());
}

#[test]
fn a_refused_upload_names_its_cause_in_the_log_and_backup_info() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("denied");
    let dir = TestDir::new("denied");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);
    // Revoke the right to write the backup's tars (and only those), so the
    // upload fails while PostgreSQL is still streaming.
    rgw.put_bucket_policy(
        &bucket,
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Principal":{{"AWS":["*"]}},"Action":["s3:PutObject"],"Resource":["arn:aws:s3:::{bucket}/pg/main/base/*/data.tar*"]}}]}}"#
        ),
    );
    let r = backup(&env, &pg, &["--compression", "none", "--s3-part-size", "5"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("AccessDenied") && r.stderr.contains("data.tar"),
        "the log names the refused upload: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("stopped"), "{}", r.stderr);
    let info_key = rgw
        .keys(&bucket, "pg/main/base/")
        .into_iter()
        .find(|k| k.ends_with("backup.info"))
        .expect("backup.info written");
    let info = String::from_utf8(rgw.get(&bucket, &info_key)).unwrap();
    assert!(info.contains("status=FAILED"), "{info}");
    let error = info
        .lines()
        .find(|l| l.starts_with("error="))
        .unwrap_or_default();
    assert!(
        error.contains("AccessDenied"),
        "backup.info's error= carries the cause: {error}"
    );
    assert!(
        !error.contains(&rgw.secret_key) && !r.stderr.contains(&rgw.secret_key),
        "no secret in errors"
    );
}
