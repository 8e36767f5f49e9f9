//! Bootstrap recovery the way CloudNativePG's recovery Job drives it: the
//! restore sidecar's RestoreJobHooks.Restore rebuilds PGDATA from a pitr
//! backup of the recovery source, and PostgreSQL then replays the archive
//! through the same sidecar's WAL.Restore (real PostgreSQL 15, Ceph RGW).

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use common::pg::{start_restored, Pg};
use common::s3::Rgw;
use common::{chown_postgres, running_as_root, TestDir};
use pitr::backup::take::{take, BackupRequest, Progress};
use pitr::codec::Compression;
use pitr::config::{RepoConfig, S3Credentials, S3Settings, Secret};
use pitr::pgwire::base_backup::Checkpoint;
use pitr::pgwire::conninfo::ConnectParams;
use pitr::repo::Repo;
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

fn sidecar_env(rgw: &Rgw, pgdata: &std::path::Path, pod: &str) -> Vec<(String, String)> {
    vec![
        ("S3_ACCESS_KEY_ID".into(), rgw.access_key.clone()),
        ("S3_SECRET_ACCESS_KEY".into(), rgw.secret_key.clone()),
        ("POD_NAME".into(), pod.into()),
        ("PGDATA".into(), pgdata.display().to_string()),
    ]
}

/// A Cluster bootstrapped from `origin`, archiving under `own_server`.
fn recovering_cluster(rgw: &Rgw, bucket: &str, own_server: &str) -> Value {
    let mut own = params(rgw, bucket);
    own["serverName"] = json!(own_server);
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "pg-new", "namespace": "default"},
        "spec": {
            "instances": 1,
            "bootstrap": {"recovery": {"source": "origin"}},
            "externalClusters": [{"name": "origin", "plugin": {
                "name": PLUGIN_NAME, "parameters": params(rgw, bucket)}}],
            "plugins": [{"name": PLUGIN_NAME, "isWALArchiver": true, "parameters": own}]
        },
        "status": {}
    })
}

/// The origin cluster: a PostgreSQL archiving through its own sidecar into
/// `bucket` under server name `origin`.
fn origin(rgw: &Rgw, bucket: &str, dir: &TestDir) -> (Pg, Sidecar) {
    let origin_json = dir.join("origin.json");
    write_json(&origin_json, &cluster_json("origin", params(rgw, bucket)));
    let data = dir.join("data");
    let sidecar = Sidecar::start(dir, "instance", &sidecar_env(rgw, &data, "origin-1"));
    let mut pg = Pg::init(data.clone());
    pg.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-archive %p'\n",
        manager_bin().display()
    ));
    pg.start(&sidecar.manager_env(&origin_json, &data));
    (pg, sidecar)
}

struct Quiet;

impl Progress for Quiet {
    fn total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn phase(&self, _: &str) {}
}

/// A pitr backup through the library, as `pitr backup -d CONNINFO` takes
/// it (the plugin's tests do not depend on a built `pitr` binary).
fn backup(rgw: &Rgw, bucket: &str, server: &str, conninfo: &str) {
    let cfg = RepoConfig {
        location: format!("s3://{bucket}/pg").parse().unwrap(),
        server_name: server.into(),
        s3: S3Settings {
            endpoint_url: Some(rgw.endpoint.clone()),
            region: rgw.region.clone(),
            ca_bundle: Some(rgw.ca.clone().into()),
            credentials: Some(S3Credentials {
                access_key_id: Secret::new(&rgw.access_key),
                secret_access_key: Secret::new(&rgw.secret_key),
                session_token: None,
            }),
            ..S3Settings::default()
        },
        compression: Compression::Gzip { level: 1 },
        encryption_key_file: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repo::create(&cfg).unwrap();
        let params = ConnectParams::resolve_with(Some(conninfo), |_| None).unwrap();
        let req = BackupRequest {
            name: None,
            checkpoint: Checkpoint::Fast,
            wal_timeout: Duration::from_secs(60),
            max_rate: None,
        };
        take(&repo, &params, &req, &Quiet).await.unwrap();
    });
}

#[test]
fn a_recovery_job_restores_a_backup_and_replays_through_the_sidecar() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-job");
    let dir = TestDir::new("cnpg-job");

    // The origin cluster archives through its sidecar; pitr backs it up.
    let (mut pg, _origin_sidecar) = origin(&rgw, &bucket, &dir);
    pg.sql("create table t (id int primary key, note text)");
    pg.sql("insert into t select g, 'before' from generate_series(1, 100) g");
    backup(&rgw, &bucket, "origin", &pg.conninfo());
    pg.sql("insert into t select g, 'after' from generate_series(101, 250) g");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));
    let expected =
        pg.sql("select count(*), sum(id), count(*) filter (where note = 'after') from t");
    pg.stop();

    // The recovery Job's sidecar, with the Job container's PGDATA (not there yet).
    let job_dir = TestDir::new("cnpg-job-new");
    let pgdata = job_dir.join("pgdata");
    let restore_sidecar = Sidecar::start(
        &job_dir,
        "restore",
        &sidecar_env(&rgw, &pgdata, "pg-new-1-full-recovery"),
    );

    // Its own archive already holds WAL (another cluster's): refused, PGDATA untouched.
    let busy = job_dir.join("busy.json");
    write_json(&busy, &recovering_cluster(&rgw, &bucket, "origin"));
    let r = manager(
        &restore_sidecar.manager_env(&busy, &pgdata),
        &["restore-job"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Expected empty archive"), "{}", r.stderr);
    assert!(!pgdata.exists(), "nothing restored after a refusal");

    let new_json = job_dir.join("pg-new.json");
    write_json(&new_json, &recovering_cluster(&rgw, &bucket, "pg-new"));
    let env = restore_sidecar.manager_env(&new_json, &pgdata);
    let r = manager(&env, &["restore-job"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", restore_sidecar.log_text());
    assert_eq!(
        r.stdout,
        "recovery_target_action = 'promote'\nrestore_command = '/controller/manager wal-restore %f %p'\n"
    );
    assert!(pgdata.join("PG_VERSION").exists());
    assert!(pgdata.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap_or_default();
    assert!(
        !auto.contains("restore_command"),
        "CNPG writes the settings: {auto}"
    );

    // A second Restore never overwrites a data directory.
    let again = manager(&env, &["restore-job"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(pgdata.join("PG_VERSION").exists());

    // CloudNativePG starts PostgreSQL with the returned settings; its
    // wal-restore (here the test instance manager) goes to the same sidecar.
    let conf = r
        .stdout
        .replace("/controller/manager", &manager_bin().display().to_string())
        + "archive_mode = off\n";
    if running_as_root() {
        chown_postgres(&pgdata);
    }
    let restored = start_restored(&pgdata, &env, &conf);
    assert_eq!(
        restored.sql("select count(*), sum(id), count(*) filter (where note = 'after') from t"),
        expected
    );
    assert!(
        restored.log().contains("restored log file"),
        "WAL came through the sidecar:\n{}",
        restored.log()
    );
}

/// CloudNativePG's recovery-target settings, appended after the plugin's
/// restore_config (CNPG writes them from `recoveryTarget`).
fn with_target(restore_config: &str, target_time: &str) -> String {
    restore_config.replace("/controller/manager", &manager_bin().display().to_string())
        + &format!("recovery_target_time = '{target_time}'\narchive_mode = off\n")
}

#[test]
fn a_recovery_to_a_target_time_lands_between_two_commits_and_an_unreachable_one_touches_nothing() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-pitr");
    let dir = TestDir::new("cnpg-pitr");
    let (mut pg, _origin_sidecar) = origin(&rgw, &bucket, &dir);
    pg.sql("create table t (id int primary key)");
    backup(&rgw, &bucket, "origin", &pg.conninfo());
    // Two commits a second apart; the target lies between them.
    pg.sql("insert into t values (1)");
    let t1 = pg.sql("select now()::text");
    std::thread::sleep(Duration::from_millis(1200));
    pg.sql("insert into t values (2)");
    let t2 = pg.sql("select now()::text");
    let target = pg.sql(&format!(
        "select ('{t1}'::timestamptz + ('{t2}'::timestamptz - '{t1}'::timestamptz) / 2)::text"
    ));
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));
    pg.stop();

    let cluster = |server: &str, time: &str| {
        let mut c = recovering_cluster(&rgw, &bucket, server);
        c["spec"]["bootstrap"]["recovery"]["recoveryTarget"] = json!({"targetTime": time});
        c
    };
    let job_dir = TestDir::new("cnpg-pitr-new");
    let pgdata = job_dir.join("pgdata");
    let sidecar = Sidecar::start(
        &job_dir,
        "restore",
        &sidecar_env(&rgw, &pgdata, "pg-new-1-full-recovery"),
    );

    // A target after the end of the archive: refused by the plan, PGDATA
    // never created.
    let late = job_dir.join("late.json");
    write_json(&late, &cluster("pg-late", "2100-01-01 00:00:00+00"));
    let r = manager(&sidecar.manager_env(&late, &pgdata), &["restore-job"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("after the latest recoverable point"),
        "the plan says why: {}",
        r.stderr
    );
    assert!(
        !pgdata.exists(),
        "PGDATA untouched by an unreachable target"
    );

    // The target between the commits: exactly the first row.
    let json_path = job_dir.join("pg-new.json");
    write_json(&json_path, &cluster("pg-new", &target));
    let env = sidecar.manager_env(&json_path, &pgdata);
    let r = manager(&env, &["restore-job"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
    if running_as_root() {
        chown_postgres(&pgdata);
    }
    let restored = start_restored(&pgdata, &env, &with_target(&r.stdout, &target));
    assert_eq!(
        restored.sql("select string_agg(id::text, ',' order by id) from t"),
        "1"
    );
}
