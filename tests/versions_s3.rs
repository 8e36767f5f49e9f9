//! The version matrix: archive, base backup and point-in-time restore on
//! PostgreSQL 16, 17 and 18 (the other tests use Debian's 15), against Ceph
//! RGW over HTTPS. Each version's server programs (initdb, pg_ctl,
//! postgres) come from tests/support/pg-versions.sh, which tests/run.sh runs;
//! the restored server runs on the same version that was backed up.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::pg::{start_restored_with, Pg};
use common::s3::Rgw;
use common::{pitr, pitr_bin, run, Run, TestDir};

/// DIR/<major>/bin, as tests/support/pg-versions.sh installs it.
fn server_bin(major: u32) -> PathBuf {
    let dir = std::env::var_os("PITR_TEST_PG_VERSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pitr-test/pg"));
    let bin = dir.join(major.to_string()).join("bin");
    let out = Command::new(bin.join("postgres")).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            assert!(
                v.starts_with(&format!("postgres (PostgreSQL) {major}.")),
                "{} is {v}",
                bin.display()
            );
        }
        _ => panic!(
            "no PostgreSQL {major} in {}: run `bash tests/support/pg-versions.sh {}` \
             (tests/run.sh does) or set PITR_TEST_PG_VERSIONS_DIR",
            bin.display(),
            dir.display()
        ),
    }
    bin
}

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

/// Halfway between two commit timestamps ("YYYY-MM-DD HH:MM:SS.US", UTC).
fn mid_time(a: &str, b: &str) -> String {
    let parse = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let (a, b) = (parse(a), parse(b));
    (a + (b - a) / 2)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// On PostgreSQL `major`: a base backup, rows 1, 2, 3 committed a second
/// apart and archived, then a restore to a time between 2 and 3, started on
/// the same version, holds exactly rows 1 and 2.
fn backup_archive_restore(major: u32) {
    let bin = server_bin(major);
    let tag = format!("pg{major}");
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket(&tag);
    let dir = TestDir::new(&tag);
    let env = rgw.pitr_env(&bucket, "main");

    let mut primary = Pg::init_with(&bin, dir.join("primary"));
    primary.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push %p'\ntrack_commit_timestamp = on\n",
        pitr_bin().display()
    ));
    primary.start(&env);
    let version = primary.sql("show server_version_num");
    assert!(
        version.starts_with(&major.to_string()),
        "server_version_num {version}"
    );
    primary.sql("create table r (id int primary key, note text)");

    let b = pitr_run(&env, &["backup", "-d", &primary.conninfo()]);
    assert_eq!(b.code, 0, "pitr backup on PostgreSQL {major}: {b:?}");
    let backup_id = b.stdout.trim().to_string();
    let listed: serde_json::Value =
        serde_json::from_str(&pitr_run(&env, &["backup", "list", "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(listed["backups"][0]["backup_id"], backup_id.as_str());
    assert_eq!(listed["backups"][0]["status"], "DONE", "{listed}");
    let v = pitr_run(&env, &["backup", "verify", "latest"]);
    assert_eq!(v.code, 0, "pitr backup verify on PostgreSQL {major}: {v:?}");

    let mut commit_ts = Vec::new();
    let mut xids = Vec::new();
    for id in 1..=3 {
        std::thread::sleep(Duration::from_millis(1100));
        xids.push(primary.sql(&format!(
            "insert into r values ({id}, 'row {id}') returning txid_current()"
        )));
        commit_ts.push(primary.sql(&format!(
            "select to_char(pg_xact_commit_timestamp(xmin) at time zone 'UTC', \
             'YYYY-MM-DD HH24:MI:SS.US') from r where id = {id}"
        )));
        primary.switch_wal();
    }
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(120));

    // Not in the archive: exactly 1, which PostgreSQL reads as "no more WAL".
    let missing = dir.join("missing-seg");
    let r = pitr_run(
        &env,
        &[
            "wal-fetch",
            "0000000100000000000000FE",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "wal-fetch of a missing segment: {r:?}");
    assert!(!missing.exists());

    let between_2_and_3 = mid_time(&commit_ts[1], &commit_ts[2]);
    // The plan, read from this version's WAL records: row 3's commit is
    // the one that ends recovery.
    let r = pitr_run(
        &env,
        &[
            "restore",
            "--pgdata",
            "/nonexistent/x",
            "--target-time",
            &between_2_and_3,
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert_eq!(
        r.code, 0,
        "pitr restore --dry-run on PostgreSQL {major}: {r:?}"
    );
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["backup"]["info"]["backup_id"], backup_id.as_str());
    let reached = plan["reached_by"].as_str().unwrap_or_default();
    assert!(
        reached.contains(&format!("transaction {}", xids[2])),
        "PostgreSQL {major}: {plan}"
    );

    let data = dir.join("restored");
    let r = pitr_run(
        &env,
        &[
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--target-time",
            &between_2_and_3,
        ],
    );
    assert_eq!(r.code, 0, "pitr restore on PostgreSQL {major}: {r:?}");
    let restored = start_restored_with(&bin, &data, &env, "archive_mode = off\n");
    assert_eq!(restored.sql("show server_version_num"), version);
    assert_eq!(
        restored.sql("select string_agg(id::text, ',' order by id) from r"),
        "1,2",
        "PostgreSQL {major}: time between commits 2 and 3"
    );
}

#[test]
fn postgres_16() {
    backup_archive_restore(16);
}

#[test]
fn postgres_17() {
    backup_archive_restore(17);
}

#[test]
fn postgres_18() {
    backup_archive_restore(18);
}
