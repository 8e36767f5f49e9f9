//! Backup.Backup and Metrics the way CloudNativePG's instance manager
//! drives them (the test instance manager: a new socket connection and the
//! full load sequence before each call), on a real PostgreSQL 15 that
//! archives through the same sidecar into the real Ceph RGW over HTTPS.
//! What the sidecar answers is checked against what the server itself
//! reports, against `pitr backup list` / `pitr status` and against
//! barman-cloud-backup-list. Uses the `pitr` binary of the same target
//! directory (tests/run.sh builds the workspace).

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, run, running_as_root, TestDir};
use serde_json::{json, Value};
use support::{cluster_json, manager, manager_bin, write_json, Sidecar, PLUGIN_NAME};

fn params(rgw: &Rgw, bucket: &str) -> Value {
    json!({
        "repository": format!("s3://{bucket}/pg"),
        "endpointURL": rgw.endpoint,
        "region": rgw.region,
        "caFile": rgw.ca,
    })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn unix(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .timestamp()
}

/// A Backup resource as CloudNativePG sends it (GVK set).
fn backup_resource(path: &Path, name: &str, cluster: &str) {
    write_json(
        path,
        &json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Backup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"cluster": {"name": cluster}, "method": "plugin",
                     "pluginConfiguration": {"name": PLUGIN_NAME}}
        }),
    );
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` ->
/// (lsn, file), for the line starting with `key`.
fn location(text: &str, key: &str) -> (String, String) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let (lsn, rest) = line.trim().split_once(' ').unwrap();
    let file = rest.trim_start_matches("(file ").trim_end_matches(')');
    (lsn.to_string(), file.to_string())
}

/// Waits until PostgreSQL has no WAL file left to archive.
fn wait_archiver_idle(pg: &Pg) {
    let start = Instant::now();
    while pg.sql("select count(*) from pg_ls_archive_statusdir() where name like '%.ready'") != "0"
    {
        assert!(start.elapsed() < Duration::from_secs(60), "archiver busy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn backups_through_the_sidecar_match_the_server_and_metrics_match_pitr_status() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-bk");
    let dir = TestDir::new("cnpg-bk");
    let server = "pg-bk";
    let cluster = dir.join("cluster.json");
    write_json(&cluster, &cluster_json(server, params(&rgw, &bucket)));
    let data = dir.join("data");
    let mut pg = Pg::init(data.clone());
    pg.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-archive %p'\n",
        manager_bin().display()
    ));
    // The sidecar inherits the postgres container's environment: PGHOST is
    // the socket directory, PGPORT the port, no PGUSER (user postgres).
    let sidecar = Sidecar::start(
        &dir,
        "instance",
        &[
            ("S3_ACCESS_KEY_ID".into(), rgw.access_key.clone()),
            ("S3_SECRET_ACCESS_KEY".into(), rgw.secret_key.clone()),
            ("POD_NAME".into(), "pg-bk-1".into()),
            ("PGDATA".into(), data.display().to_string()),
            ("PGHOST".into(), pg.sock.display().to_string()),
            ("PGPORT".into(), pg.port.to_string()),
            ("PITR_STATUS_INTERVAL_SECONDS".into(), "1".into()),
        ],
    );
    let env = sidecar.manager_env(&cluster, &data);
    pg.start(&env);
    pg.sql("create table t (id int primary key); insert into t select generate_series(1, 1000)");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));

    // A Backup named after its resource.
    let backup_json = dir.join("backup.json");
    backup_resource(&backup_json, "pg-bk-first", server);
    let before = now().floor() as i64;
    let r = manager(&env, &["backup", &backup_json.display().to_string()]);
    assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
    let after = now().ceil() as i64;
    let b = json_of(&r.stdout);
    let id = b["backup_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 15, "{b}");
    assert_eq!(b["backup_name"], "pg-bk-first");
    let (started, stopped) = (
        b["started_at"].as_i64().unwrap(),
        b["stopped_at"].as_i64().unwrap(),
    );
    assert!(
        before <= started && started <= stopped && stopped <= after,
        "{before} <= {started} <= {stopped} <= {after}"
    );
    assert_eq!(b["online"], true);
    assert_eq!(b["instance_id"], "pg-bk-1");
    assert_eq!(b["tablespace_map_file"], "");

    // begin: the backup_label PostgreSQL wrote, which the result carries.
    let label = b["backup_label_file"].as_str().unwrap();
    let (begin_lsn, begin_wal) = location(label, "START WAL LOCATION:");
    assert_eq!(b["begin_lsn"], begin_lsn.as_str(), "{label}");
    assert_eq!(b["begin_wal"], begin_wal.as_str(), "{label}");
    assert_eq!(begin_wal.len(), 24);
    assert!(label.contains(&format!("pitr backup {id}")), "{label}");
    // end: the .backup history file PostgreSQL archived through the sidecar.
    let start = Instant::now();
    let history = loop {
        let keys = rgw.keys(&bucket, &format!("pg/{server}/wals/"));
        if let Some(k) = keys.iter().find(|k| {
            k.ends_with(".backup.gz") && k.rsplit('/').next().unwrap().starts_with(&begin_wal)
        }) {
            break k
                .rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".gz")
                .to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no .backup file for {begin_wal}: {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let fetched = dir.join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();
    if running_as_root() {
        common::chown_postgres(&fetched);
    }
    let dest = fetched.join("history");
    let f = manager(
        &env,
        &["wal-restore", &history, &dest.display().to_string()],
    );
    assert_eq!(f.code, 0, "{f:?}");
    let history_text = std::fs::read_to_string(&dest).unwrap();
    assert_eq!(
        location(&history_text, "START WAL LOCATION:"),
        (begin_lsn.clone(), begin_wal.clone())
    );
    let (end_lsn, end_wal) = location(&history_text, "STOP WAL LOCATION:");
    assert_eq!(b["end_lsn"], end_lsn.as_str(), "{history_text}");
    assert_eq!(b["end_wal"], end_wal.as_str(), "{history_text}");
    // The timeline, version and system identifier are the server's.
    let md = &b["metadata"];
    assert_eq!(
        md["timeline"],
        pg.sql("select timeline_id from pg_control_checkpoint()")
            .as_str()
    );
    assert_eq!(md["version"], pg.sql("show server_version_num").as_str());
    assert_eq!(
        md["systemIdentifier"],
        pg.sql("select system_identifier from pg_control_system()")
            .as_str()
    );
    assert_eq!(md["serverName"], server);
    assert_eq!(md["pluginName"], PLUGIN_NAME);

    // pitr and barman-cloud list it DONE, with the same WAL range.
    let pitr_env = rgw.pitr_env(&bucket, server);
    let pitr_json = |args: &[&str]| {
        let r = run(pitr().envs(pitr_env.iter().cloned()).args(args));
        assert_eq!(r.code, 0, "pitr {args:?}: {r:?}");
        json_of(&r.stdout)
    };
    let listed = pitr_json(&["backup", "list", "--format", "json"]);
    let mine = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["backup_id"] == id.as_str())
        .unwrap_or_else(|| panic!("pitr does not list {id}: {listed}"));
    assert_eq!(mine["status"], "DONE");
    assert_eq!(mine["usable"], true);
    assert_eq!(mine["backup_name"], "pg-bk-first");
    assert_eq!(mine["begin_wal"], begin_wal.as_str());
    assert_eq!(mine["end_wal"], end_wal.as_str());
    assert_eq!(unix(&mine["end_time"]), stopped);
    let barman = run(rgw.barman("barman-cloud-backup-list").args([
        "--endpoint-url",
        &rgw.endpoint,
        "--format",
        "json",
        &format!("s3://{bucket}/pg"),
        server,
    ]));
    assert_eq!(barman.code, 0, "{barman:?}");
    let bl = json_of(&barman.stdout);
    let theirs = bl["backups_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["backup_id"] == id.as_str())
        .unwrap_or_else(|| panic!("barman does not list {id}: {bl}"));
    assert_eq!(theirs["status"], "DONE", "{theirs}");
    assert_eq!(theirs["begin_wal"], begin_wal.as_str(), "{theirs}");
    assert_eq!(theirs["end_wal"], end_wal.as_str(), "{theirs}");

    // The Backup's parameters override: another name.
    pg.sql("insert into t select generate_series(1001, 2000)");
    backup_resource(&backup_json, "pg-bk-second", server);
    let r = manager(
        &env,
        &[
            "backup",
            &backup_json.display().to_string(),
            "name=weekly-full",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
    let b2 = json_of(&r.stdout);
    assert_eq!(b2["backup_name"], "weekly-full");
    assert!(b2["begin_lsn"].as_str().unwrap() != begin_lsn, "{b2}");
    let stopped2 = b2["stopped_at"].as_i64().unwrap();

    // One Archive call of the test's own that fails.
    let bad = manager(&env, &["wal-archive", "pg_wal/000000010000000000000099"]);
    assert_eq!(bad.code, 1, "{bad:?}");

    // Metrics, once the archive is quiet and the status was read since.
    wait_archiver_idle(&pg);
    let stats = pg.sql("select archived_count, failed_count from pg_stat_archiver");
    let (archived, failed) = stats.split_once('|').unwrap();
    let (archived, failed): (f64, f64) = (archived.parse().unwrap(), failed.parse().unwrap());
    let quiet_since = now();
    let st = pitr_json(&["status", "--format", "json"]);
    let start = Instant::now();
    let m = loop {
        let r = manager(&env, &["metrics"]);
        assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
        let m = json_of(&r.stdout);
        let collected_at = now();
        if let Some(age) = m["collected"]["pitr_status_age_seconds"].as_f64() {
            if collected_at - age > quiet_since + 0.2 {
                break m;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no status read after {quiet_since}: {m}\n{}",
            sidecar.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let defined = m["defined"].as_object().unwrap();
    let collected = m["collected"].as_object().unwrap();
    // The families of `pitr metrics`, every one defined, each collected
    // once (labels server and timeline).
    assert_eq!(defined.len(), pitr::metrics::DEFS.len(), "{m}");
    for name in [
        "pitr_archive_failures_total",
        "pitr_archived_segments_total",
        "pitr_archived_bytes_total",
        "pitr_archive_ready_files",
        "pitr_backups",
        "pitr_first_recoverability_point_timestamp_seconds",
        "pitr_last_recoverability_point_timestamp_seconds",
        "pitr_last_archive_success_timestamp_seconds",
        "pitr_last_archived_wal_timestamp_seconds",
        "pitr_last_available_backup_timestamp_seconds",
        "pitr_last_available_backup_size_bytes",
        "pitr_last_failed_backup_timestamp_seconds",
        "pitr_status_age_seconds",
        "pitr_status_refresh_failures_total",
        "pitr_store_up",
        "pitr_usable_backups",
    ] {
        assert!(defined.contains_key(name), "{name} not defined: {m}");
        assert!(collected.contains_key(name), "{name} not collected: {m}");
    }
    assert_eq!(defined["pitr_archive_failures_total"], "TYPE_COUNTER");
    assert_eq!(defined["pitr_usable_backups"], "TYPE_GAUGE");
    let v = |n: &str| collected[n].as_f64().unwrap();
    assert_eq!(
        v("pitr_usable_backups"),
        st["usable_backups"].as_f64().unwrap()
    );
    assert_eq!(v("pitr_usable_backups"), 2.0);
    assert_eq!(v("pitr_backups"), st["backups"].as_f64().unwrap());
    assert_eq!(
        v("pitr_last_available_backup_timestamp_seconds"),
        unix(&st["last_backup"]["end_time"]) as f64
    );
    assert_eq!(
        v("pitr_last_available_backup_timestamp_seconds"),
        stopped2 as f64
    );
    assert_eq!(
        v("pitr_first_recoverability_point_timestamp_seconds"),
        unix(&st["first_recoverability_point"]) as f64
    );
    assert_eq!(
        v("pitr_first_recoverability_point_timestamp_seconds"),
        stopped as f64
    );
    assert!(st["last_failed_backup"].is_null(), "{st}");
    assert_eq!(v("pitr_last_failed_backup_timestamp_seconds"), 0.0);
    assert_eq!(
        v("pitr_last_archived_wal_timestamp_seconds"),
        unix(&st["last_archived"]["archived_at"]) as f64
    );
    // Every archive_command run is one Archive call; plus the test's failure.
    assert!(archived >= 3.0, "{stats}");
    assert_eq!(v("pitr_archived_segments_total"), archived, "{stats}");
    assert_eq!(v("pitr_archive_failures_total"), failed + 1.0, "{stats}");
    let last_ok = v("pitr_last_archive_success_timestamp_seconds");
    assert!(last_ok >= before as f64 && last_ok <= now(), "{last_ok}");
    assert_eq!(v("pitr_status_refresh_failures_total"), 0.0);
    assert_eq!(v("pitr_store_up"), 1.0);
    assert_eq!(v("pitr_archive_ready_files"), 0.0);
    assert_eq!(
        v("pitr_last_available_backup_size_bytes"),
        st["last_backup"]["size"].as_f64().unwrap()
    );

    // retentionPolicy, applied once the Backup succeeded (as
    // plugin-barman-cloud does): REDUNDANCY 1 leaves only the new backup,
    // and the WAL before its begin goes.
    pg.sql("insert into t select generate_series(2001, 3000)");
    backup_resource(&backup_json, "pg-bk-third", server);
    let r = manager(
        &env,
        &[
            "backup",
            &backup_json.display().to_string(),
            "retentionPolicy=REDUNDANCY 1",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
    let b3 = json_of(&r.stdout);
    let id3 = b3["backup_id"].as_str().unwrap();
    let begin3 = b3["begin_wal"].as_str().unwrap();
    let listed = pitr_json(&["backup", "list", "--format", "json"]);
    let left: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [id3], "{}", sidecar.log_text());
    let wal = rgw.keys(&bucket, &format!("pg/{server}/wals/"));
    assert!(!wal.is_empty());
    for k in &wal {
        let name = k.rsplit('/').next().unwrap();
        assert!(
            name.ends_with(".history") || name.get(..24).is_some_and(|seg| seg >= begin3),
            "{k} is before {begin3}"
        );
    }
    assert!(
        sidecar
            .log_text()
            .contains("retention REDUNDANCY 1: deleted 2 backups"),
        "{}",
        sidecar.log_text()
    );

    // A stopped server: the error names the socket it tried.
    pg.stop();
    let r = manager(&env, &["backup", &backup_json.display().to_string()]);
    assert_eq!(r.code, 1, "{r:?}");
    let socket = format!("{}/.s.PGSQL.{}", pg.sock.display(), pg.port);
    assert!(r.stderr.contains(&socket), "names {socket}: {}", r.stderr);
    // backupConnection overrides the environment; its password stays out
    // of messages and logs.
    let r = manager(
        &env,
        &[
            "backup",
            &backup_json.display().to_string(),
            "backupConnection=host=/nonexistent-pg port=5999 password=pw-never-shown",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("/nonexistent-pg/.s.PGSQL.5999"),
        "{}",
        r.stderr
    );
    // (The test instance manager echoes its own arguments first.)
    let answer = r.stderr.split_once("Backup.Backup:").unwrap().1;
    assert!(!answer.contains("pw-never-shown"), "{}", r.stderr);
    // A bad parameter: InvalidArgument naming it.
    let r = manager(
        &env,
        &[
            "backup",
            &backup_json.display().to_string(),
            "backupCheckpoint=slow",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("InvalidArgument") && r.stderr.contains("backupCheckpoint"),
        "{}",
        r.stderr
    );
    let log = sidecar.log_text();
    assert!(!log.contains("pw-never-shown"), "{log}");
    assert!(!log.contains(&rgw.secret_key), "{log}");
}
